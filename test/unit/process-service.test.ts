/**
 * The response-path service as a stream handler, fed what Envoy (or a broken peer) might
 * send: every well-formed message gets exactly one answer of the matching kind, bytes that
 * are not protobuf throw WireError (the transport turns it into a status) and nothing
 * else, usage is reported at most once per stream,
 * and nothing reaches the log that the provider or the caller wrote.
 */
import { Writable } from "node:stream";
import test from "ava";
import fc from "fast-check";
import { createProcessService } from "../../server/extproc/process-service.js";
import type { StreamCall } from "../../server/grpc/grpc-stream.js";
import { GRPC_PREFIX_BYTES, WireError } from "../../server/grpc/protobuf-wire.js";
import { createLogger } from "../../server/logger.js";
import {
  deserializeProcessingResponse,
  serializeProcessingRequest,
  stringStruct,
} from "../helpers/ext-proc-protos.js";

const SECRET = "sk-ant-api03-secret-from-somewhere";
const NAMESPACE = "envoy.filters.http.ext_authz";

const headerValue = fc.oneof(
  fc.constantFrom("200", "400", "401", "402", "403", "429", "500", "x", ""),
  fc.string({ maxLength: 40 }),
  fc.constant(SECRET),
);
const headersArbitrary = fc.record({
  ":status": fc.constantFrom("200", "400", "401", "402", "403", "429", "529", "abc"),
  "content-type": fc.constantFrom("application/json", "text/event-stream", "text/plain", ""),
  "content-encoding": fc.constantFrom("", "gzip", "identity"),
  "retry-after": headerValue,
  "request-id": headerValue,
  "x-request-id": headerValue,
});
const bodyArbitrary = fc.oneof(
  fc.uint8Array({ maxLength: 3000 }).map((bytes) => Buffer.from(bytes)),
  fc
    .constantFrom(
      `data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":3}}}\n\n`,
      `{"error":{"type":"insufficient_quota","message":"${SECRET}"}}`,
      `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low ${SECRET}"}}`,
      `{"model":"m","usage":{"input_tokens":1,"output_tokens":2}}`,
      "data: [DONE]\n\n",
    )
    .map((text) => Buffer.from(text)),
);
const messageArbitrary = fc.oneof(
  fc.record({
    kind: fc.constant("headers" as const),
    headers: headersArbitrary,
    auth: fc.record({
      // Set by keygate's own Check: a keystore id, never a secret.
      client_id: fc.constantFrom("acme", ""),
      auth_mode: fc.constantFrom("known", "internal", "byo", "anonymous", ""),
    }),
    endOfStream: fc.boolean(),
    details: fc.constantFrom(
      "via_upstream",
      "via_upstream",
      "local_rate_limited",
      "ext_authz_denied",
    ),
  }),
  fc.record({ kind: fc.constant("body" as const), body: bodyArbitrary, endOfStream: fc.boolean() }),
  fc.record({
    kind: fc.constant("garbage" as const),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 50 }),
  }),
);

type Generated = typeof messageArbitrary extends fc.Arbitrary<infer T> ? T : never;

function encode(message: Generated, observability: boolean): Buffer {
  if (message.kind === "garbage") return Buffer.from(message.bytes);
  if (message.kind === "body")
    return serializeProcessingRequest({
      response_body: { body: message.body, end_of_stream: message.endOfStream },
      observability_mode: observability,
    });
  return serializeProcessingRequest({
    observability_mode: observability,
    response_headers: {
      headers: {
        headers: Object.entries(message.headers)
          .filter(([, value]) => value !== "")
          .map(([key, value]) => ({ key, raw_value: Buffer.from(value) })),
      },
      end_of_stream: message.endOfStream,
    },
    metadata_context: { filter_metadata: { [NAMESPACE]: stringStruct(message.auth) } },
    attributes: {
      "envoy.filters.http.ext_proc": stringStruct({ "response.code_details": message.details }),
    },
  });
}

// The time a message may take is pinned where the work is (usage-reader.test.ts: the
// largest JSON and SSE inputs); timing every message here measured the shared machine.
test("arbitrary message sequences: one matching answer each (none in observability mode), WireError or nothing thrown", (t) => {
  const logs: string[] = [];
  const logger = createLogger(
    "debug",
    new Writable({
      write(chunk, _encoding, done) {
        logs.push(String(chunk));
        done();
      },
    }),
  );
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(messageArbitrary, { minLength: 1, maxLength: 8 }),
      (observability, messages) => {
        let reports = 0;
        const handler = createProcessService({
          usage: { record: () => reports++ },
          logger,
        });
        const sent: Buffer[] = [];
        const call: StreamCall = { send: (framed) => sent.push(framed), end: () => {} };
        const listener = handler(call);
        for (const message of messages) {
          const before = sent.length;
          try {
            listener.onMessage(encode(message, observability));
          } catch (error) {
            t.true(error instanceof WireError, String(error));
            t.is(sent.length, before);
            continue;
          }
          if (message.kind === "garbage") {
            t.true(sent.length - before <= 1);
            continue;
          }
          if (observability) {
            t.is(sent.length, before, "Envoy ignores answers in observability mode: none sent");
            continue;
          }
          t.is(sent.length - before, 1, "exactly one answer");
          const answer = deserializeProcessingResponse(
            (sent.at(-1) as Buffer).subarray(GRPC_PREFIX_BYTES),
          );
          const expected = message.kind === "headers" ? "response_headers" : "response_body";
          t.true(
            answer.response === expected || answer.response === "immediate_response",
            String(answer.response),
          );
          const immediate = answer.immediate_response as { body: Buffer } | undefined;
          if (immediate !== undefined) t.false(immediate.body.toString("latin1").includes(SECRET));
        }
        listener.onClose?.();
        listener.onClose?.();
        // Usage is the observing filter's business only; the answering one never counts it.
        t.true(reports <= (observability ? 1 : 0), "usage reported at most once");
      },
    ),
    { numRuns: 400 },
  );
  t.false(logs.join("").includes("sk-ant-api03-secret"), "nothing secret logged");
});

test("a stream's kind is set by its first message: a later one from the other filter is refused", (t) => {
  for (const first of [false, true]) {
    const handler = createProcessService({
      usage: { record: () => {} },
      logger: createLogger("silent"),
    });
    const sent: Buffer[] = [];
    const listener = handler({ send: (framed) => sent.push(framed), end: () => {} });
    const headers = (observability: boolean) =>
      serializeProcessingRequest({
        observability_mode: observability,
        response_headers: {
          headers: { headers: [{ key: ":status", raw_value: Buffer.from("429") }] },
        },
        metadata_context: {
          filter_metadata: { [NAMESPACE]: stringStruct({ client_id: "acme", auth_mode: "known" }) },
        },
      });
    listener.onMessage(headers(first));
    const error = t.throws(() =>
      listener.onMessage(
        serializeProcessingRequest({
          observability_mode: !first,
          response_body: { body: Buffer.from("{}"), end_of_stream: true },
        }),
      ),
    );
    t.true(error instanceof WireError);
    t.is(sent.length, first ? 0 : 1, "only the first message was answered, if at all");
  }
});
