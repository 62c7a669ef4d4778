/**
 * keygate's ext_proc codec against the reference: Envoy's ext_proc protos as
 * @grpc/proto-loader encodes and decodes them. ProcessingRequests the reference encodes
 * decode to the headers, body, metadata and attributes they carry (fields keygate skips
 * included); ProcessingResponses keygate encodes decode, through the reference, to what
 * keygate meant. Also: the streaming frame reader over arbitrary chunkings.
 */
import test from "ava";
import fc from "fast-check";
import {
  BodySendMode,
  decodeProcessingRequest,
  encodeProcessingResponse,
  HeaderSendMode,
  type Part,
} from "../../server/extproc/ext-proc-wire.js";
import { createFrameReader, type FrameError } from "../../server/grpc/grpc-stream.js";
import { GRPC_PREFIX_BYTES, WireError } from "../../server/grpc/protobuf-wire.js";
import {
  deserializeProcessingResponse,
  serializeProcessingRequest,
  stringStruct,
} from "../helpers/ext-proc-protos.js";

const NAMESPACE = "envoy.filters.http.ext_authz";
const name = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/);
const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ minLength: 130, maxLength: 3000 }));
const headerValue = fc.stringMatching(/^[\x20-\x7e]{0,60}$/);

const requestArbitrary = fc.record({
  part: fc.constantFrom<Part>("response_headers", "response_body", "request_headers"),
  headers: fc.dictionary(name, headerValue, { maxKeys: 8 }),
  raw: fc.boolean(),
  body: fc.uint8Array({ maxLength: 5000 }),
  endOfStream: fc.boolean(),
  metadata: fc.dictionary(name, text, { maxKeys: 4 }),
  otherNamespace: fc.dictionary(name, text, { maxKeys: 3 }),
  number: fc.option(fc.integer({ min: 0, max: 1_000_000 }), { nil: undefined }),
  requestId: fc.option(fc.uuid(), { nil: undefined }),
  observability: fc.boolean(),
});

type Generated = typeof requestArbitrary extends fc.Arbitrary<infer T> ? T : never;

function toProcessingRequest(g: Generated): unknown {
  const message: Record<string, unknown> = {};
  if (g.part.endsWith("_headers")) {
    const headers = Object.entries(g.headers).map(([key, value]) =>
      g.raw ? { key, raw_value: Buffer.from(value, "latin1") } : { key, value },
    );
    message[g.part] = { headers: { headers }, end_of_stream: g.endOfStream };
  } else message[g.part] = { body: Buffer.from(g.body), end_of_stream: g.endOfStream };
  const ours = stringStruct(g.metadata) as { fields: Record<string, unknown> };
  if (g.number !== undefined) ours.fields.keystore_generation = { numberValue: g.number };
  message.metadata_context = {
    filter_metadata: { [NAMESPACE]: ours, "other.filter": stringStruct(g.otherNamespace) },
  };
  if (g.requestId !== undefined)
    message.attributes = {
      "envoy.filters.http.ext_proc": stringStruct({ "request.id": g.requestId }),
    };
  message.observability_mode = g.observability;
  return message;
}

test("ProcessingRequest: the reference's encoding decodes to what it carries", (t) => {
  fc.assert(
    fc.property(requestArbitrary, (g) => {
      const decoded = decodeProcessingRequest(
        serializeProcessingRequest(toProcessingRequest(g)),
        NAMESPACE,
      );
      t.is(decoded.part, g.part);
      t.is(decoded.endOfStream, g.endOfStream);
      if (g.part.endsWith("_headers")) t.deepEqual(Object.fromEntries(decoded.headers), g.headers);
      else t.deepEqual(new Uint8Array(decoded.body), g.body);
      const expected: Record<string, string> = { ...g.metadata };
      if (g.number !== undefined) expected.keystore_generation = String(g.number);
      t.deepEqual(Object.fromEntries(decoded.metadata), expected);
      t.is(decoded.attributes.get("request.id"), g.requestId);
      t.is(decoded.observabilityMode, g.observability);
    }),
    { numRuns: 300 },
  );
});

test("ProcessingRequest: non-UTF-8 raw header bytes are kept byte for byte", (t) => {
  const raw = Buffer.from([0x61, 0xff, 0x80, 0x62]);
  const wire = serializeProcessingRequest({
    response_headers: { headers: { headers: [{ key: "X-Odd", raw_value: raw }] } },
  });
  const decoded = decodeProcessingRequest(wire, NAMESPACE);
  t.deepEqual(Buffer.from(decoded.headers.get("x-odd") ?? "", "latin1"), raw);
});

test("ProcessingRequest: bytes that are not protobuf throw WireError, never anything else", (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      try {
        decodeProcessingRequest(Buffer.from(bytes), NAMESPACE);
      } catch (error) {
        t.true(error instanceof WireError, String(error));
      }
    }),
    { numRuns: 2000 },
  );
});

const headerPairs = fc.array(fc.tuple(name, headerValue), { maxLength: 5 });

test("ProcessingResponse: CONTINUE with mutation and mode override decodes through the reference", (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom<Part>("response_headers", "response_body", "request_headers"),
      headerPairs,
      fc.array(name, { maxLength: 3 }),
      fc.boolean(),
      (part, setHeaders, removeHeaders, override) => {
        const framed = encodeProcessingResponse({
          kind: "continue",
          part,
          setHeaders,
          removeHeaders,
          ...(override
            ? {
                modeOverride: {
                  requestHeaderMode: HeaderSendMode.SKIP,
                  responseHeaderMode: HeaderSendMode.SEND,
                  requestBodyMode: BodySendMode.NONE,
                  responseBodyMode: BodySendMode.BUFFERED,
                  requestTrailerMode: HeaderSendMode.SKIP,
                  responseTrailerMode: HeaderSendMode.SKIP,
                },
              }
            : {}),
        });
        t.is(framed.readUInt32BE(1), framed.length - GRPC_PREFIX_BYTES);
        const decoded = deserializeProcessingResponse(framed.subarray(GRPC_PREFIX_BYTES));
        t.is(decoded.response, part);
        const common = (decoded[part] as { response?: Record<string, unknown> }).response ?? {};
        const mutation = (common.header_mutation ?? {}) as {
          set_headers?: { header: { key: string; raw_value: Buffer }; append_action: string }[];
          remove_headers?: string[];
        };
        t.deepEqual(
          (mutation.set_headers ?? []).map((o) => [
            o.header.key,
            o.header.raw_value.toString("latin1"),
          ]),
          setHeaders,
        );
        for (const option of mutation.set_headers ?? [])
          t.is(option.append_action, "OVERWRITE_IF_EXISTS_OR_ADD");
        t.deepEqual(mutation.remove_headers ?? [], removeHeaders);
        if (override)
          t.like(decoded.mode_override, {
            request_header_mode: "SKIP",
            response_header_mode: "SEND",
            response_body_mode: "BUFFERED",
            response_trailer_mode: "SKIP",
          });
        else t.is(decoded.mode_override, undefined);
      },
    ),
    { numRuns: 200 },
  );
});

/** envoy.type.v3.StatusCode names, as proto-loader (enums: String) reports them. */
const STATUS_NAMES: Record<number, string> = {
  401: "Unauthorized",
  402: "PaymentRequired",
  429: "TooManyRequests",
  502: "BadGateway",
};

test("ProcessingResponse: an immediate response decodes through the reference", (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom(...Object.keys(STATUS_NAMES).map(Number)),
      headerPairs,
      fc.string({ maxLength: 2000 }),
      (status, headers, body) => {
        const framed = encodeProcessingResponse({
          kind: "immediate",
          status,
          headers,
          body,
          details: "keygate_provider_error",
        });
        const decoded = deserializeProcessingResponse(framed.subarray(GRPC_PREFIX_BYTES)) as {
          response: string;
          immediate_response: {
            status: { code: string };
            headers?: { set_headers?: { header: { key: string; raw_value: Buffer } }[] };
            body: Buffer;
            details: string;
          };
        };
        t.is(decoded.response, "immediate_response");
        const immediate = decoded.immediate_response;
        t.is(immediate.status.code, STATUS_NAMES[status] ?? "");
        t.is(immediate.body.toString("utf8"), body);
        t.is(immediate.details, "keygate_provider_error");
        t.deepEqual(
          (immediate.headers?.set_headers ?? []).map((o) => [
            o.header.key,
            o.header.raw_value.toString("latin1"),
          ]),
          headers,
        );
      },
    ),
    { numRuns: 200 },
  );
});

function frame(message: Buffer): Buffer {
  const prefix = Buffer.alloc(GRPC_PREFIX_BYTES);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

/** Splits `bytes` at the given cut points (sorted, deduplicated). */
function cut(bytes: Buffer, points: number[]): Buffer[] {
  const sorted = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const point of sorted) {
    pieces.push(bytes.subarray(from, point));
    from = point;
  }
  pieces.push(bytes.subarray(from));
  return pieces;
}

test("frame reader: messages come out whole and in order, however the bytes are chunked", (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (messages, points) => {
        const seen: Buffer[] = [];
        const read = createFrameReader(
          1000,
          (m) => seen.push(Buffer.from(m)),
          () => t.fail(),
        );
        const stream = Buffer.concat(messages.map((m) => frame(Buffer.from(m))));
        for (const piece of cut(stream, points)) read(piece);
        t.deepEqual(
          seen.map((m) => [...m]),
          messages.map((m) => [...m]),
        );
      },
    ),
  );
});

test("frame reader: a declared length above the cap and a compressed message are refused", (t) => {
  const errors: FrameError[] = [];
  const tooLong = Buffer.alloc(GRPC_PREFIX_BYTES);
  tooLong.writeUInt32BE(1001, 1);
  createFrameReader(
    1000,
    () => t.fail(),
    (e) => errors.push(e),
  )(tooLong);
  const compressed = frame(Buffer.from("x"));
  compressed[0] = 1;
  createFrameReader(
    1000,
    () => t.fail(),
    (e) => errors.push(e),
  )(compressed);
  t.deepEqual(
    errors.map((e) => e.code),
    [8, 12],
  );
});
