/**
 * ext_proc's Process over real gRPC: keygate's HTTP/2 server with the response-path service,
 * called by grpc-js with Envoy's protos (as Envoy would: one stream per response, messages
 * in the order Envoy sends them), and by raw HTTP/2 for what a broken or hostile peer sends.
 * Two kinds of stream, as envoy.yaml's two filters open them: the provider-errors filter's
 * (each message waits for its answer) and the usage filter's (observability_mode: sent
 * without waiting, never answered). Usage goes to a sink in the test that collects it.
 */
import http2 from "node:http2";
import { Writable } from "node:stream";
import { type ClientDuplexStream, credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import anyTest, { type TestFn } from "ava";
import { createProcessService } from "../../server/extproc/process-service.js";
import {
  PROCESS_PATH,
  type RunningGrpcServer,
  startGrpcServer,
} from "../../server/grpc/grpc-server.js";
import { GRPC_PREFIX_BYTES } from "../../server/grpc/protobuf-wire.js";
import { createLogger } from "../../server/logger.js";
import type { TokenUsage } from "../../server/usage/token-usage.js";
import {
  externalProcessorService,
  serializeProcessingRequest,
  stringStruct,
} from "../helpers/ext-proc-protos.js";

const MAX_RECEIVE = 64 * 1024;
const NAMESPACE = "envoy.filters.http.ext_authz";
const SECRET_BODY = "invalid x-api-key sk-ant-api03-secret-in-provider-body";

interface Context {
  server: RunningGrpcServer;
  recorded: { clientId: string; usage: TokenUsage }[];
  /** What onUsageMissing was told, in order. */
  missing: string[];
  logs: string[];
  target: string;
}

const test = anyTest as TestFn<Context>;

test.before(async (t) => {
  const recorded: Context["recorded"] = [];
  const missing: string[] = [];
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
  const server = await startGrpcServer({
    address: { kind: "tcp", host: "127.0.0.1", port: 0 },
    maxReceiveBytes: MAX_RECEIVE,
    check: () => {
      throw new Error("no Checks in this test");
    },
    process: createProcessService({
      usage: { record: (clientId, usage) => recorded.push({ clientId, usage }) },
      onUsageMissing: (reason) => missing.push(reason),
      logger,
      now: () => Date.parse("2026-03-01T12:00:00Z"),
    }),
  });
  Object.assign(t.context, {
    server,
    recorded,
    missing,
    logs,
    target: `127.0.0.1:${server.port}`,
  });
});

test.after.always(async (t) => {
  await t.context.server?.drain(1000);
});

type Message = Record<string, unknown>;

/**
 * One Process call through grpc-js: send each request, collect the answers until the end.
 * `observe`: as the usage filter does, each request is marked observability_mode and sent
 * without waiting for an answer.
 */
async function exchange(
  target: string,
  requests: Message[],
  { halfClose = true, observe = false }: { halfClose?: boolean; observe?: boolean } = {},
): Promise<{ answers: Message[]; code: number }> {
  const Processor = makeGenericClientConstructor(externalProcessorService(), "ExternalProcessor");
  const client = new Processor(target, credentials.createInsecure()) as unknown as {
    Process(): ClientDuplexStream<Message, Message>;
    close(): void;
  };
  const call = client.Process();
  const answers: Message[] = [];
  const ended = new Promise<number>((resolve) => {
    call.on("data", (answer: Message) => answers.push(answer));
    call.on("status", (status: { code: number }) => resolve(status.code));
    call.on("error", () => {});
  });
  for (const request of requests) {
    const before = answers.length;
    if (observe) {
      call.write({ ...request, observability_mode: true });
      continue;
    }
    // Like Envoy, wait for each answer before sending the next message.
    call.write(request);
    while (answers.length === before) await new Promise((resolve) => setTimeout(resolve, 2));
  }
  if (halfClose) call.end();
  // Without the client's half-close, only keygate can end the call: give up after 2 s.
  const code = await Promise.race([
    ended,
    new Promise<number>((resolve) => setTimeout(() => resolve(-1), 2000)),
  ]);
  call.cancel();
  client.close();
  return { answers, code };
}

function metadata(fields: Record<string, string>): Message {
  return { filter_metadata: { [NAMESPACE]: stringStruct(fields) } };
}

function responseHeaders(
  headers: Record<string, string>,
  auth: Record<string, string>,
  endOfStream = false,
  details = "via_upstream",
): Message {
  return {
    response_headers: {
      headers: {
        headers: Object.entries(headers).map(([key, value]) => ({
          key,
          raw_value: Buffer.from(value),
        })),
      },
      end_of_stream: endOfStream,
    },
    metadata_context: metadata(auth),
    attributes: {
      "envoy.filters.http.ext_proc": stringStruct({
        "request.id": "envoy-req-1",
        "response.code_details": details,
      }),
    },
  };
}

function body(text: string, endOfStream: boolean): Message {
  return { response_body: { body: Buffer.from(text), end_of_stream: endOfStream } };
}

const KNOWN = { client_id: "acme", auth_mode: "known" };

test.serial("a held key's 401: an immediate AUTH_ERROR, then the call ends OK", async (t) => {
  const { answers, code } = await exchange(t.context.target, [
    responseHeaders(
      { ":status": "401", "request-id": "req_1", "content-type": "application/json" },
      KNOWN,
    ),
  ]);
  t.is(code, 0);
  t.is(answers[0]?.response, "immediate_response");
  const immediate = answers[0]?.immediate_response as {
    status: { code: string };
    body: Buffer;
    details: string;
  };
  t.is(immediate.status.code, "BadGateway");
  t.like(JSON.parse(immediate.body.toString()), {
    type: "AUTH_ERROR",
    request_id: "envoy-req-1",
    provider_request_id: "req_1",
  });
  t.is(immediate.details, "keygate_provider_error");
});

test.serial("a held key's 429: its body is buffered (mode override), then judged", async (t) => {
  const quota = JSON.stringify({
    error: { type: "insufficient_quota", code: "insufficient_quota", message: SECRET_BODY },
  });
  const { answers } = await exchange(t.context.target, [
    responseHeaders(
      { ":status": "429", "x-request-id": "req_2", "content-type": "application/json" },
      KNOWN,
    ),
    body(quota, true),
  ]);
  t.is(answers[0]?.response, "response_headers");
  t.like(answers[0]?.mode_override, { response_body_mode: "BUFFERED" });
  const immediate = answers[1]?.immediate_response as { body: Buffer };
  t.like(JSON.parse(immediate.body.toString()), { type: "BILLING", provider_request_id: "req_2" });
  t.false(immediate.body.toString().includes("sk-ant"));
});

test.serial("a buffered error body is judged whole, even when trailers follow it", async (t) => {
  const quota = JSON.stringify({
    error: { type: "insufficient_quota", code: "insufficient_quota" },
  });
  const { answers } = await exchange(t.context.target, [
    responseHeaders({ ":status": "429", "content-type": "application/json" }, KNOWN),
    // BUFFERED sends the whole body in one message; end_of_stream is false before trailers.
    body(quota, false),
  ]);
  const immediate = answers[1]?.immediate_response as { body: Buffer } | undefined;
  t.like(JSON.parse(immediate?.body.toString() ?? "{}"), { type: "BILLING" });
});

test.serial("bring-your-own and anonymous responses: CONTINUE, nothing changed", async (t) => {
  for (const auth of [{ auth_mode: "byo" }, { auth_mode: "anonymous" }, {}] as Record<
    string,
    string
  >[]) {
    const { answers, code } = await exchange(
      t.context.target,
      [responseHeaders({ ":status": "401", "content-type": "application/json" }, auth)],
      { halfClose: false },
    );
    t.is(answers[0]?.response, "response_headers");
    t.is(answers[0]?.mode_override, undefined, "no body asked for");
    t.is(
      (answers[0]?.response_headers as { response?: { header_mutation?: unknown } } | undefined)
        ?.response?.header_mutation,
      undefined,
    );
    t.is(code, 0, "nothing more wanted: keygate ended the call");
  }
});

test.serial(
  "a held key's success: the provider-errors filter lets it through at once",
  async (t) => {
    const before = t.context.recorded.length;
    const { answers, code } = await exchange(
      t.context.target,
      [responseHeaders({ ":status": "200", "content-type": "text/event-stream" }, KNOWN)],
      { halfClose: false },
    );
    t.deepEqual(
      answers.map((a) => a.response),
      ["response_headers"],
    );
    t.is(answers[0]?.mode_override, undefined, "its body is not asked for");
    t.is(code, 0, "ended after the headers' answer");
    t.is(t.context.recorded.length, before, "usage is the other filter's business");
  },
);

test.serial("the usage filter: keygate never answers, and ends the call once done", async (t) => {
  const byo = await exchange(
    t.context.target,
    [
      responseHeaders(
        { ":status": "200", "content-type": "text/event-stream" },
        { auth_mode: "byo" },
      ),
    ],
    { halfClose: false, observe: true },
  );
  t.is(byo.answers.length, 0);
  t.is(byo.code, 0, "nothing to count: ended at the headers, so Envoy sends no body");
  const failure = await exchange(
    t.context.target,
    [responseHeaders({ ":status": "401", "content-type": "application/json" }, KNOWN)],
    { halfClose: false, observe: true },
  );
  t.deepEqual(failure, { answers: [], code: 0 }, "a provider error has no usage to count");
  const streamed = await exchange(
    t.context.target,
    [
      responseHeaders(
        { ":status": "200", "content-type": "text/event-stream" },
        { client_id: "ops", auth_mode: "internal" },
      ),
      body('data: {"type":"message_delta","usage":{"output_tokens":2}}\n\n', false),
      body("", true),
    ],
    { halfClose: false, observe: true },
  );
  t.deepEqual(streamed, { answers: [], code: 0 }, "a body read to its end: ended after it");
  const open = await exchange(
    t.context.target,
    [
      responseHeaders(
        { ":status": "200", "content-type": "text/event-stream" },
        { client_id: "ops", auth_mode: "internal" },
      ),
    ],
    { halfClose: false, observe: true },
  );
  t.is(open.code, -1, "a body still to come: the call stays open");
});

test.serial("a streamed success: read as it passes, usage reported once at the end", async (t) => {
  const before = t.context.recorded.length;
  const events = [
    'data: {"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":9,"output_tokens":1}}}\n\n',
    'data: {"type":"message_delta","usage":{"output_tokens":4}}\n\n',
  ];
  const { answers } = await exchange(
    t.context.target,
    [
      responseHeaders(
        { ":status": "200", "content-type": "text/event-stream" },
        { client_id: "ops", auth_mode: "internal" },
      ),
      body(events[0]?.slice(0, 30) ?? "", false),
      body((events[0]?.slice(30) ?? "") + (events[1] ?? ""), false),
      body("", true),
    ],
    { observe: true },
  );
  t.is(answers.length, 0);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.deepEqual(t.context.recorded.slice(before), [
    {
      clientId: "ops",
      usage: {
        model: "claude-x",
        inputTokens: 9,
        outputTokens: 4,
        cacheReadTokens: 0,
        cacheWriteTokens: 0,
      },
    },
  ]);
});

test.serial("a gzip-encoded success is not read, and counted as missing usage", async (t) => {
  const before = t.context.missing.length;
  const { code } = await exchange(
    t.context.target,
    [
      responseHeaders(
        { ":status": "200", "content-type": "application/json", "content-encoding": "gzip" },
        KNOWN,
      ),
    ],
    { halfClose: false, observe: true },
  );
  t.is(code, 0, "ended at the headers: Envoy sends no body");
  t.deepEqual(t.context.missing.slice(before), ["encoded"]);
});

test.serial("a success that is neither JSON nor SSE is counted as missing usage", async (t) => {
  const before = t.context.missing.length;
  const { code } = await exchange(
    t.context.target,
    [responseHeaders({ ":status": "200", "content-type": "text/plain" }, KNOWN)],
    { halfClose: false, observe: true },
  );
  t.is(code, 0, "nothing to read: ended at the headers");
  t.deepEqual(t.context.missing.slice(before), ["not_found"]);
});

test.serial("a stream that never reports usage is counted as missing usage", async (t) => {
  const before = t.context.missing.length;
  const recordedBefore = t.context.recorded.length;
  // An OpenAI stream sent without stream_options.include_usage: no usage chunk.
  await exchange(
    t.context.target,
    [
      responseHeaders({ ":status": "200", "content-type": "text/event-stream" }, KNOWN),
      body('data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n', true),
    ],
    { observe: true },
  );
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.is(t.context.recorded.length, recordedBefore);
  t.deepEqual(t.context.missing.slice(before), ["not_found"]);
});

// ── Raw HTTP/2: what a broken or hostile peer sends ──────────────────────────────────

function frame(message: Buffer, flag = 0): Buffer {
  const prefix = Buffer.alloc(GRPC_PREFIX_BYTES);
  prefix[0] = flag;
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

interface RawResult {
  status: string | undefined;
  data: Buffer;
}

function rawCall(
  target: string,
  write: (stream: http2.ClientHttp2Stream) => void,
): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${target}`);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": PROCESS_PATH,
      "content-type": "application/grpc",
      te: "trailers",
    });
    const chunks: Buffer[] = [];
    let status: string | undefined;
    stream.on("response", (headers) => {
      if (headers["grpc-status"] !== undefined) status = String(headers["grpc-status"]);
    });
    stream.on("trailers", (trailers) => {
      status = String(trailers["grpc-status"]);
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("close", () => {
      session.close();
      resolve({ status, data: Buffer.concat(chunks) });
    });
    stream.on("error", () => {});
    write(stream);
  });
}

test.serial("messages split across DATA frames at every byte are read whole", async (t) => {
  const message = frame(
    serializeProcessingRequest(
      responseHeaders({ ":status": "200", "content-type": "text/plain" }, KNOWN),
    ),
  );
  const result = await rawCall(t.context.target, (stream) => {
    let at = 0;
    const next = () => {
      if (at >= message.length) return stream.end();
      stream.write(message.subarray(at, at + 1), next);
      at++;
    };
    next();
  });
  t.is(result.status, "0");
  t.true(result.data.length > GRPC_PREFIX_BYTES, "one answer came back");
});

test.serial("hostile frames end the call with a status, never the server", async (t) => {
  const oversize = Buffer.alloc(GRPC_PREFIX_BYTES);
  oversize.writeUInt32BE(MAX_RECEIVE + 1, 1);
  const cases: [string, Buffer, string][] = [
    ["compressed", frame(Buffer.from([0x1a, 0x00]), 1), "12"],
    ["declared beyond the cap", oversize, "8"],
    ["not protobuf", frame(Buffer.from([0xff, 0xff, 0xff])), "3"],
    ["no part", frame(Buffer.alloc(0)), "3"],
  ];
  for (const [name, bytes, status] of cases) {
    const result = await rawCall(t.context.target, (stream) => stream.end(bytes));
    t.is(result.status, status, name);
  }
  // Still serving.
  const { code } = await exchange(t.context.target, [
    responseHeaders({ ":status": "204" }, KNOWN, true),
  ]);
  t.is(code, 0);
});

test.serial(
  "a usage stream keygate ends early: its status, then RST_STREAM NO_ERROR (never an error reset)",
  async (t) => {
    // Without the reset Envoy, still sending, resets the stream itself with INTERNAL_ERROR.
    const session = http2.connect(`http://${t.context.target}`);
    const stream = session.request({
      ":method": "POST",
      ":path": PROCESS_PATH,
      "content-type": "application/grpc",
      te: "trailers",
    });
    let status: unknown;
    stream.on("response", (headers) => {
      status = headers["grpc-status"];
    });
    stream.on("error", () => {});
    stream.write(
      frame(
        serializeProcessingRequest({
          ...responseHeaders({ ":status": "200" }, { auth_mode: "byo" }),
          observability_mode: true,
        }),
      ),
    );
    // The client never half-closes, as Envoy's usage filter does not.
    const closed = await Promise.race([
      new Promise((resolve) => stream.once("close", () => resolve(true))),
      new Promise((resolve) => setTimeout(() => resolve(false), 2000)),
    ]);
    session.destroy();
    t.true(closed, "keygate closed the stream");
    t.is(status, "0");
    t.is(stream.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  },
);

test.serial("a stream reset mid-body still reports the usage read so far", async (t) => {
  const before = t.context.recorded.length;
  await rawCall(t.context.target, (stream) => {
    stream.write(
      frame(
        serializeProcessingRequest({
          ...responseHeaders({ ":status": "200", "content-type": "text/event-stream" }, KNOWN),
          observability_mode: true,
        }),
      ),
    );
    stream.write(
      frame(
        serializeProcessingRequest({
          ...body(
            'data: {"type":"message_start","message":{"model":"m","usage":{"input_tokens":5,"output_tokens":1}}}\n',
            false,
          ),
          observability_mode: true,
        }),
      ),
      () => setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), 50),
    );
  });
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.like(t.context.recorded.slice(before), [
    { clientId: "acme", usage: { inputTokens: 5, outputTokens: 1 } },
  ]);
});

test.serial("nothing logged carries the provider's body or a key", (t) => {
  const all = t.context.logs.join("");
  t.true(all.includes("provider error answered"));
  t.false(all.includes("sk-ant"));
});
