/**
 * The Authorization/Check handler: decode → read the body → policy → extract → look up →
 * decide → respond → encode, each phase a function of its own module. A large body is
 * read across turns of the event loop; everything after it is synchronous, so no Check
 * spans a keystore generation switch. Anything unexpected inside keygate denies (503);
 * bytes that are not a CheckRequest throw WireError, which the server answers with
 * INVALID_ARGUMENT (Envoy fails closed).
 */
import type { Metrics } from "../admin/metrics.js";
import { buildResponse, type CheckResponse, type ResponseOptions } from "../auth/build-response.js";
import { type CheckAttributes, decodeCheckRequest } from "../auth/check-attributes.js";
import { decide } from "../auth/decide.js";
import { type BodyView, extractCredential } from "../auth/extract-credential.js";
import { resolvePolicy } from "../auth/policy.js";
import type { Mode } from "../config.js";
import type { KeystoreManager } from "../keystore/reload/keystore-manager.js";
import type { Logger } from "../logger.js";
import type { BudgetCounters } from "../usage/budget-counters.js";
import type { LastUseRecorder } from "../usage/last-use-recorder.js";
import { encodeCheckResponse } from "./check-response-wire.js";
import { EncodedAllows } from "./encoded-allows.js";
import type { UnaryHandler } from "./grpc-server.js";
import { lookupCredential } from "./lookup-credential.js";
import { readBodyInSlices } from "./read-body-in-slices.js";
import { recordDecision } from "./record-decision.js";
import type { ThrottleGuard } from "./throttle-guard.js";

export interface CheckServiceDeps {
  readonly mode: Mode;
  readonly responseOptions: ResponseOptions;
  readonly keystore: KeystoreManager;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly usage?: LastUseRecorder;
  /** What each budgeted client has spent (read from memory); absent: budgets are not enforced. */
  readonly budgets?: Pick<BudgetCounters, "spent">;
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

/** Builds the Authorization/Check handler. */
export function createCheckService(deps: CheckServiceDeps): UnaryHandler {
  const now = deps.now ?? Date.now;
  const spent = deps.budgets?.spent.bind(deps.budgets);
  const allows = new EncodedAllows();

  /** Every phase after reading the body, to the framed response; never throws. */
  function respond(attributes: CheckAttributes, body: BodyView, started: bigint): Buffer {
    const generation = deps.keystore.generationId;
    const context = { requestId: attributes.requestId, generation };
    try {
      const policy = resolvePolicy(deps.mode, attributes.contextExtensions);
      const extraction = extractCredential(attributes, policy.source, body);
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
        spent,
      });
      const encode = () =>
        encodeCheckResponse(buildResponse(decision, deps.responseOptions, context));
      const response =
        decision.outcome === "allow" ? allows.get(decision, generation, encode) : encode();
      if (decision.outcome === "allow" && decision.clientId !== null)
        deps.usage?.record(decision.clientId, at);
      deps.throttle?.observe(attributes, decision, at);
      recordDecision(deps, { attributes, policy, lookup, decision, started });
      return response;
    } catch (error) {
      return encodeCheckResponse(failed(attributes, error));
    }
  }

  function failed(attributes: CheckAttributes, error: unknown): CheckResponse {
    deps.logger.error(
      { err: error, request_id: attributes.requestId },
      "check failed inside keygate; denying",
    );
    const context = { requestId: attributes.requestId, generation: deps.keystore.generationId };
    return buildResponse(INTERNAL_FAILURE, deps.responseOptions, context);
  }

  return (message) => {
    const started = process.hrtime.bigint();
    const attributes = decodeCheckRequest(message);
    let body: BodyView | Promise<BodyView>;
    try {
      body = readBodyInSlices(attributes);
    } catch (error) {
      return encodeCheckResponse(failed(attributes, error));
    }
    if (body instanceof Promise)
      return body.then(
        (view) => respond(attributes, view, started),
        (error: unknown) => encodeCheckResponse(failed(attributes, error)),
      );
    return respond(attributes, body, started);
  };
}
