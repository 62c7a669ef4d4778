/**
 * keygate's own gRPC layer (server/grpc/grpc-server.ts: unary gRPC over node:http2)
 * against the real server, spoken byte for byte by a raw HTTP/2 client where grpc-js
 * would hide the framing, and by grpc-js where a standard client is the point. Pins the
 * protocol steps the server does itself: the 5-byte message prefix, trailers and
 * trailers-only errors, 415 for what is not gRPC, the receive limit answered before the
 * body arrives, grpc.health.v1 Check and Watch (through a drain), and a server that
 * survives resets, dropped sockets, 200 concurrent streams and a 4 MiB body.
 */
import http2 from "node:http2";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import type { ServiceError } from "@grpc/grpc-js";
import test from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import { checkRequest, type RequestSpec } from "../helpers/check-request.js";
import { deserializeCheckResponse, serializeCheckRequest } from "../helpers/envoy-protos.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";

const { NGHTTP2_CANCEL } = http2.constants;

const CHECK = "/envoy.service.auth.v3.Authorization/Check";
const HEALTH_CHECK = "/grpc.health.v1.Health/Check";
const HEALTH_WATCH = "/grpc.health.v1.Health/Watch";
const AUTHORIZATION = "envoy.service.auth.v3.Authorization";

/** The small receive limit (config.ts: at least 65536). */
const SMALL_LIMIT = 64 * 1024;

const TOKENS = { alpha: "kg-proto-alpha-token", beta: "kg-proto-beta-token" };
const UPSTREAM = { alpha: "sk-ant-proto-alpha", beta: "sk-ant-proto-beta" };
const ENV = { KG_PROTO_ALPHA: UPSTREAM.alpha, KG_PROTO_BETA: UPSTREAM.beta };
const KEYSTORE = `version: 1
clients:
  - id: alpha
    tokens:
      - sha256: ${hashToken(TOKENS.alpha)}
    upstream_key: env:KG_PROTO_ALPHA
  - id: beta
    tokens:
      - sha256: ${hashToken(TOKENS.beta)}
    upstream_key: env:KG_PROTO_BETA
`;

const chat = {
  model: "claude-sonnet-4",
  max_tokens: 64,
  messages: [{ role: "user", content: "hi" }],
};

/** The default server (8 MiB receive limit) and one with the smallest limit allowed. */
let kg: TestKeygate;
let small: TestKeygate;
const sessions = new Set<http2.ClientHttp2Session>();

test.before(async () => {
  [kg, small] = await Promise.all([
    startTestKeygate({ keystore: KEYSTORE, env: ENV }),
    startTestKeygate({
      keystore: KEYSTORE,
      env: { ...ENV, KEYGATE_GRPC_MAX_RECEIVE_BYTES: String(SMALL_LIMIT) },
    }),
  ]);
});

test.after.always(async () => {
  for (const session of sessions) session.destroy();
  await Promise.all([kg?.stop(), small?.stop()]);
});

/** A new HTTP/2 connection to a server, closed by test.after.always at the latest. */
function connect(server: TestKeygate, socket?: net.Socket): http2.ClientHttp2Session {
  const session = http2.connect(
    `http://127.0.0.1:${server.running.grpcPort}`,
    socket === undefined ? {} : { createConnection: () => socket },
  );
  session.on("error", () => {});
  sessions.add(session);
  session.once("close", () => sessions.delete(session));
  return session;
}

/** One gRPC message: the compressed flag, the 4-byte big-endian length, the bytes. */
function frame(message: Buffer, options: { flag?: number; declared?: number } = {}): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = options.flag ?? 0;
  prefix.writeUInt32BE(options.declared ?? message.length, 1);
  return Buffer.concat([prefix, message]);
}

function checkBytes(spec: RequestSpec): Buffer {
  return serializeCheckRequest(checkRequest(spec));
}

/** A CheckRequest for `token` in the Authorization header. */
function bearer(token: string, extra: RequestSpec = {}): Buffer {
  return checkBytes({
    json: chat,
    ...extra,
    headers: { authorization: `Bearer ${token}`, ...extra.headers },
  });
}

/** grpc.health.v1.HealthCheckRequest { service } (field 1, a string; empty is no field). */
function healthRequest(service: string): Buffer {
  const name = Buffer.from(service, "utf8");
  if (name.length === 0) return Buffer.alloc(0);
  if (name.length > 127) throw new Error("service name too long for this helper");
  return Buffer.concat([Buffer.from([0x0a, name.length]), name]);
}

const SERVING = Buffer.from([0x08, 0x01]);
const NOT_SERVING = Buffer.from([0x08, 0x02]);
const SERVICE_UNKNOWN = Buffer.from([0x08, 0x03]);

interface RawCall {
  readonly path: string;
  readonly method?: string;
  /** null sends no content-type. */
  readonly contentType?: string | null;
  readonly headers?: http2.OutgoingHttpHeaders;
  /** Written one write each, in order. */
  readonly send?: readonly Buffer[];
  /** Wait this long between writes, so each piece is its own DATA frame. */
  readonly pauseMs?: number;
  /** false: leave the request side open after the writes (the default ends it). */
  readonly end?: boolean;
  readonly timeoutMs?: number;
}

interface RawAnswer {
  readonly status: number;
  readonly headers: http2.IncomingHttpHeaders;
  readonly data: Buffer;
  readonly trailers: http2.IncomingHttpHeaders | null;
  /** From the trailers, or from the headers of a trailers-only answer. */
  readonly grpcStatus: string | undefined;
  readonly grpcMessage: string | undefined;
  /** The request side had not been ended when the answer was complete. */
  readonly requestStillOpen: boolean;
}

/**
 * Sends one request on `session` (headers, then the pieces) and collects the answer:
 * :status, headers, data, trailers. Rejects after the timeout, so no test can hang; the
 * stream is cancelled once the answer is in if the server left it open.
 */
function rawCall(session: http2.ClientHttp2Session, call: RawCall): Promise<RawAnswer> {
  const timeoutMs = call.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const headers: http2.OutgoingHttpHeaders = {
      ":method": call.method ?? "POST",
      ":path": call.path,
      te: "trailers",
      ...call.headers,
    };
    if (call.contentType !== null) headers["content-type"] = call.contentType ?? "application/grpc";
    const stream = session.request(headers, { endStream: false });
    let response: http2.IncomingHttpHeaders | undefined;
    let trailers: http2.IncomingHttpHeaders | null = null;
    const data: Buffer[] = [];
    let settled = false;
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const requestStillOpen = !stream.writableEnded;
      if (!stream.closed) stream.close(NGHTTP2_CANCEL);
      if (error !== undefined) return reject(error);
      if (response === undefined)
        return reject(new Error(`stream closed without a response (RST code ${stream.rstCode})`));
      const source = trailers ?? response;
      const grpcStatus = source["grpc-status"] as string | undefined;
      const grpcMessage = source["grpc-message"] as string | undefined;
      resolve({
        status: Number(response[":status"]),
        headers: response,
        data: Buffer.concat(data),
        trailers,
        grpcStatus,
        grpcMessage,
        requestStillOpen,
      });
    };
    const timer = setTimeout(
      () => finish(new Error(`no complete answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    stream.on("response", (received) => {
      response = received;
    });
    stream.on("trailers", (received) => {
      trailers = received;
    });
    stream.on("data", (chunk: Buffer) => data.push(chunk));
    stream.on("end", () => finish());
    stream.on("close", () => finish());
    // A write racing the server's reset is not the answer; the answer is what arrived.
    stream.on("error", () => {});
    void (async () => {
      for (const [index, piece] of (call.send ?? []).entries()) {
        if (index > 0 && call.pauseMs !== undefined) await sleep(call.pauseMs);
        if (settled || stream.destroyed) return;
        stream.write(piece);
      }
      if (call.end !== false && !settled && !stream.destroyed) stream.end();
    })();
  });
}

/** The one framed message in a unary answer, checked against its prefix. */
function onlyMessage(
  t: { is: (a: unknown, b: unknown, m?: string) => void },
  data: Buffer,
): Buffer {
  t.is(data.length >= 5, true, "a framed message");
  t.is(data[0], 0, "uncompressed");
  t.is(data.readUInt32BE(1), data.length - 5, "the prefix's length is the rest of the data");
  return data.subarray(5);
}

interface DecodedResponse {
  status?: { code?: number };
  ok_response?: { headers?: Array<{ header: { key: string; value: string } }> };
  denied_response?: { status?: { code?: string | number }; body?: string };
}

function decodeCheck(bytes: Buffer): DecodedResponse {
  return deserializeCheckResponse(bytes) as DecodedResponse;
}

function headersSet(response: DecodedResponse): Record<string, string> {
  return Object.fromEntries(
    (response.ok_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
  );
}

/** A Check of `token` over raw HTTP/2 expecting an allow; returns its ok_response headers. */
async function rawAllowedCheck(
  session: http2.ClientHttp2Session,
  token: string,
): Promise<Record<string, string>> {
  const answer = await rawCall(session, { path: CHECK, send: [frame(bearer(token))] });
  if (answer.grpcStatus !== "0") throw new Error(`grpc-status ${answer.grpcStatus}`);
  const data = answer.data;
  if (data.readUInt32BE(1) !== data.length - 5) throw new Error("bad message prefix");
  const response = decodeCheck(data.subarray(5));
  if (response.status?.code !== undefined && response.status.code !== 0)
    throw new Error(`status.code ${response.status.code}`);
  return headersSet(response);
}

// --- 1. a normal Check ---------------------------------------------------------------

test("a Check over raw HTTP/2: 200, application/grpc, one framed CheckResponse, grpc-status 0 in trailers", async (t) => {
  const session = connect(kg);
  const answer = await rawCall(session, { path: CHECK, send: [frame(bearer(TOKENS.alpha))] });
  t.is(answer.status, 200);
  t.is(answer.headers["content-type"], "application/grpc");
  t.is(answer.headers["grpc-status"], undefined, "not trailers-only");
  t.not(answer.trailers, null);
  t.is(answer.trailers?.["grpc-status"], "0");
  const response = decodeCheck(onlyMessage(t, answer.data));
  t.is(response.status?.code ?? 0, 0);
  t.deepEqual(headersSet(response), { "x-api-key": UPSTREAM.alpha, "x-client-id": "alpha" });
  session.close();
});

test("a denial is a CheckResponse too (grpc-status 0; the decision is inside)", async (t) => {
  const session = connect(kg);
  const answer = await rawCall(session, {
    path: CHECK,
    send: [frame(bearer("kg-not-a-known-token"))],
  });
  t.is(answer.grpcStatus, "0");
  const response = decodeCheck(onlyMessage(t, answer.data));
  t.is(response.status?.code, 16);
  t.is(response.ok_response, undefined);
  t.regex(response.denied_response?.body ?? "", /UNAUTHORIZED/);
  session.close();
});

test("application/grpc+proto is gRPC too, and a message split across DATA frames is reassembled", async (t) => {
  const session = connect(kg);
  const framed = frame(bearer(TOKENS.beta));
  // The prefix itself split 2 + 3, then the message in two halves.
  const half = 5 + Math.floor((framed.length - 5) / 2);
  const answer = await rawCall(session, {
    path: CHECK,
    contentType: "application/grpc+proto",
    send: [
      framed.subarray(0, 2),
      framed.subarray(2, 5),
      framed.subarray(5, half),
      framed.subarray(half),
    ],
    pauseMs: 20,
  });
  t.is(answer.grpcStatus, "0");
  t.deepEqual(headersSet(decodeCheck(onlyMessage(t, answer.data))), {
    "x-api-key": UPSTREAM.beta,
    "x-client-id": "beta",
  });
  session.close();
});

test("grpc-js, the standard client, gets the same allow", async (t) => {
  const response = await kg.client.check(
    checkRequest({ json: chat, headers: { authorization: `Bearer ${TOKENS.alpha}` } }),
  );
  t.is(response.status.code, 0);
  t.deepEqual(
    Object.fromEntries(
      (response.ok_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
    ),
    { "x-api-key": UPSTREAM.alpha, "x-client-id": "alpha" },
  );
});

// --- 2. protocol errors -----------------------------------------------------------------

/** A trailers-only error: :status 200, application/grpc, grpc-status in the headers, no data. */
function assertTrailersOnly(
  t: {
    is: (a: unknown, b: unknown, m?: string) => void;
    deepEqual: (a: unknown, b: unknown, m?: string) => void;
  },
  answer: RawAnswer,
  code: number,
): void {
  t.is(answer.status, 200);
  t.is(answer.headers["content-type"], "application/grpc");
  t.is(answer.headers["grpc-status"], String(code), "grpc-status in the (only) headers");
  t.is(answer.trailers, null, "no separate trailers");
  t.is(answer.data.length, 0, "no message");
}

test("an unknown method path → trailers-only UNIMPLEMENTED (12), the path in grpc-message", async (t) => {
  const session = connect(kg);
  for (const path of [
    "/envoy.service.auth.v3.Authorization/Nope",
    "/envoy.service.auth.v2.Authorization/Check",
    "/",
  ]) {
    const answer = await rawCall(session, { path, send: [frame(bearer(TOKENS.alpha))] });
    assertTrailersOnly(t, answer, 12);
    t.true(decodeURIComponent(answer.grpcMessage ?? "").includes(path), path);
  }
  session.close();
});

test("not POST, or a content-type that is not application/grpc → HTTP 415, no gRPC answer", async (t) => {
  const session = connect(kg);
  const cases: RawCall[] = [
    { path: CHECK, method: "GET", send: [] },
    { path: CHECK, method: "PUT", send: [frame(bearer(TOKENS.alpha))] },
    { path: CHECK, contentType: "application/json", send: [frame(bearer(TOKENS.alpha))] },
    { path: CHECK, contentType: "text/plain", send: [frame(bearer(TOKENS.alpha))] },
    { path: CHECK, contentType: null, send: [frame(bearer(TOKENS.alpha))] },
    { path: HEALTH_CHECK, contentType: "application/x-protobuf", send: [frame(healthRequest(""))] },
  ];
  for (const call of cases) {
    const label = `${call.method ?? "POST"} ${call.path} content-type ${String(call.contentType)}`;
    const answer = await rawCall(session, call);
    t.is(answer.status, 415, label);
    t.is(answer.data.length, 0, label);
    t.is(answer.grpcStatus, undefined, label);
  }
  session.close();
});

test("grpc-encoding gzip → UNIMPLEMENTED (12); identity is accepted", async (t) => {
  const session = connect(kg);
  const gzip = await rawCall(session, {
    path: CHECK,
    headers: { "grpc-encoding": "gzip" },
    send: [frame(bearer(TOKENS.alpha))],
  });
  assertTrailersOnly(t, gzip, 12);
  const identity = await rawCall(session, {
    path: CHECK,
    headers: { "grpc-encoding": "identity" },
    send: [frame(bearer(TOKENS.alpha))],
  });
  t.is(identity.grpcStatus, "0");
  t.is(headersSet(decodeCheck(onlyMessage(t, identity.data)))["x-client-id"], "alpha");
  session.close();
});

test("a message with the compressed flag set → UNIMPLEMENTED (12)", async (t) => {
  const session = connect(kg);
  const answer = await rawCall(session, {
    path: CHECK,
    send: [frame(bearer(TOKENS.alpha), { flag: 1 })],
  });
  assertTrailersOnly(t, answer, 12);
  session.close();
});

test("no message at all (an empty request body) → INTERNAL (13)", async (t) => {
  const session = connect(kg);
  for (const path of [CHECK, HEALTH_CHECK]) {
    const answer = await rawCall(session, { path, send: [] });
    assertTrailersOnly(t, answer, 13);
  }
  // Fewer bytes than a prefix is no message either.
  const stub = await rawCall(session, { path: CHECK, send: [Buffer.from([0, 0, 0])] });
  assertTrailersOnly(t, stub, 13);
  session.close();
});

test("two messages in one unary call → INTERNAL (13), not an answer to the first", async (t) => {
  const session = connect(kg);
  const one = frame(bearer(TOKENS.alpha));
  const together = await rawCall(session, { path: CHECK, send: [Buffer.concat([one, one])] });
  assertTrailersOnly(t, together, 13);
  const apart = await rawCall(session, { path: CHECK, send: [one, one], pauseMs: 20 });
  assertTrailersOnly(t, apart, 13);
  // A stray byte after the message is not one message either.
  const trailing = await rawCall(session, {
    path: CHECK,
    send: [Buffer.concat([one, Buffer.from([0])])],
  });
  assertTrailersOnly(t, trailing, 13);
  session.close();
});

test("a truncated message (the prefix promises more than is sent) → INTERNAL (13)", async (t) => {
  const session = connect(kg);
  const message = bearer(TOKENS.alpha);
  const answer = await rawCall(session, {
    path: CHECK,
    send: [frame(message.subarray(0, message.length - 10), { declared: message.length })],
  });
  assertTrailersOnly(t, answer, 13);
  session.close();
});

test("bytes that are not protobuf → INVALID_ARGUMENT (3)", async (t) => {
  const session = connect(kg);
  for (const bytes of [
    Buffer.from([0x0a, 0x05, 0x01]), // field 1, length 5, one byte
    Buffer.from([0x00]), // field number 0
    Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // endless varint
    Buffer.from([0x0b]), // wire type 3 (group start)
  ]) {
    const answer = await rawCall(session, { path: CHECK, send: [frame(bytes)] });
    assertTrailersOnly(t, answer, 3);
  }
  session.close();
});

test(`a declared length above the limit → RESOURCE_EXHAUSTED (8) before the request is finished`, async (t) => {
  const session = connect(small);
  // Only the prefix, then the request is left open: the answer must come anyway.
  const prefixOnly = await rawCall(session, {
    path: CHECK,
    send: [frame(Buffer.alloc(0), { declared: SMALL_LIMIT + 1 })],
    end: false,
  });
  assertTrailersOnly(t, prefixOnly, 8);
  t.true(prefixOnly.requestStillOpen, "answered while the request was still open");
  // The prefix across two DATA frames, a huge length: the same.
  const split = frame(Buffer.alloc(0), { declared: 0xffffffff });
  const splitPrefix = await rawCall(session, {
    path: CHECK,
    send: [split.subarray(0, 2), split.subarray(2)],
    pauseMs: 20,
    end: false,
  });
  assertTrailersOnly(t, splitPrefix, 8);
  t.true(splitPrefix.requestStillOpen);
  // The Health service is held to the same limit.
  const health = await rawCall(session, {
    path: HEALTH_CHECK,
    send: [frame(Buffer.alloc(0), { declared: SMALL_LIMIT + 1 })],
    end: false,
  });
  assertTrailersOnly(t, health, 8);
  session.close();
});

/** A CheckRequest for alpha whose serialized length is exactly `target`. */
function checkOfLength(target: number): Buffer {
  const build = (padding: number, id: string) =>
    bearer(TOKENS.alpha, {
      headers: { "x-request-id": id },
      json: { ...chat, messages: [{ role: "user", content: "x".repeat(padding) }] },
    });
  // Near a varint width step one byte of content moves the length by two; a request id
  // one byte longer gets past it.
  for (const id of ["req-limit", "req-limit-", "req-limit-x"]) {
    let padding = target - build(0, id).length;
    for (let attempt = 0; attempt < 8 && padding >= 0; attempt++) {
      const bytes = build(padding, id);
      if (bytes.length === target) return bytes;
      padding += target - bytes.length;
    }
  }
  throw new Error(`no CheckRequest of exactly ${target} bytes`);
}

test("the receive limit is inclusive: a message of exactly the limit is allowed, one byte more is refused", async (t) => {
  const session = connect(small);
  const atLimit = checkOfLength(SMALL_LIMIT);
  const allowed = await rawCall(session, { path: CHECK, send: [frame(atLimit)] });
  t.is(allowed.grpcStatus, "0");
  t.is(headersSet(decodeCheck(onlyMessage(t, allowed.data)))["x-client-id"], "alpha");
  const over = checkOfLength(SMALL_LIMIT + 1);
  const refused = await rawCall(session, { path: CHECK, send: [frame(over)] });
  assertTrailersOnly(t, refused, 8);
  session.close();
});

test("the limit exceeded by the bytes under a lying small prefix is refused, never an allow", async (t) => {
  const session = connect(small);
  // A valid, allowed CheckRequest with its true length, then more bytes than the limit.
  const valid = bearer(TOKENS.alpha);
  const lying = Buffer.concat([frame(valid), Buffer.alloc(SMALL_LIMIT + 1024, 0x0a)]);
  const answer = await rawCall(session, { path: CHECK, send: [lying] });
  t.is(answer.data.length, 0, "no CheckResponse");
  t.not(answer.grpcStatus, "0");
  assertTrailersOnly(t, answer, 8);
  // The same excess in many small DATA frames.
  const pieces = [frame(valid)];
  for (let sent = 0; sent <= SMALL_LIMIT; sent += 8 * 1024)
    pieces.push(Buffer.alloc(8 * 1024, 0x0a));
  const trickle = await rawCall(session, { path: CHECK, send: pieces, pauseMs: 1 });
  assertTrailersOnly(t, trickle, 8);
  session.close();
});

test("grpc-js sees RESOURCE_EXHAUSTED (8) for a message above the limit", async (t) => {
  const big = checkRequest({
    json: { ...chat, messages: [{ role: "user", content: "x".repeat(SMALL_LIMIT) }] },
    headers: { authorization: `Bearer ${TOKENS.alpha}` },
  });
  const error = await t.throwsAsync<ServiceError>(small.client.check(big));
  t.is(error?.code, 8);
});

// --- 3. grpc.health.v1 --------------------------------------------------------------------

test("Health/Check: '' and the Authorization service are SERVING (08 01); another name is NOT_FOUND (5)", async (t) => {
  const session = connect(kg);
  for (const service of ["", AUTHORIZATION]) {
    const answer = await rawCall(session, {
      path: HEALTH_CHECK,
      send: [frame(healthRequest(service))],
    });
    t.is(answer.status, 200);
    t.is(answer.headers["content-type"], "application/grpc");
    t.is(answer.trailers?.["grpc-status"], "0", service);
    t.deepEqual(onlyMessage(t, answer.data), SERVING, service);
  }
  const unknown = await rawCall(session, {
    path: HEALTH_CHECK,
    send: [frame(healthRequest("no.such.Service"))],
  });
  assertTrailersOnly(t, unknown, 5);
  session.close();
  t.is(await kg.client.health(""), "SERVING");
  t.is(await kg.client.health(AUTHORIZATION), "SERVING");
  const error = await t.throwsAsync<ServiceError>(kg.client.health("no.such.Service"));
  t.is(error?.code, 5);
});

/** A Health/Watch in progress: its messages as they come, and how it ended. */
interface Watch {
  readonly response: Promise<http2.IncomingHttpHeaders>;
  /** Resolves once `count` messages have arrived (rejects after the timeout). */
  messages(count: number, timeoutMs?: number): Promise<Buffer[]>;
  /** The trailers, once the server ends the stream (rejects after the timeout). */
  ended(timeoutMs?: number): Promise<http2.IncomingHttpHeaders | null>;
  cancel(): void;
}

function watch(session: http2.ClientHttp2Session, service: string): Watch {
  const stream = session.request({
    ":method": "POST",
    ":path": HEALTH_WATCH,
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.on("error", () => {});
  const received: Buffer[] = [];
  let pending = Buffer.alloc(0);
  let trailers: http2.IncomingHttpHeaders | null = null;
  let done = false;
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const listener of listeners) listener();
  };
  stream.on("data", (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
      received.push(pending.subarray(5, 5 + pending.readUInt32BE(1)));
      pending = pending.subarray(5 + pending.readUInt32BE(1));
    }
    notify();
  });
  stream.on("trailers", (received) => {
    trailers = received;
  });
  const onDone = () => {
    done = true;
    notify();
  };
  stream.on("end", onDone);
  stream.on("close", onDone);
  const response = new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
    stream.once("response", resolve);
    stream.once("close", () => reject(new Error("closed without a response")));
  });
  response.catch(() => {});
  const until = <T>(ready: () => T | undefined, what: string, timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const value = ready();
        if (value === undefined) return;
        cleanup();
        resolve(value);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`watch: ${what} did not happen within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  stream.end(frame(healthRequest(service)));
  return {
    response,
    messages: (count, timeoutMs = 10_000) =>
      until(
        () => (received.length >= count ? received.slice(0, count) : undefined),
        `${count} messages`,
        timeoutMs,
      ),
    ended: (timeoutMs = 10_000) =>
      until(() => (done ? { trailers } : undefined), "the end", timeoutMs).then((r) => r.trailers),
    cancel() {
      if (!stream.closed) stream.close(NGHTTP2_CANCEL);
    },
  };
}

test("Health/Watch of an unknown service streams SERVICE_UNKNOWN (08 03) and stays open", async (t) => {
  const session = connect(kg);
  const watcher = watch(session, "no.such.Service");
  const headers = await watcher.response;
  t.is(Number(headers[":status"]), 200);
  t.deepEqual(await watcher.messages(1), [SERVICE_UNKNOWN]);
  await t.throwsAsync(watcher.ended(200), { message: /did not happen/ });
  watcher.cancel();
  session.close();
});

test("Health/Watch streams SERVING first; a drain sends NOT_SERVING and ends the stream with grpc-status 0", async (t) => {
  const draining = await startTestKeygate({ keystore: KEYSTORE, env: ENV });
  let stopped = false;
  try {
    const session = connect(draining);
    const whole = watch(session, "");
    const authorization = watch(session, AUTHORIZATION);
    for (const watcher of [whole, authorization]) {
      const headers = await watcher.response;
      t.is(Number(headers[":status"]), 200);
      t.is(headers["content-type"], "application/grpc");
      t.deepEqual(await watcher.messages(1), [SERVING]);
    }
    // Still open while serving: nothing more, no end.
    await t.throwsAsync(whole.ended(100), { message: /did not happen/ });
    const stopping = draining.stop();
    stopped = true;
    for (const watcher of [whole, authorization]) {
      t.deepEqual(await watcher.messages(2), [SERVING, NOT_SERVING]);
      const trailers = await watcher.ended();
      t.is(trailers?.["grpc-status"], "0");
    }
    await stopping;
  } finally {
    if (!stopped) await draining.stop();
  }
});

// --- 4. robustness ----------------------------------------------------------------------

test("streams reset mid-body do not hurt the connection or the server", async (t) => {
  const session = connect(kg);
  const framed = frame(bearer(TOKENS.alpha));
  for (let round = 0; round < 20; round++) {
    const stream = session.request({
      ":method": "POST",
      ":path": CHECK,
      "content-type": "application/grpc",
    });
    stream.on("error", () => {});
    stream.write(framed.subarray(0, Math.floor(framed.length / 2)));
    await sleep(round % 4 === 0 ? 10 : 0);
    stream.close(NGHTTP2_CANCEL);
  }
  // A reset after the whole request, while a 4 MiB body is read across turns.
  for (let round = 0; round < 3; round++) {
    const stream = session.request({
      ":method": "POST",
      ":path": CHECK,
      "content-type": "application/grpc",
    });
    stream.on("error", () => {});
    stream.end(
      frame(bearer(TOKENS.alpha, { json: { ...chat, padding: "y".repeat(4 * 1024 * 1024) } })),
    );
    await sleep(round * 5);
    stream.close(NGHTTP2_CANCEL);
  }
  t.deepEqual(await rawAllowedCheck(session, TOKENS.alpha), {
    "x-api-key": UPSTREAM.alpha,
    "x-client-id": "alpha",
  });
  session.close();
  const fresh = connect(kg);
  t.is((await rawAllowedCheck(fresh, TOKENS.beta))["x-client-id"], "beta");
  fresh.close();
});

test("a socket destroyed mid-request does not hurt the server", async (t) => {
  for (let round = 0; round < 5; round++) {
    const socket = net.connect(kg.running.grpcPort, "127.0.0.1");
    socket.on("error", () => {});
    const session = connect(kg, socket);
    await new Promise<void>((resolve, reject) => {
      session.once("connect", () => resolve());
      session.once("error", reject);
    });
    const stream = session.request({
      ":method": "POST",
      ":path": round % 2 === 0 ? CHECK : HEALTH_WATCH,
      "content-type": "application/grpc",
    });
    stream.on("error", () => {});
    const framed = frame(bearer(TOKENS.alpha));
    stream.write(framed.subarray(0, Math.floor(framed.length / 2)));
    await sleep(20);
    socket.destroy();
  }
  const session = connect(kg);
  t.deepEqual(await rawAllowedCheck(session, TOKENS.alpha), {
    "x-api-key": UPSTREAM.alpha,
    "x-client-id": "alpha",
  });
  session.close();
  t.is(await kg.client.health(""), "SERVING");
});

test("200 concurrent Checks on one connection each get their own answer", async (t) => {
  const session = connect(kg);
  const calls = Array.from({ length: 200 }, (_, index) => {
    const kind = (["alpha", "beta", "unknown"] as const)[index % 3] ?? "unknown";
    const token = kind === "unknown" ? `kg-proto-unknown-${index}` : TOKENS[kind];
    const bytes = bearer(token, { headers: { "x-request-id": `req-proto-${index}` } });
    return { kind, index, answer: rawCall(session, { path: CHECK, send: [frame(bytes)] }) };
  });
  let allowed = 0;
  for (const call of calls) {
    const answer = await call.answer;
    t.is(answer.grpcStatus, "0", `call ${call.index}`);
    const data = answer.data;
    t.is(data.readUInt32BE(1), data.length - 5, `call ${call.index}`);
    const response = decodeCheck(data.subarray(5));
    if (call.kind === "unknown") {
      t.is(response.status?.code, 16, `call ${call.index}`);
      const body = JSON.parse(response.denied_response?.body ?? "{}") as { request_id?: string };
      t.is(body.request_id, `req-proto-${call.index}`);
    } else {
      t.deepEqual(
        headersSet(response),
        { "x-api-key": UPSTREAM[call.kind], "x-client-id": call.kind },
        `call ${call.index}`,
      );
      allowed++;
    }
  }
  t.is(allowed, 134);
  session.close();
});

// --- 5. a large body ----------------------------------------------------------------------

test("a 4 MiB body over raw HTTP/2 is read and answered (credential in the body, after the padding)", async (t) => {
  const session = connect(kg);
  const content = "z".repeat(4 * 1024 * 1024);
  // The token comes last in the JSON: the whole body must be read to find it.
  const bytes = checkBytes({
    body: `{"model":"claude-sonnet-4","messages":[{"role":"user","content":"${content}"}],"api_key":"${TOKENS.beta}"}`,
    headers: { "content-type": "application/json" },
  });
  t.true(bytes.length > 4 * 1024 * 1024);
  const answer = await rawCall(session, { path: CHECK, send: [frame(bytes)], timeoutMs: 30_000 });
  t.is(answer.status, 200);
  t.is(answer.trailers?.["grpc-status"], "0");
  t.deepEqual(headersSet(decodeCheck(onlyMessage(t, answer.data))), {
    "x-api-key": UPSTREAM.beta,
    "x-client-id": "beta",
  });
  session.close();
});
