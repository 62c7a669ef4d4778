/**
 * The decision: pure, total, fail-closed. Plain data in (policy, extracted credential,
 * keystore lookup, request attributes, `now`), a discriminated union out. Every branch
 * that is not the success path denies; dry-run turns a denial into an unchanged pass
 * that still carries the reason.
 */
import type { DenialReason } from "../errors.js";
import type { TokenMatch } from "../keystore/types.js";
import type { BodyView, CredentialLocation, Extraction } from "./extract-credential.js";
import type { Policy } from "./policy.js";

/** A client's upstream key as resolved for this request. */
export type UpstreamKey =
  | { readonly kind: "value"; readonly value: string }
  | { readonly kind: "none" }
  | { readonly kind: "unavailable" };

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
}

export type AuthMode = "known" | "internal" | "byo" | "anonymous";

export type Decision =
  | {
      readonly outcome: "allow";
      readonly authMode: AuthMode;
      readonly clientId: string | null;
      /** The key to put in the upstream header; null leaves it (byo/anonymous) or strips the credential (known/internal). */
      readonly upstreamKey: string | null;
      /** Credential headers that carried the keygate token and must not reach the upstream. */
      readonly strip: readonly CredentialLocation[];
      /** In dry-run, the denial enforce would have sent. */
      readonly wouldDeny: DenialReason | null;
    }
  | { readonly outcome: "deny"; readonly reason: DenialReason; readonly clientId: string | null };

/** Unknown tokens shaped like a provider key may pass in recognize mode (bring your own key). */
const PROVIDER_KEY_PATTERN = /^sk-ant-/;

const PASS_UNCHANGED = { clientId: null, upstreamKey: null, strip: [], wouldDeny: null } as const;

function deny(reason: DenialReason, clientId: string | null = null): Decision {
  return { outcome: "deny", reason, clientId };
}

function pass(authMode: "byo" | "anonymous"): Decision {
  return { outcome: "allow", authMode, ...PASS_UNCHANGED };
}

function routeAllowed(path: string, routes: readonly string[] | null): boolean {
  if (routes === null) return true;
  // Dot segments and encoded separators could walk out of a prefix; Envoy should normalise, but never trust it.
  if (/(^|\/)\.\.?(\/|$)|%2e|%2f|%5c|\\/i.test(path)) return false;
  return routes.some(
    (prefix) => path === prefix || path.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`),
  );
}

const globCache = new Map<string, RegExp>();

function globToRegExp(glob: string): RegExp {
  let compiled = globCache.get(glob);
  if (compiled === undefined) {
    const source = glob
      .split("*")
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
      .join(".*");
    compiled = new RegExp(`^${source}$`);
    globCache.set(glob, compiled);
  }
  return compiled;
}

type ModelCheck = "allowed" | "forbidden" | "unreadable" | "truncated";

/** A client with a models list may only send bodies whose string `model` matches it; body-less requests pass. */
function checkModel(body: BodyView, models: readonly string[] | null): ModelCheck {
  if (models === null || body.kind === "absent") return "allowed";
  if (body.kind === "truncated") return "truncated";
  if (body.kind === "invalid-json") return "unreadable";
  if (body.kind !== "json" || typeof body.value !== "object" || body.value === null)
    return "forbidden";
  const model = (body.value as Record<string, unknown>).model;
  if (typeof model !== "string") return "forbidden";
  return models.some((glob) => globToRegExp(glob).test(model)) ? "allowed" : "forbidden";
}

/** The enforce decision for a token found in the keystore. */
function decideKnown(
  input: DecisionInput,
  lookup: Extract<Lookup, { kind: "found" }>,
  strip: readonly CredentialLocation[],
): Decision {
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
  // Literals rather than spreads of a shared base: this runs on every allowed Check.
  if (match.kind === "internal")
    return {
      outcome: "allow",
      clientId: id,
      strip,
      wouldDeny: null,
      authMode: "internal",
      upstreamKey: null,
    };
  if (upstreamKey.kind === "unavailable") return deny("key_unavailable", id);
  return {
    outcome: "allow",
    clientId: id,
    strip,
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
      return decideKnown(input, lookup, extraction.locations);
    case "unknown":
      // A client credential must never reach the provider; only provider-shaped keys may pass.
      return recognize && PROVIDER_KEY_PATTERN.test(extraction.token)
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

/** Decides one request. Never throws; every path that is not an explicit allow denies. */
export function decide(input: DecisionInput): Decision {
  switch (input.policy.mode) {
    case "off":
      return pass("anonymous");
    case "recognize":
      return decideStrict(input, true);
    case "enforce":
      return decideStrict(input, false);
    case "dry-run": {
      const enforced = decideStrict(input, false);
      if (enforced.outcome === "allow") return enforced;
      return {
        outcome: "allow",
        authMode: "anonymous",
        ...PASS_UNCHANGED,
        wouldDeny: enforced.reason,
      };
    }
  }
}
