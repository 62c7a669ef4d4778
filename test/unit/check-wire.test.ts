/**
 * keygate's own protobuf codec against the reference: Envoy's protos as @grpc/proto-loader
 * (protobufjs) encodes and decodes them. CheckRequests the reference encodes must decode
 * to the attributes they carry; CheckResponses keygate encodes must decode, through the
 * reference, to what keygate built. Arbitrary contents, including long and non-ASCII
 * strings (multi-byte lengths) and fields keygate skips.
 */
import test from "ava";
import fc from "fast-check";
import type { CheckResponse } from "../../server/auth/build-response.js";
import { decodeCheckRequest } from "../../server/auth/check-attributes.js";
import { encodeCheckResponse } from "../../server/grpc/check-response-wire.js";
import { WireReader, WireWriter } from "../../server/grpc/protobuf-wire.js";
import { deserializeCheckResponse, serializeCheckRequest } from "../helpers/envoy-protos.js";

const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.string({ minLength: 120, maxLength: 20_000 }),
);
const name = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/);

const requestArbitrary = fc.record({
  id: fc.string({ maxLength: 20 }),
  method: fc.constantFrom("POST", "GET", ""),
  path: fc.oneof(fc.constant("/v1/messages?beta=1"), fc.string({ maxLength: 60 })),
  headers: fc.dictionary(name, text, { maxKeys: 8 }),
  raw: fc.boolean(),
  body: fc.option(fc.uint8Array({ maxLength: 3000 }), { nil: undefined }),
  bodyAsString: fc.option(fc.string({ maxLength: 300 }), { nil: undefined }),
  extensions: fc.dictionary(name, text, { maxKeys: 3 }),
  source: fc.option(fc.ipV4(), { nil: undefined }),
  // Fields keygate never reads: they must be skipped, whatever they hold.
  labels: fc.dictionary(name, text, { maxKeys: 3 }),
  sni: fc.string({ maxLength: 30 }),
  size: fc.bigInt({ min: 0n, max: (1n << 62n) - 1n }),
});

type Generated = typeof requestArbitrary extends fc.Arbitrary<infer T> ? T : never;

function toCheckRequest(g: Generated): unknown {
  const http: Record<string, unknown> = {
    id: g.id,
    method: g.method,
    path: g.path,
    host: "apollo.local",
    size: g.size.toString(),
    protocol: "HTTP/1.1",
  };
  if (g.raw)
    http.header_map = {
      headers: Object.entries(g.headers).map(([key, value]) => ({
        key,
        raw_value: Buffer.from(value, "latin1"),
      })),
    };
  else http.headers = g.headers;
  if (g.body !== undefined) http.raw_body = Buffer.from(g.body);
  if (g.bodyAsString !== undefined) http.body = g.bodyAsString;
  return {
    attributes: {
      source: {
        address:
          g.source === undefined
            ? undefined
            : { socket_address: { address: g.source, port_value: 443 } },
        labels: g.labels,
      },
      destination: { address: { socket_address: { address: "10.0.0.1", port_value: 8080 } } },
      request: { time: { seconds: "1700000000", nanos: 5 }, http },
      context_extensions: g.extensions,
      metadata_context: { filter_metadata: { x: { fields: { a: { string_value: "b" } } } } },
      tls_session: { sni: g.sni },
    },
  };
}

test("CheckRequest: the reference's encoding decodes to the attributes it carries", (t) => {
  fc.assert(
    fc.property(requestArbitrary, (g) => {
      const attributes = decodeCheckRequest(serializeCheckRequest(toCheckRequest(g)));
      const expectedHeaders = new Map(
        Object.entries(g.headers).map(([key, value]) => [
          key,
          g.raw ? Buffer.from(value, "latin1").toString("latin1") : value,
        ]),
      );
      const cut = g.path.search(/[?#]/);
      const expectedBody =
        g.body !== undefined && g.body.length > 0
          ? Buffer.from(g.body)
          : g.bodyAsString
            ? Buffer.from(g.bodyAsString, "utf8")
            : undefined;
      t.deepEqual(attributes.headers, expectedHeaders);
      t.is(attributes.path, cut === -1 ? g.path : g.path.slice(0, cut));
      t.is(attributes.query, cut === -1 ? "" : g.path.slice(cut));
      t.is(attributes.method, g.method);
      t.deepEqual(attributes.body, expectedBody);
      t.deepEqual(attributes.contextExtensions, g.extensions);
      t.is(attributes.sourceAddress, g.source ?? "");
      t.is(attributes.requestId, g.headers["x-request-id"] ?? g.id);
    }),
    { numRuns: 300 },
  );
});

test("CheckRequest: repeated header_map names are joined with a comma, in order", (t) => {
  const request = {
    attributes: {
      request: {
        http: {
          header_map: {
            headers: [
              { key: "x-api-key", raw_value: Buffer.from("a") },
              { key: "X-Api-Key", raw_value: Buffer.from("b") },
              { key: "x-other", value: "plain" },
            ],
          },
        },
      },
    },
  };
  const attributes = decodeCheckRequest(serializeCheckRequest(request));
  t.is(attributes.headers.get("x-api-key"), "a,b");
  t.is(attributes.headers.get("x-other"), "plain");
});

test("CheckRequest: raw_body is a view of the received bytes, not a copy", (t) => {
  const wire = serializeCheckRequest({
    attributes: { request: { http: { raw_body: Buffer.from('{"api_key":"x"}') } } },
  });
  const body = decodeCheckRequest(wire).body;
  t.truthy(body);
  t.is(body?.buffer, wire.buffer);
});

const headerOption = fc.record({ key: name, value: text }).map(({ key, value }) => ({
  header: { key, value },
  append_action: "OVERWRITE_IF_EXISTS_OR_ADD" as const,
}));
const metadataValue = fc.oneof(
  text.map((stringValue) => ({ stringValue })),
  fc.double({ noNaN: true }).map((numberValue) => ({ numberValue })),
  fc.boolean().map((boolValue) => ({ boolValue })),
);
const metadata = fc.option(
  fc.dictionary(name, metadataValue, { maxKeys: 5 }).map((fields) => ({ fields })),
  { nil: undefined },
);
const responseArbitrary: fc.Arbitrary<CheckResponse> = fc.oneof(
  fc.record({
    status: fc.constant({ code: 0 }),
    ok_response: fc.record({
      headers: fc.array(headerOption, { maxLength: 4 }),
      headers_to_remove: fc.array(name, { maxLength: 5 }),
    }),
    dynamic_metadata: metadata,
  }),
  fc.record({
    status: fc.record({ code: fc.constantFrom(7, 16), message: fc.constantFrom("UNAUTHORIZED") }),
    denied_response: fc.record({
      status: fc.record({ code: fc.constantFrom(400, 401, 403, 429, 503) }),
      headers: fc.array(headerOption, { maxLength: 3 }),
      body: text,
    }),
    dynamic_metadata: metadata,
  }),
);

/** A CheckResponse as the reference decodes it (enums as names, defaults not filled in). */
interface Decoded {
  status: { code?: number; message?: string };
  ok_response?: {
    headers?: { header: { key: string; value: string }; append_action: string }[];
    headers_to_remove?: string[];
  };
  denied_response?: {
    status: { code: string };
    headers?: { header: { key: string; value: string } }[];
    body?: string;
  };
  /** google.protobuf.Value with protobufjs's camelCase names, plus the oneof's `kind`. */
  dynamic_metadata?: { fields: Record<string, Record<string, unknown>> };
}

const decode = (framed: Buffer) =>
  deserializeCheckResponse(framed.subarray(5)) as unknown as Decoded;

test("CheckResponse: keygate's encoding decodes, through the reference, to what it built", (t) => {
  fc.assert(
    fc.property(responseArbitrary, (response) => {
      const framed = encodeCheckResponse(response);
      t.is(framed[0], 0, "uncompressed");
      t.is(framed.readUInt32BE(1), framed.length - 5, "the prefix holds the message length");
      const decoded = decode(framed);
      t.is(decoded.status.code, response.status.code);
      t.is(decoded.status.message ?? undefined, response.status.message);
      if (response.ok_response) {
        t.deepEqual(
          (decoded.ok_response?.headers ?? []).map((h) => [
            h.header.key,
            h.header.value,
            h.append_action,
          ]),
          response.ok_response.headers.map((h) => [h.header.key, h.header.value, h.append_action]),
        );
        t.deepEqual(
          decoded.ok_response?.headers_to_remove ?? [],
          response.ok_response.headers_to_remove,
        );
        t.is(decoded.denied_response, undefined);
      }
      if (response.denied_response) {
        const denied = response.denied_response;
        t.is(decoded.denied_response?.body ?? "", denied.body);
        t.deepEqual(
          (decoded.denied_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
          denied.headers.map((h) => [h.header.key, h.header.value]),
        );
        t.is(decoded.ok_response, undefined);
      }
      const fields = response.dynamic_metadata?.fields;
      if (fields === undefined) t.is(decoded.dynamic_metadata, undefined);
      else
        for (const key of Object.keys(fields)) {
          const expected = fields[key] as object;
          t.deepEqual(
            Object.fromEntries(
              Object.entries(decoded.dynamic_metadata?.fields[key] ?? {}).filter(
                ([field]) => field !== "kind",
              ),
            ),
            expected,
          );
        }
    }),
    { numRuns: 300 },
  );
});

test("CheckResponse: the denied HTTP status is Envoy's StatusCode enum value", (t) => {
  const framed = encodeCheckResponse({
    status: { code: 16, message: "UNAUTHORIZED" },
    denied_response: { status: { code: 401 }, headers: [], body: "{}" },
  });
  const decoded = decode(framed);
  // proto-loader decodes enums as names: 401 is envoy.type.v3.StatusCode Unauthorized.
  t.is(decoded.denied_response?.status.code, "Unauthorized");
});

test("WireWriter and WireReader: embedded messages of any length round-trip", (t) => {
  for (const length of [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
    const writer = new WireWriter(8);
    const outer = writer.begin(1);
    const inner = writer.begin(2);
    writer.string(3, "x".repeat(length));
    writer.end(inner);
    writer.end(outer);
    writer.varint(4, 300);
    const framed = writer.framed();
    const reader = new WireReader(framed, 5, framed.length);
    t.is(reader.next(), 1);
    const top = reader.enter();
    t.is(reader.next(), 2);
    const first = reader.enter();
    t.is(reader.next(), 3);
    t.is(reader.string().length, length);
    t.is(reader.next(), 0);
    reader.leave(first);
    t.is(reader.next(), 0);
    reader.leave(top);
    t.is(reader.next(), 4);
    t.is(reader.varint(), 300);
    t.is(reader.next(), 0);
  }
});

test("WireWriter: strings read back byte for byte, ASCII or not, at every length boundary", (t) => {
  // Short strings are first tried as ASCII; a non-ASCII unit anywhere, even the last,
  // must fall back to UTF-8 without leaving the ASCII attempt's bytes behind.
  const cases = [
    "",
    "a",
    "x".repeat(127),
    "x".repeat(128),
    `${"x".repeat(127)}é`,
    `${"x".repeat(255)}é`,
    "x".repeat(256),
    "x".repeat(257),
    "é",
    "日本",
    "😀",
    `${"x".repeat(200)}\u007f`,
    `${"x".repeat(200)}\u0080`,
  ];
  for (const value of cases) {
    const writer = new WireWriter(4);
    writer.string(1, value);
    writer.varint(2, 7);
    const framed = writer.framed();
    const reader = new WireReader(framed, 5, framed.length);
    t.is(reader.next(), 1);
    t.is(reader.string(), value, `length ${value.length}`);
    t.is(reader.next(), 2);
    t.is(reader.varint(), 7);
    t.is(reader.next(), 0);
  }
});
