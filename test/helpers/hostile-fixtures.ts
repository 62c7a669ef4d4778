/**
 * What the hostile-input suites share: a keystore with the clients an attacker plays
 * against (a known client, a models-restricted one, a route-restricted one, an internal
 * one, a disabled one and an expired token), bodies encoded the ways Python's
 * `json.loads(bytes)` decodes them, and CheckRequests with repeated headers and raw bytes,
 * shaped as Envoy sends them.
 */
import type { CheckResponse } from "../../server/auth/build-response.js";
import type { Mode } from "../../server/config.js";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";

/** Tokens of the hostile keystore, minted fresh per test file. */
export interface HostileTokens {
  /** `alpha`: a client with its own upstream key. */
  readonly alpha: string;
  /** `beta`: models ["claude-*-*"]. */
  readonly beta: string;
  /** `gamma`: routes [/services/]. */
  readonly gamma: string;
  /** `worker`: kind internal. */
  readonly internal: string;
  /** `retired`: disabled. */
  readonly disabled: string;
  /** `lapsed`: its only token expired in 2020. */
  readonly expired: string;
  /** Valid checksum, in no keystore. */
  readonly unknown: string;
}

export const ALPHA_UPSTREAM = "sk-ant-upstream-alpha";
export const BETA_UPSTREAM = "sk-ant-upstream-beta";
export const GAMMA_UPSTREAM = "sk-ant-upstream-gamma";
/** A caller's own provider key (bring your own key). */
export const BYO_KEY = "sk-ant-api03-callers-own-key";
/** The environment the hostile keystore's env: upstream keys name. */
export const HOSTILE_ENV: Readonly<Record<string, string>> = {
  HOSTILE_ALPHA_KEY: ALPHA_UPSTREAM,
  HOSTILE_BETA_KEY: BETA_UPSTREAM,
  HOSTILE_GAMMA_KEY: GAMMA_UPSTREAM,
};

export function mintHostileTokens(): HostileTokens {
  return {
    alpha: mintToken(),
    beta: mintToken(),
    gamma: mintToken(),
    internal: mintToken(),
    disabled: mintToken(),
    expired: mintToken(),
    unknown: mintToken(),
  };
}

export function hostileKeystore(tokens: HostileTokens): string {
  return `version: 1
clients:
  - id: alpha
    tokens:
      - sha256: ${hashToken(tokens.alpha)}
    upstream_key: env:HOSTILE_ALPHA_KEY
  - id: beta
    tokens:
      - sha256: ${hashToken(tokens.beta)}
    upstream_key: env:HOSTILE_BETA_KEY
    models: ["claude-*-*"]
  - id: gamma
    tokens:
      - sha256: ${hashToken(tokens.gamma)}
    upstream_key: env:HOSTILE_GAMMA_KEY
    routes: [/services/]
  - id: worker
    kind: internal
    tokens:
      - sha256: ${hashToken(tokens.internal)}
  - id: retired
    disabled: true
    tokens:
      - sha256: ${hashToken(tokens.disabled)}
    upstream_key: env:HOSTILE_ALPHA_KEY
  - id: lapsed
    tokens:
      - sha256: ${hashToken(tokens.expired)}
        expires: 2020-01-01T00:00:00Z
    upstream_key: env:HOSTILE_ALPHA_KEY
`;
}

/** The encodings Python's json.loads(bytes) reads: by BOM, or by the NUL pattern of the first 4 bytes. */
export const ENCODINGS = [
  "utf8",
  "utf8-bom",
  "utf16le",
  "utf16le-bom",
  "utf16be",
  "utf16be-bom",
  "utf32le",
  "utf32le-bom",
  "utf32be",
  "utf32be-bom",
] as const;
export type BodyEncoding = (typeof ENCODINGS)[number];

function utf32(text: string, littleEndian: boolean): Buffer {
  const points = Array.from(text, (c) => c.codePointAt(0) as number);
  const out = Buffer.alloc(points.length * 4);
  points.forEach((point, i) => {
    if (littleEndian) out.writeUInt32LE(point, i * 4);
    else out.writeUInt32BE(point, i * 4);
  });
  return out;
}

/** `text` as bytes in `encoding`; a BOM variant starts with U+FEFF in that encoding. */
export function encodeText(text: string, encoding: BodyEncoding): Buffer {
  const bom = encoding.endsWith("-bom");
  const source = bom ? `\uFEFF${text}` : text;
  switch (encoding.replace(/-bom$/, "")) {
    case "utf8":
      return Buffer.from(source, "utf8");
    case "utf16le":
      return Buffer.from(source, "utf16le");
    case "utf16be":
      return Buffer.from(source, "utf16le").swap16();
    case "utf32le":
      return utf32(source, true);
    default:
      return utf32(source, false);
  }
}

export type HeaderList = ReadonlyArray<readonly [string, string]>;

export interface HostileSpec {
  readonly method?: string;
  readonly path?: string;
  /** Repeated names are allowed: joined with "," in `headers`, separate entries in header_map. */
  readonly headers?: HeaderList;
  /** Bytes as the client sent them (raw_body, pack_as_bytes: true). */
  readonly body?: Buffer | string;
  /** encode_raw_headers: headers as header_map entries with raw_value bytes. */
  readonly rawHeaders?: boolean;
  readonly mode?: Mode;
  readonly credential?: "any" | "body" | "header";
}

/** A CheckRequest as Envoy sends it for this request (repeated headers as Envoy joins them). */
export function hostileRequest(spec: HostileSpec): Record<string, unknown> {
  const body = typeof spec.body === "string" ? Buffer.from(spec.body, "utf8") : spec.body;
  const headers: [string, string][] = [
    [":method", spec.method ?? "POST"],
    [":path", spec.path ?? "/v1/messages"],
    ["x-request-id", "req-hostile-1"],
    ...(spec.headers ?? []).map(([k, v]) => [k, v] as [string, string]),
  ];
  const http: Record<string, unknown> = {
    id: "4321",
    method: spec.method ?? "POST",
    path: spec.path ?? "/v1/messages",
    host: "apollo.local",
    protocol: "HTTP/1.1",
  };
  if (spec.rawHeaders) {
    http.header_map = {
      headers: headers.map(([key, value]) => ({ key, raw_value: Buffer.from(value, "latin1") })),
    };
  } else {
    const joined: Record<string, string> = {};
    for (const [key, value] of headers)
      joined[key] = joined[key] === undefined ? value : `${joined[key]},${value}`;
    http.headers = joined;
  }
  if (body !== undefined && body.length > 0) {
    http.raw_body = body;
    http.size = String(body.length);
  }
  const contextExtensions: Record<string, string> = {};
  if (spec.mode !== undefined) contextExtensions.keygate_mode = spec.mode;
  if (spec.credential !== undefined) contextExtensions.keygate_credential = spec.credential;
  return {
    attributes: { request: { http }, context_extensions: contextExtensions },
  };
}

/** The headers an allow sets, by name. */
export function headersSet(response: CheckResponse): Record<string, string> {
  return Object.fromEntries(
    (response.ok_response?.headers ?? []).map((h) => [h.header.key.toLowerCase(), h.header.value]),
  );
}

/** The headers an allow removes, lower-cased. */
export function headersRemoved(response: CheckResponse): string[] {
  return (response.ok_response?.headers_to_remove ?? []).map((h) => h.toLowerCase());
}

/** The HTTP status Envoy would answer with: 200 for an allow, the denial's status otherwise. */
export function httpStatusOf(response: CheckResponse): number {
  return response.status.code === 0 ? 200 : (response.denied_response?.status.code ?? 0);
}

/** A string field of the response's dynamic metadata, or undefined. */
export function metadataString(response: CheckResponse, key: string): string | undefined {
  const value = response.dynamic_metadata?.fields?.[key] as { stringValue?: string } | undefined;
  return value?.stringValue;
}

/** A short description of a response for assertion messages (never the provider key). */
export function describe(response: CheckResponse): string {
  if (response.status.code !== 0) {
    const body = response.denied_response?.body ?? "";
    return `deny ${httpStatusOf(response)} ${body.slice(0, 120)}`;
  }
  return `allow set=[${Object.keys(headersSet(response)).join(",")}] removed=[${headersRemoved(response).join(",")}] auth_mode=${metadataString(response, "auth_mode")}`;
}
