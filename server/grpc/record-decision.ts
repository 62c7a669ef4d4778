/**
 * Observability for one decision: a metric sample always, a log line for every denial
 * and dry-run would-deny (allows at debug). Logs carry a reduced request (method, path
 * without query, client id, digest prefix), never a credential or a key.
 */
import type { Metrics } from "../admin/metrics.js";
import type { CheckAttributes } from "../auth/check-attributes.js";
import type { Decision, Lookup } from "../auth/decide.js";
import type { Policy } from "../auth/policy.js";
import { digestPrefix } from "../crypto/token-hash.js";
import { denialTypeOf } from "../errors.js";
import type { Logger } from "../logger.js";

export interface DecisionRecord {
  readonly attributes: CheckAttributes;
  readonly policy: Policy;
  readonly lookup: Lookup;
  readonly decision: Decision;
  /** process.hrtime.bigint() when the Check arrived. */
  readonly started: bigint;
}

function digestOf(lookup: Lookup): string | undefined {
  return "digest" in lookup ? digestPrefix(lookup.digest) : undefined;
}

/** Route misconfigurations already reported; each distinct one is warned about once. */
const reportedRouteProblems = new Set<string>();

function reportRouteProblem(logger: Logger, problem: string | null): void {
  if (problem === null || reportedRouteProblems.has(problem)) return;
  reportedRouteProblems.add(problem);
  logger.warn(
    { route_config_problem: problem },
    "an Envoy route sends a context_extensions value keygate does not know",
  );
}

/** Counts and, where an operator needs to see it, logs one decision. */
export function recordDecision(
  deps: { readonly logger: Logger; readonly metrics: Metrics },
  record: DecisionRecord,
): void {
  const { decision, policy, attributes } = record;
  const seconds = Number(process.hrtime.bigint() - record.started) / 1e9;
  const reason = decision.outcome === "deny" ? decision.reason : decision.wouldDeny;
  const type = reason === null ? "none" : denialTypeOf(reason);
  const result = decision.outcome === "deny" ? "deny" : reason === null ? "allow" : "would_deny";
  const authMode = decision.outcome === "allow" ? decision.authMode : "denied";
  deps.metrics.recordCheck({ result, type, mode: policy.mode, auth_mode: authMode }, seconds);
  reportRouteProblem(deps.logger, policy.misconfigured);

  const level = result === "allow" ? "debug" : result === "deny" ? "info" : "warn";
  if (!deps.logger.isLevelEnabled(level)) return;
  deps.logger[level](
    {
      request_id: attributes.requestId,
      method: attributes.method,
      path: attributes.path,
      mode: policy.mode,
      result,
      type,
      reason,
      client_id: decision.clientId,
      auth_mode: authMode,
      digest_prefix: digestOf(record.lookup),
      latency_ms: Math.round(seconds * 1e6) / 1e3,
    },
    result === "would_deny" ? "dry-run: would deny" : `check ${result}`,
  );
}
