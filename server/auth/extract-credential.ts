/**
 * Credential extraction: finds the caller's token in the JSON body's `api_key`,
 * `Authorization: Bearer`, `x-api-key`, `Authorization: Basic` (the password is the
 * token) and any other `Authorization` value carrying a keygate token. Every place is
 * probed whatever the route's credential source, so that a later phase can keep a
 * credential the route ignores from reaching the upstream. Pure: attributes in, a
 * discriminated result out, never an exception.
 */

import { KEYGATE_TOKEN_MARK } from "../crypto/secret-shapes.js";
import type { CheckAttributes } from "./check-attributes.js";
import {
  type JsonScan,
  mentionsCredential,
  type TopLevelField,
  TopLevelReader,
  utf8JsonBytes,
} from "./read-json-body.js";

/** Where a route lets keygate look for the credential (context_extensions.keygate_credential). */
export type CredentialSource = "any" | "body" | "header";

export type CredentialLocation = "body" | "bearer" | "basic" | "authorization" | "x-api-key";

/** What the body looked like, read once for the credential, the model check and the leak guard. */
export type BodyView =
  | { readonly kind: "absent" }
  /** A JSON object, with the only two fields keygate reads. */
  | { readonly kind: "object"; readonly apiKey: TopLevelField; readonly model: TopLevelField }
  /**
   * Nothing keygate can read fields from: a malformed JSON object, a body Envoy cut, or
   * anything that is not a JSON object at all (an array, form data, text, binary).
   */
  | {
      readonly kind: "invalid-json" | "truncated" | "other";
      /** Whether it may hold something an upstream could take for a credential (kg_, api_key). */
      readonly mayHoldCredential: boolean;
    };

/** A credential as presented in one place: a token, or something there that is not usable. */
export type Presented =
  | { readonly location: CredentialLocation; readonly token: string }
  | {
      readonly location: CredentialLocation;
      readonly token: null;
      readonly problem: "credential_malformed" | "invalid_api_key_field";
    };

type ExtractionResult =
  | { readonly kind: "none" }
  | {
      readonly kind: "token";
      readonly token: string;
      /** Every place the route's source found the token (the same token in two places is fine). */
      readonly locations: readonly CredentialLocation[];
    }
  | {
      readonly kind: "invalid";
      readonly reason:
        | "credential_malformed"
        | "conflicting_credentials"
        | "invalid_json_body"
        | "invalid_api_key_field";
    };

export type Extraction = ExtractionResult & {
  readonly body: BodyView;
  /** Every credential in the request, in any place, whether or not the route reads it. */
  readonly presented: readonly Presented[];
  /** A keygate token somewhere no credential belongs: the query string, a cookie, another header. */
  readonly tokenElsewhere: boolean;
};

const ABSENT_BODY: BodyView = { kind: "absent" };
const ENCODED_BODY: BodyView = { kind: "other", mayHoldCredential: true };
const CHARSET = /;\s*charset\s*=\s*"?([^";,\s]*)/i;
/** Charsets whose JSON keygate reads as the upstream would: the UTFs, and ASCII-compatible ones for ASCII marks. */
const READABLE_CHARSETS = new Set([
  "utf-8",
  "utf8",
  "utf-16",
  "utf-16le",
  "utf-16be",
  "utf-32",
  "utf-32le",
  "utf-32be",
  "us-ascii",
  "ascii",
  "iso-8859-1",
  "latin1",
]);
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
/** A token is one word: a comma is two headers joined by Envoy, whitespace is two values. */
const NOT_ONE_TOKEN = /[\s,]/;

/**
 * A body being read: finished at once when there is nothing to scan, else a reader the
 * caller drives (all at once, or in slices between other work) and a finishing step.
 */
export type BodyReading =
  | { readonly view: BodyView }
  | { readonly reader: TopLevelReader; finish(scan: JsonScan): BodyView };

function unreadable(attributes: CheckAttributes, bytes: Buffer, scan: JsonScan | null): BodyView {
  const mentions = mentionsCredential(bytes);
  // A cut body cannot parse; that is a size problem, not a malformed request.
  if (attributes.bodyTruncated) return { kind: "truncated", mayHoldCredential: mentions };
  return {
    kind: scan?.kind === "invalid" ? "invalid-json" : "other",
    mayHoldCredential: mentions,
  };
}

/**
 * Starts reading the body as the upstream would parse it, whatever its declared
 * content-type: the upstream parses JSON regardless, so keygate must see what it will see.
 */
export function openBody(attributes: CheckAttributes): BodyReading {
  const { body } = attributes;
  if (body === undefined || body.length === 0) return { view: ABSENT_BODY };
  // Compressed bytes, or text in a charset keygate does not decode (an upstream that
  // honours `charset=utf-7` reads `api+AF8-key` as api_key), cannot be searched.
  const encoding = attributes.headers.get("content-encoding")?.trim().toLowerCase();
  if (encoding !== undefined && encoding !== "" && encoding !== "identity")
    return { view: ENCODED_BODY };
  const charset = CHARSET.exec(attributes.headers.get("content-type") ?? "")?.[1]?.toLowerCase();
  if (charset !== undefined && !READABLE_CHARSETS.has(charset)) return { view: ENCODED_BODY };
  const bytes = utf8JsonBytes(body);
  if (bytes === undefined) return { view: unreadable(attributes, body, null) };
  return {
    reader: new TopLevelReader(bytes),
    finish: (scan) =>
      scan.kind === "object"
        ? { kind: "object", apiKey: scan.apiKey, model: scan.model }
        : unreadable(attributes, bytes, scan),
  };
}

/** The body read all at once. */
export function viewBody(attributes: CheckAttributes): BodyView {
  const reading = openBody(attributes);
  if ("view" in reading) return reading.view;
  return reading.finish(reading.reader.read(Number.POSITIVE_INFINITY) as JsonScan);
}

function presentToken(location: CredentialLocation, raw: string): Presented | undefined {
  const token = raw.trim();
  if (token === "") return undefined;
  return NOT_ONE_TOKEN.test(token)
    ? { location, token: null, problem: "credential_malformed" }
    : { location, token };
}

function malformed(location: CredentialLocation): Presented {
  return { location, token: null, problem: "credential_malformed" };
}

function probeBody(body: BodyView): Presented | undefined {
  if (body.kind !== "object") return undefined;
  const { apiKey } = body;
  if (apiKey.kind === "string") return presentToken("body", apiKey.value);
  if (apiKey.kind === "other")
    return { location: "body", token: null, problem: "invalid_api_key_field" };
  return undefined;
}

function decodeBasicPassword(encoded: string): string | undefined {
  if (!BASE64.test(encoded) || encoded.length % 4 === 1) return undefined;
  const decoded = Buffer.from(encoded, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon === -1 ? undefined : decoded.slice(colon + 1);
}

function probeAuthorization(value: string | undefined): Presented | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const match = /^\s*(\S+)(?:\s+(.*))?$/s.exec(value);
  const word = match?.[1] ?? "";
  const rest = match?.[2]?.trim() ?? "";
  const scheme = word.toLowerCase();
  if (scheme === "bearer") return rest === "" ? malformed("bearer") : presentToken("bearer", rest);
  if (scheme === "basic") {
    const password = decodeBasicPassword(rest);
    return password === undefined
      ? malformed("basic")
      : (presentToken("basic", password) ?? malformed("basic"));
  }
  // Any other scheme (Token, a bare value…) is keygate's when it carries a keygate token.
  if (value.includes(KEYGATE_TOKEN_MARK))
    return presentToken("authorization", rest === "" ? word : rest);
  return undefined;
}

/** The headers a caller may put a credential in: probed here, and keygate's alone on every allow. */
export const CREDENTIAL_HEADERS: readonly string[] = ["authorization", "x-api-key"];

function tokenElsewhere(attributes: CheckAttributes): boolean {
  if (attributes.query.includes(KEYGATE_TOKEN_MARK)) return true;
  for (const [name, value] of attributes.headers) {
    if (!CREDENTIAL_HEADERS.includes(name) && value.includes(KEYGATE_TOKEN_MARK)) return true;
  }
  return false;
}

function readsFrom(source: CredentialSource, location: CredentialLocation): boolean {
  if (source === "any") return true;
  return (location === "body") === (source === "body");
}

/** The outcome for what the route reads; always a new object (extractCredential adds to it). */
function resultOf(
  usable: readonly Presented[],
  body: BodyView,
  source: CredentialSource,
): ExtractionResult {
  if (source !== "header" && body.kind === "invalid-json")
    return { kind: "invalid", reason: "invalid_json_body" };
  let problem: "credential_malformed" | "invalid_api_key_field" | undefined;
  for (const presented of usable) {
    if (presented.token === null && problem !== "credential_malformed") problem = presented.problem;
  }
  if (problem !== undefined) return { kind: "invalid", reason: problem };
  let first: string | undefined;
  const locations: CredentialLocation[] = [];
  for (const presented of usable) {
    const token = presented.token as string;
    if (first === undefined) first = token;
    else if (token !== first) return { kind: "invalid", reason: "conflicting_credentials" };
    locations.push(presented.location);
  }
  return first === undefined ? { kind: "none" } : { kind: "token", token: first, locations };
}

/** Finds the credential a route allows, or says precisely why there is none usable. */
export function extractCredential(
  attributes: CheckAttributes,
  source: CredentialSource,
  body: BodyView = viewBody(attributes),
): Extraction {
  const presented: Presented[] = [];
  for (const found of [
    probeBody(body),
    probeAuthorization(attributes.headers.get("authorization")),
    presentToken("x-api-key", attributes.headers.get("x-api-key") ?? ""),
  ]) {
    if (found !== undefined) presented.push(found);
  }
  const usable = presented.filter((found) => readsFrom(source, found.location));
  // Object.assign onto resultOf's fresh object: an object spread of its differently
  // shaped results took V8 about 5 µs per Check, a tenth of the whole decision.
  return Object.assign(resultOf(usable, body, source), {
    body,
    presented,
    tokenElsewhere: tokenElsewhere(attributes),
  });
}
