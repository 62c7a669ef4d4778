/**
 * The decision: pure, total, fail-closed. Plain data in (policy, extracted credential,
 * keystore lookup, request attributes, `now`), a discriminated union out. Every branch
 * that is not the success path denies; dry-run turns a denial into an unchanged pass
 * that still carries the reason.
 */
import { isProviderKey } from "../crypto/secret-shapes.js";
import type { DenialReason } from "../errors.js";
import type { Budget, TokenMatch } from "../keystore/format/model.js";
import type { UpstreamKey } from "../keystore/store/upstream-keys.js";
import { secondsUntil } from "../usage/budget-window.js";
import { windowResetAt } from "../usage/usage-day.js";
import type { BodyView, CredentialLocation, Extraction } from "./extract-credential.js";
import { modelAllowed } from "./model-glob.js";
import type { Policy } from "./policy.js";

/** The keystore's answer for the extracted token. */
export type Lookup =
  | { readonly kind: "skipped" }
  /** Too many failed credentials from this source: not looked up at all. */
  | { readonly kind: "throttled" }
  | { readonly kind: "checksum"; readonly digest: string }
  | { readonly kind: "unknown"; readonly digest: string }
  | {
      readonly kind: "found";
      readonly digest: string;
      readonly match: TokenMatch;
      readonly upstreamKey: UpstreamKey;
    };

export interface DecisionInput {
  readonly policy: Policy;
  /** Current keystore generation, or null when none was ever loaded. */
  readonly generation: number | null;
  readonly path: string;
  readonly bodyTruncated: boolean;
  readonly extraction: Extraction;
  readonly lookup: Lookup;
  /** Epoch milliseconds. */
  readonly now: number;
  /**
   * Tokens the client has spent in its budget's current window (budget-counters.ts: a
   * read from memory). Absent: nothing is counted, so no budget is ever spent.
   */
  readonly spent?: (clientId: string, budget: Budget, now: number) => number;
}

export type AuthMode = "known" | "internal" | "byo" | "anonymous";

export type Decision =
  | {
      readonly outcome: "allow";
      readonly authMode: AuthMode;
      readonly clientId: string | null;
      /** The key to put in the upstream header; null leaves it (byo/anonymous) or strips the credential (known/internal). */
      readonly upstreamKey: string | null;
      /**
       * Credential headers passed on unchanged: a provider key the caller brought, as
       * `x-api-key` or `Authorization: Bearer`. Every other credential header is removed.
       */
      readonly forward: readonly CredentialLocation[];
      /** In dry-run, the denial enforce would have sent. */
      readonly wouldDeny: DenialReason | null;
    }
  | {
      readonly outcome: "deny";
      readonly reason: DenialReason;
      readonly clientId: string | null;
      /** Seconds until the refusal ends (a spent budget's window reset); sent as `retry-after`. */
      readonly retryAfter?: number;
    };

/** A pass without an authenticated client: no key set, nothing forwarded until guardPass says so. */
const NO_CLIENT = {
  clientId: null,
  upstreamKey: null,
  forward: [],
  wouldDeny: null,
} as const;

function deny(reason: DenialReason, clientId: string | null = null): Decision {
  return { outcome: "deny", reason, clientId };
}

function pass(authMode: "byo" | "anonymous"): Decision {
  return { outcome: "allow", authMode, ...NO_CLIENT };
}

function routeAllowed(path: string, routes: readonly string[] | null): boolean {
  if (routes === null) return true;
  // Dot segments and encoded separators could walk out of a prefix; Envoy should normalise, but never trust it.
  if (/(^|\/)\.\.?(\/|$)|%2e|%2f|%5c|\\/i.test(path)) return false;
  return routes.some(
    (prefix) => path === prefix || path.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`),
  );
}

/** Where a provider key may be passed on: headers that hold nothing but the key. */
const FORWARDABLE: ReadonlySet<CredentialLocation> = new Set(["x-api-key", "bearer"]);

type ModelCheck = "allowed" | "forbidden" | "unreadable" | "truncated";

/** A client with a models list may only send bodies whose string `model` matches it; body-less requests pass. */
function checkModel(body: BodyView, models: readonly string[] | null): ModelCheck {
  if (models === null || body.kind === "absent") return "allowed";
  if (body.kind === "truncated") return "truncated";
  if (body.kind === "invalid-json") return "unreadable";
  if (body.kind !== "object" || body.model.kind !== "string") return "forbidden";
  return modelAllowed(models, body.model.value) ? "allowed" : "forbidden";
}

/**
 * The refusal for a client whose budget is spent, or null. Post-paid: `spent` counts the
 * responses already seen, so the request that crosses the budget was let through.
 */
function budgetExhausted(input: DecisionInput, match: TokenMatch): Decision | null {
  const { budget } = match;
  if (budget === undefined || input.spent === undefined) return null;
  if (input.spent(match.clientId, budget, input.now) < budget.tokens) return null;
  const retryAfter = secondsUntil(windowResetAt(budget.per, input.now), input.now);
  return { outcome: "deny", reason: "budget_exhausted", clientId: match.clientId, retryAfter };
}

/** The enforce decision for a token found in the keystore. */
function decideKnown(input: DecisionInput, lookup: Extract<Lookup, { kind: "found" }>): Decision {
  const { match, upstreamKey } = lookup;
  const id = match.clientId;
  if (match.disabled) return deny("client_disabled", id);
  if (match.expiresAt !== null && match.expiresAt <= input.now)
    return deny("credential_expired", id);
  if (!routeAllowed(input.path, match.routes)) return deny("route_not_allowed", id);
  switch (checkModel(input.extraction.body, match.models)) {
    case "forbidden":
      return deny("model_not_allowed", id);
    case "unreadable":
      return deny("invalid_json_body", id);
    case "truncated":
      return deny("body_truncated", id);
    case "allowed":
      break;
  }
  const exhausted = budgetExhausted(input, match);
  if (exhausted !== null) return exhausted;
  // Literals rather than spreads of a shared base: this runs on every allowed Check.
  if (match.kind === "internal")
    return {
      outcome: "allow",
      clientId: id,
      forward: [],
      wouldDeny: null,
      authMode: "internal",
      upstreamKey: null,
    };
  if (upstreamKey.kind === "unavailable") return deny("key_unavailable", id);
  return {
    outcome: "allow",
    clientId: id,
    forward: [],
    wouldDeny: null,
    authMode: "known",
    upstreamKey: upstreamKey.kind === "value" ? upstreamKey.value : null,
  };
}

/** The decision for enforce and recognize; dry-run and off are layered on top in decide(). */
function decideStrict(input: DecisionInput, recognize: boolean): Decision {
  const { extraction, lookup } = input;
  if (input.generation === null) return deny("keystore_unavailable");
  if (extraction.kind === "invalid") return deny(extraction.reason);
  if (extraction.kind === "none") {
    if (input.bodyTruncated) return deny("body_truncated");
    return recognize ? pass("anonymous") : deny("credential_missing");
  }
  switch (lookup.kind) {
    case "found":
      return decideKnown(input, lookup);
    case "unknown":
      // A client credential must never reach the provider; only provider-shaped keys may pass.
      return recognize && isProviderKey(extraction.token)
        ? pass("byo")
        : deny("credential_unknown");
    case "throttled":
      return deny("too_many_failures");
    case "checksum":
      return deny("credential_checksum");
    case "skipped":
      return deny("credential_unknown");
  }
}

/**
 * The last phase for a request that passes without an authenticated client (anonymous,
 * bring your own key, dry-run, off): Apollo then reads the caller's own credential, so
 * nothing but a provider key may be left where it reads one. Credential headers are
 * removed unless they hold just a provider key (build-response); a body, which ext_authz
 * cannot rewrite, is refused when it holds anything else or cannot be read.
 */
function guardPass(decision: Decision, extraction: Extraction): Decision {
  if (decision.outcome !== "allow" || decision.clientId !== null) return decision;
  const { body } = extraction;
  // A broken JSON object may be one the upstream parses after all: never pass it unread.
  if (
    extraction.tokenElsewhere ||
    body.kind === "invalid-json" ||
    ("mayHoldCredential" in body && body.mayHoldCredential)
  )
    return deny("credential_unreadable");
  const forward: CredentialLocation[] = [];
  for (const found of extraction.presented) {
    const provider = found.token !== null && isProviderKey(found.token);
    if (found.location === "body") {
      if (!provider) return deny(decision.wouldDeny ?? "credential_unknown");
    } else if (provider && FORWARDABLE.has(found.location)) forward.push(found.location);
  }
  return forward.length === 0 ? decision : { ...decision, forward };
}

/**
 * Dry-run: enforce's allow as it is; what enforce would deny passes, with the reason kept.
 * A spent budget passes as the client it is (its key swapped): the credential is good, and
 * an operator trying budgets out must not cut the client off its provider key.
 */
function dryRun(input: DecisionInput): Decision {
  const enforced = decideStrict(input, false);
  if (enforced.outcome === "allow") return enforced;
  if (enforced.reason === "budget_exhausted") {
    const unmetered = decideStrict({ ...input, spent: undefined }, false);
    if (unmetered.outcome === "allow") return { ...unmetered, wouldDeny: "budget_exhausted" };
  }
  return { outcome: "allow", authMode: "anonymous", ...NO_CLIENT, wouldDeny: enforced.reason };
}

/** Decides one request. Never throws; every path that is not an explicit allow denies. */
export function decide(input: DecisionInput): Decision {
  switch (input.policy.mode) {
    case "off":
      return guardPass(pass("anonymous"), input.extraction);
    case "recognize":
      return guardPass(decideStrict(input, true), input.extraction);
    case "enforce":
      return decideStrict(input, false);
    case "dry-run":
      return guardPass(dryRun(input), input.extraction);
  }
}
