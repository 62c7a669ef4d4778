/**
 * Credential extraction: finds the caller's token in the JSON body's `api_key`,
 * `Authorization: Bearer`, `x-api-key` and `Authorization: Basic` (the password is the
 * token). Pure: attributes in, a discriminated result out, never an exception.
 */
import type { CheckAttributes } from "./check-attributes.js";

/** Where a route lets keygate look for the credential (context_extensions.keygate_credential). */
export type CredentialSource = "any" | "body" | "header";

export type CredentialLocation = "body" | "bearer" | "basic" | "x-api-key";

/** What the JSON body looked like, read once for both the credential and the model check. */
export type BodyView =
  | { readonly kind: "absent" }
  | { readonly kind: "not-json" }
  | { readonly kind: "invalid-json" }
  | { readonly kind: "truncated" }
  | { readonly kind: "json"; readonly value: unknown };

export type Extraction =
  | { readonly kind: "none"; readonly body: BodyView }
  | {
      readonly kind: "token";
      readonly token: string;
      /** Every place the token was found (the same token in two places is fine). */
      readonly locations: readonly CredentialLocation[];
      readonly body: BodyView;
    }
  | {
      readonly kind: "invalid";
      readonly reason:
        | "credential_malformed"
        | "conflicting_credentials"
        | "invalid_json_body"
        | "invalid_api_key_field";
      readonly body: BodyView;
    };

const JSON_CONTENT_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Parses the body as JSON when it is declared JSON, or undeclared and looks like JSON. */
export function viewBody(attributes: CheckAttributes): BodyView {
  const { body } = attributes;
  if (body === undefined || body.length === 0) return { kind: "absent" };
  const contentType = attributes.headers.get("content-type");
  const declaredJson = contentType !== undefined && JSON_CONTENT_TYPE.test(contentType);
  const text = body.toString("utf8");
  if (!declaredJson && (contentType !== undefined || !text.trimStart().startsWith("{"))) {
    return { kind: "not-json" };
  }
  try {
    return { kind: "json", value: JSON.parse(text) as unknown };
  } catch {
    // A cut body cannot parse; that is a size problem, not a malformed request.
    return attributes.bodyTruncated ? { kind: "truncated" } : { kind: "invalid-json" };
  }
}

type Found = { readonly location: CredentialLocation; readonly token: string };
type Probe = Found | "absent" | "malformed" | "bad-field";

function probeBody(body: BodyView): Probe {
  if (
    body.kind !== "json" ||
    typeof body.value !== "object" ||
    body.value === null ||
    Array.isArray(body.value)
  ) {
    return "absent";
  }
  const apiKey = (body.value as Record<string, unknown>).api_key;
  if (apiKey === undefined || apiKey === null) return "absent";
  if (typeof apiKey !== "string") return "bad-field";
  const token = apiKey.trim();
  return token === "" ? "absent" : { location: "body", token };
}

function decodeBasicPassword(encoded: string): string | undefined {
  if (!BASE64.test(encoded) || encoded.length % 4 === 1) return undefined;
  const decoded = Buffer.from(encoded, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon === -1) return undefined;
  const password = decoded.slice(colon + 1).trim();
  return password === "" ? undefined : password;
}

function probeAuthorization(value: string | undefined): Probe {
  if (value === undefined || value.trim() === "") return "absent";
  const match = /^\s*(\S+)(?:\s+(.*))?$/s.exec(value);
  const scheme = match?.[1]?.toLowerCase();
  const rest = match?.[2]?.trim() ?? "";
  if (scheme === "bearer") return rest === "" ? "malformed" : { location: "bearer", token: rest };
  if (scheme === "basic") {
    const password = decodeBasicPassword(rest);
    return password === undefined ? "malformed" : { location: "basic", token: password };
  }
  // Another scheme (Digest, AWS4-HMAC…) is not keygate's credential.
  return "absent";
}

function probeApiKeyHeader(value: string | undefined): Probe {
  const token = value?.trim() ?? "";
  return token === "" ? "absent" : { location: "x-api-key", token };
}

/** Finds the credential a route allows, or says precisely why there is none usable. */
export function extractCredential(
  attributes: CheckAttributes,
  source: CredentialSource,
): Extraction {
  const body = viewBody(attributes);
  const probes: Probe[] = [];
  if (source !== "header") {
    if (body.kind === "invalid-json") return { kind: "invalid", reason: "invalid_json_body", body };
    probes.push(probeBody(body));
  }
  if (source !== "body") {
    probes.push(probeAuthorization(attributes.headers.get("authorization")));
    probes.push(probeApiKeyHeader(attributes.headers.get("x-api-key")));
  }
  if (probes.includes("malformed"))
    return { kind: "invalid", reason: "credential_malformed", body };
  if (probes.includes("bad-field"))
    return { kind: "invalid", reason: "invalid_api_key_field", body };
  // One pass, no intermediate arrays: this runs on every Check.
  let first: Found | undefined;
  const locations: CredentialLocation[] = [];
  for (const probe of probes) {
    if (typeof probe !== "object") continue;
    if (first === undefined) first = probe;
    else if (probe.token !== first.token)
      return { kind: "invalid", reason: "conflicting_credentials", body };
    locations.push(probe.location);
  }
  if (first === undefined) return { kind: "none", body };
  return { kind: "token", token: first.token, locations, body };
}
