/**
 * The Authorization/Check handler: decode → policy → extract → look up → decide →
 * respond, each phase a function of its own module. Anything unexpected denies (503),
 * and the callback is called exactly once.
 */
import type { ServerUnaryCall, sendUnaryData, UntypedServiceImplementation } from "@grpc/grpc-js";
import type { Metrics } from "../admin/metrics.js";
import { buildResponse, type CheckResponse, type ResponseOptions } from "../auth/build-response.js";
import { decodeCheckRequest } from "../auth/check-attributes.js";
import { decide } from "../auth/decide.js";
import { extractCredential } from "../auth/extract-credential.js";
import { resolvePolicy } from "../auth/policy.js";
import type { Mode } from "../config.js";
import type { KeystoreManager } from "../keystore/keystore-manager.js";
import { lookupCredential } from "../keystore/lookup-credential.js";
import type { UsageRecorder } from "../keystore/usage-recorder.js";
import type { Logger } from "../logger.js";
import { recordDecision } from "./record-decision.js";
import type { ThrottleGuard } from "./throttle-guard.js";

export interface CheckServiceDeps {
  readonly mode: Mode;
  readonly responseOptions: ResponseOptions;
  readonly keystore: KeystoreManager;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly usage?: UsageRecorder;
  /** Brute-force throttling; absent when it is off. */
  readonly throttle?: ThrottleGuard | null;
  readonly now?: () => number;
}

/** Denial for a failure inside keygate itself: fail closed, never an allow. */
const INTERNAL_FAILURE = {
  outcome: "deny",
  reason: "keystore_unavailable",
  clientId: null,
} as const;

const THROTTLED = { kind: "throttled" } as const;

/** Builds the Authorization service implementation. */
export function createCheckService(deps: CheckServiceDeps): UntypedServiceImplementation {
  const now = deps.now ?? Date.now;
  function check(
    call: ServerUnaryCall<unknown, CheckResponse>,
    callback: sendUnaryData<CheckResponse>,
  ): void {
    const started = process.hrtime.bigint();
    const attributes = decodeCheckRequest(call.request);
    const generation = deps.keystore.generationId;
    const context = { requestId: attributes.requestId, generation };
    let response: CheckResponse;
    try {
      const policy = resolvePolicy(deps.mode, attributes.contextExtensions);
      const extraction = extractCredential(attributes, policy.source);
      const at = now();
      const lookup =
        extraction.kind === "token" && deps.throttle?.refuses(attributes, at)
          ? THROTTLED
          : lookupCredential(extraction, deps.keystore, deps.keystore.upstreamKeys);
      const decision = decide({
        policy,
        generation,
        path: attributes.path,
        bodyTruncated: attributes.bodyTruncated,
        extraction,
        lookup,
        now: at,
      });
      response = buildResponse(decision, deps.responseOptions, context);
      if (decision.outcome === "allow" && decision.clientId !== null)
        deps.usage?.record(decision.clientId, at);
      deps.throttle?.observe(attributes, decision, at);
      recordDecision(deps, { attributes, policy, lookup, decision, started });
    } catch (error) {
      deps.logger.error(
        { err: error, request_id: attributes.requestId },
        "check failed inside keygate; denying",
      );
      response = buildResponse(INTERNAL_FAILURE, deps.responseOptions, context);
    }
    callback(null, response);
  }
  return { Check: check };
}
