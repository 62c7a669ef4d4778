/**
 * Decoding: turns Envoy's CheckRequest (as @grpc/proto-loader hands it over, snake_case)
 * into the few plain attributes the policy needs. Tolerates any shape: a missing or odd
 * field becomes an empty value, never an exception, so the decision can fail closed.
 */

/** Header Envoy adds to the check request when it had to cut the body at max_request_bytes. */
export const PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body";

export interface CheckAttributes {
  readonly method: string;
  /** Path without query or fragment. */
  readonly path: string;
  /** What followed the path (`?…` or `#…`), or "". */
  readonly query: string;
  /** Lower-case header names; repeated headers joined with "," as Envoy does. */
  readonly headers: ReadonlyMap<string, string>;
  /** The request body as Envoy sent it (raw_body bytes, else the body string), or undefined. */
  readonly body: Buffer | undefined;
  readonly bodyTruncated: boolean;
  readonly contextExtensions: Readonly<Record<string, string>>;
  /** Envoy's x-request-id, or "" when absent. */
  readonly requestId: string;
  /** The downstream peer address Envoy reports (attributes.source), or "" when absent. */
  readonly sourceAddress: string;
}

type Loose = Record<string, unknown>;

function asObject(value: unknown): Loose {
  return typeof value === "object" && value !== null ? (value as Loose) : {};
}

function asString(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function addHeader(headers: Map<string, string>, name: string, value: string): void {
  const key = name.toLowerCase();
  const existing = headers.get(key);
  headers.set(key, existing === undefined ? value : `${existing},${value}`);
}

function decodeHeaders(http: Loose): Map<string, string> {
  const headers = new Map<string, string>();
  const plain = asObject(http.headers);
  for (const name of Object.keys(plain)) {
    const value = plain[name];
    if (typeof value === "string") addHeader(headers, name, value);
  }
  // With encode_raw_headers Envoy sends header_map instead, values as raw bytes.
  const entries = asObject(http.header_map).headers;
  if (Array.isArray(entries)) {
    for (const entry of entries) {
      const { key, value, raw_value: raw } = asObject(entry);
      if (typeof key !== "string" || key === "") continue;
      if (Buffer.isBuffer(raw)) addHeader(headers, key, raw.toString("latin1"));
      else if (typeof value === "string") addHeader(headers, key, value);
    }
  }
  return headers;
}

function decodeBody(http: Loose): Buffer | undefined {
  const raw = http.raw_body;
  if (Buffer.isBuffer(raw) && raw.length > 0) return raw;
  const text = http.body;
  if (typeof text === "string" && text.length > 0) return Buffer.from(text, "utf8");
  return undefined;
}

function splitQuery(target: string): [path: string, query: string] {
  const end = target.search(/[?#]/);
  return end === -1 ? [target, ""] : [target.slice(0, end), target.slice(end)];
}

function decodeContextExtensions(attributes: Loose): Record<string, string> {
  const out: Record<string, string> = {};
  const extensions = asObject(attributes.context_extensions);
  for (const key of Object.keys(extensions)) {
    const value = extensions[key];
    if (typeof value === "string") out[key] = value;
  }
  return out;
}

function decodeSourceAddress(attributes: Loose): string {
  const socket = asObject(asObject(asObject(attributes.source).address).socket_address);
  return asString(socket.address);
}

/** Reads the attributes keygate decides on from a CheckRequest; never throws. */
export function decodeCheckRequest(request: unknown): CheckAttributes {
  const attributes = asObject(asObject(request).attributes);
  const http = asObject(asObject(attributes.request).http);
  const headers = decodeHeaders(http);
  const [path, query] = splitQuery(asString(http.path) || (headers.get(":path") ?? ""));
  return {
    method: asString(http.method) || (headers.get(":method") ?? ""),
    path,
    query,
    headers,
    body: decodeBody(http),
    bodyTruncated: headers.get(PARTIAL_BODY_HEADER)?.trim().toLowerCase() === "true",
    contextExtensions: decodeContextExtensions(attributes),
    requestId: headers.get("x-request-id") ?? asString(http.id),
    sourceAddress: decodeSourceAddress(attributes),
  };
}
