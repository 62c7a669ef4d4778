/**
 * Brute-force throttling around the Check handler: before the lookup, refuse a credential
 * from a source that failed too often; after the decision, count a failed credential
 * against its source. State lives in FailureThrottle; this adds the source naming, the
 * metric and the one warning per throttled source and window.
 */
import type { Metrics } from "../admin/metrics.js";
import type { CheckAttributes } from "../auth/check-attributes.js";
import type { Decision } from "../auth/decide.js";
import type { ThrottleSettings } from "../config.js";
import type { DenialReason } from "../errors.js";
import type { Logger } from "../logger.js";
import { FailureThrottle, sourceOf } from "./failure-throttle.js";

/**
 * Reasons that mean "this credential is not a working one": what a guesser produces.
 * Not credential_missing (no guess was made), nor FORBIDDEN or BAD_REQUEST reasons (a
 * working credential, or a malformed request, says nothing about guessing).
 */
const FAILURE_REASONS: ReadonlySet<DenialReason> = new Set<DenialReason>([
  "credential_unknown",
  "credential_checksum",
  "credential_expired",
  "client_disabled",
  "credential_malformed",
]);

/** What counting needs of a Decision: its enforced or (dry-run) would-be denial reason. */
type DecisionReason =
  | Pick<Extract<Decision, { outcome: "deny" }>, "outcome" | "reason">
  | Pick<Extract<Decision, { outcome: "allow" }>, "outcome" | "wouldDeny">;

function reasonOf(decision: DecisionReason): DenialReason | null {
  return decision.outcome === "deny" ? decision.reason : decision.wouldDeny;
}

/** True for a decision that counts as a failed credential (dry-run would-denies included). */
export function countsAsFailure(decision: DecisionReason): boolean {
  const reason = reasonOf(decision);
  return reason !== null && FAILURE_REASONS.has(reason);
}

export interface ThrottleGuard {
  /** True when a credential from this request's source must not be looked up; counts it. */
  refuses(attributes: CheckAttributes, now: number): boolean;
  /** Counts the decision against the request's source when it is a failed credential. */
  observe(attributes: CheckAttributes, decision: Decision, now: number): void;
}

/** The guard for the configured settings, or null when throttling is off (failures 0). */
export function createThrottleGuard(
  settings: ThrottleSettings,
  deps: { readonly logger: Logger; readonly metrics: Metrics },
): ThrottleGuard | null {
  if (settings.failures === 0) return null;
  const throttle = new FailureThrottle({
    failures: settings.failures,
    windowMs: settings.windowMs,
  });
  deps.metrics.watchThrottleSources(() => throttle.trackedSources(Date.now()));
  return {
    refuses(attributes, now) {
      if (!throttle.isThrottled(sourceOf(attributes, settings.trustedHops), now)) return false;
      deps.metrics.throttledChecks.inc();
      return true;
    },
    observe(attributes, decision, now) {
      if (!countsAsFailure(decision)) return;
      const source = sourceOf(attributes, settings.trustedHops);
      if (!throttle.recordFailure(source, now)) return;
      // The source address only: never the credential, its digest or the client id.
      deps.logger.warn(
        {
          source,
          failures: settings.failures,
          window_s: settings.windowMs / 1000,
          request_id: attributes.requestId,
        },
        "too many failed credentials from one source; refusing its credentials until the window closes",
      );
    },
  };
}
