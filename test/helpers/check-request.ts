/**
 * Builds CheckRequest objects shaped as Envoy sends them (snake_case, as
 * @grpc/proto-loader encodes them), for unit tests and for real gRPC calls.
 */

export interface RequestSpec {
  readonly method?: string;
  readonly path?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** JSON-serialised into raw_body (pack_as_bytes: true) unless `bodyAsString`. */
  readonly json?: unknown;
  /** Raw body text. */
  readonly body?: string;
  readonly bodyAsString?: boolean;
  /** Send headers in header_map with raw_value bytes (encode_raw_headers: true). */
  readonly rawHeaders?: boolean;
  readonly contextExtensions?: Readonly<Record<string, string>>;
}

export function checkRequest(spec: RequestSpec = {}): Record<string, unknown> {
  const text = spec.json !== undefined ? JSON.stringify(spec.json) : spec.body;
  const headers: Record<string, string> = {
    ":method": spec.method ?? "POST",
    ":path": spec.path ?? "/v1/messages",
    "x-request-id": "req-test-1",
    ...(spec.json !== undefined ? { "content-type": "application/json" } : {}),
    ...spec.headers,
  };
  const http: Record<string, unknown> = {
    id: "1234",
    method: spec.method ?? "POST",
    path: spec.path ?? "/v1/messages",
    host: "apollo.local",
    protocol: "HTTP/1.1",
  };
  if (spec.rawHeaders) {
    http.header_map = {
      headers: Object.entries(headers).map(([key, value]) => ({
        key,
        raw_value: Buffer.from(value, "latin1"),
      })),
    };
  } else {
    http.headers = headers;
  }
  if (text !== undefined) {
    if (spec.bodyAsString) http.body = text;
    else http.raw_body = Buffer.from(text, "utf8");
    http.size = String(Buffer.byteLength(text));
  }
  return {
    attributes: {
      request: { http },
      context_extensions: spec.contextExtensions ?? {},
    },
  };
}

/** Authorization: Basic for a user and password. */
export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, "utf8").toString("base64")}`;
}
