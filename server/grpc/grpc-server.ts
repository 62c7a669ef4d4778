/**
 * The gRPC server: unary Authorization/Check and grpc.health.v1 (Check and Watch) over
 * Node's own HTTP/2, which is all Envoy's ext_authz and health checks speak. A general
 * gRPC framework costs more per call than keygate's whole decision (issue 9:
 * bench/results/envoy.md), so this module does the protocol's few steps itself:
 *   - POST with content-type application/grpc to a known path, else 415 / UNIMPLEMENTED;
 *   - one uncompressed length-prefixed message, at most maxReceiveBytes (declared
 *     lengths are checked before the body arrives: RESOURCE_EXHAUSTED);
 *   - the answer as one framed message and the grpc-status trailer, or a trailers-only
 *     error. Handlers get and return protobuf bytes (check-attributes.ts,
 *     check-response-wire.ts). Nothing a peer sends can throw out of here.
 * One bidirectional-streaming method, ext_proc's Process (response path, issue 11), runs
 * through grpc-stream.ts when a `process` handler is given.
 */
import http2 from "node:http2";
import type { Socket } from "node:net";
import type { SecureContextOptions } from "node:tls";
import type { ListenAddress } from "../config.js";
import { GrpcError, GrpcStatus } from "./grpc-status.js";
import { runStreamingCall, type StreamHandler } from "./grpc-stream.js";
import {
  AUTHORIZATION_SERVICE,
  createHealthService,
  HEALTH_CHECK_PATH,
  HEALTH_WATCH_PATH,
} from "./health-service.js";
import { GRPC_PREFIX_BYTES, WireError } from "./protobuf-wire.js";

export const CHECK_PATH = `/${AUTHORIZATION_SERVICE}/Check`;
/** Envoy's ext_proc method (envoy/service/ext_proc/v3/external_processor.proto). */
export const PROCESS_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process";

/** A unary method: the request message's bytes in, the framed response out. */
export type UnaryHandler = (message: Buffer) => Buffer | Promise<Buffer>;

/** TLS material and its reloads (tls-credentials.ts). */
export interface ServerTls {
  readonly mutual: boolean;
  current(): SecureContextOptions;
  /** Calls `listener` with the new material after each reload. */
  onUpdate(listener: (options: SecureContextOptions) => void): void;
}

export interface GrpcServerOptions {
  readonly address: ListenAddress;
  readonly maxReceiveBytes: number;
  readonly check: UnaryHandler;
  /**
   * Whether Checks can be decided now (a keystore generation is loaded); health Checks
   * ask it live. `setServing(false)` overrides it, e.g. for a drain.
   */
  readonly ready?: () => boolean;
  /** TLS or mutual TLS; plaintext when absent. */
  readonly tls?: ServerTls;
  /**
   * ext_proc's bidirectional Process method (server/extproc/process-service.ts); the
   * method answers UNIMPLEMENTED when absent. Each message is capped by maxReceiveBytes.
   */
  readonly process?: StreamHandler;
}

export interface RunningGrpcServer {
  /** Bound TCP port (0 for unix sockets). */
  readonly port: number;
  /**
   * On: health follows `ready`. Off: NOT_SERVING whatever `ready` says. Call it again
   * when what `ready` reads changes, so that Watches hear of it.
   */
  setServing(serving: boolean): void;
  /** Stops accepting calls, lets in-flight ones finish, forces closed after the timeout. */
  drain(timeoutMs: number): Promise<void>;
}

/**
 * HTTP/2 settings. A 16 MiB stream window lets Envoy send a 4 MiB body without waiting
 * for WINDOW_UPDATEs (a third of the CPU per large Check, bench/h2-window-probe.ts);
 * the data is read as it arrives, and each message is capped by maxReceiveBytes.
 */
const STREAM_WINDOW_BYTES = 16 * 1024 * 1024;

const { HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE, NGHTTP2_NO_ERROR } = http2.constants;

const RESPONSE_HEADERS = Object.freeze({
  [HTTP2_HEADER_STATUS]: 200,
  [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
});
const OK_TRAILERS = Object.freeze({ "grpc-status": "0" });

/** grpc-message is percent-encoded (the gRPC HTTP/2 spec). */
function grpcMessage(text: string): string {
  return encodeURIComponent(text.slice(0, 200));
}

function sendError(stream: http2.ServerHttp2Stream, code: number, message: string): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.sendTrailers({ "grpc-status": String(code), "grpc-message": grpcMessage(message) });
    return;
  }
  stream.respond(
    { ...RESPONSE_HEADERS, "grpc-status": String(code), "grpc-message": grpcMessage(message) },
    { endStream: true },
  );
  // Tell the peer to stop sending what is left of the request.
  stream.close(NGHTTP2_NO_ERROR);
}

/** Sends the response headers; grpc-status 0 follows as a trailer when the stream ends. */
function openResponse(stream: http2.ServerHttp2Stream): void {
  stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
}

function sendMessage(stream: http2.ServerHttp2Stream, framed: Buffer): void {
  if (stream.destroyed || stream.closed) return;
  openResponse(stream);
  stream.end(framed);
}

/**
 * Errors a handler may throw: its own GrpcError, a request that is not protobuf
 * (WireError, from any method's decoding) as INVALID_ARGUMENT, anything else as INTERNAL.
 */
function statusOf(error: unknown): [code: number, message: string] {
  if (error instanceof GrpcError) return [error.code, error.message];
  if (error instanceof WireError)
    return [GrpcStatus.INVALID_ARGUMENT, `request is not protobuf: ${error.message}`];
  return [GrpcStatus.INTERNAL, "internal error"];
}

/**
 * Reads one gRPC message from the request stream and hands its bytes to `use`; answers
 * the protocol errors itself.
 */
function readMessage(
  stream: http2.ServerHttp2Stream,
  maxReceiveBytes: number,
  use: (message: Buffer) => void,
): void {
  const chunks: Buffer[] = [];
  let received = 0;
  let declared = -1;
  let refused = false;
  const refuse = (code: number, message: string) => {
    refused = true;
    chunks.length = 0;
    sendError(stream, code, message);
  };
  stream.on("data", (chunk: Buffer) => {
    if (refused) return;
    chunks.push(chunk);
    received += chunk.length;
    if (declared < 0 && received >= GRPC_PREFIX_BYTES) {
      const first = chunks[0] as Buffer;
      declared = (first.length >= GRPC_PREFIX_BYTES ? first : Buffer.concat(chunks)).readUInt32BE(
        1,
      );
    }
    if (declared > maxReceiveBytes || received > GRPC_PREFIX_BYTES + maxReceiveBytes)
      refuse(
        GrpcStatus.RESOURCE_EXHAUSTED,
        `request message larger than the limit of ${maxReceiveBytes} bytes`,
      );
  });
  stream.once("end", () => {
    if (refused) return;
    const whole = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
    if (whole.length < GRPC_PREFIX_BYTES) return refuse(GrpcStatus.INTERNAL, "no request message");
    if (whole[0] !== 0)
      return refuse(GrpcStatus.UNIMPLEMENTED, "compressed messages are not accepted");
    const length = whole.readUInt32BE(1);
    if (whole.length !== GRPC_PREFIX_BYTES + length)
      return refuse(GrpcStatus.INTERNAL, "expected exactly one request message");
    use(whole.subarray(GRPC_PREFIX_BYTES));
  });
}

function runUnary(stream: http2.ServerHttp2Stream, handler: UnaryHandler, message: Buffer): void {
  let answer: Buffer | Promise<Buffer>;
  try {
    answer = handler(message);
  } catch (error) {
    sendError(stream, ...statusOf(error));
    return;
  }
  if (answer instanceof Promise)
    answer.then(
      (framed) => sendMessage(stream, framed),
      (error: unknown) => sendError(stream, ...statusOf(error)),
    );
  else sendMessage(stream, answer);
}

function listenOptions(address: ListenAddress): { path: string } | { port: number; host: string } {
  return address.kind === "unix"
    ? { path: address.path }
    : { port: address.port, host: address.host };
}

/**
 * One call answered per turn of the event loop. Node's HTTP/2 session writes what was
 * answered at the start of the next turn, so answering every call of one read first made
 * Envoy wait for the whole batch, and Envoy and keygate took turns instead of working at
 * once: 0.6x the Go reference's throughput through Envoy. One per turn, each answer
 * leaves while the next call is decided: 0.9x, for ~3% more CPU. Returns `answerSoon`.
 */
function answerQueue(): (call: () => void) => void {
  const arrived: (() => void)[] = [];
  let answering = false;
  const answerNext = () => {
    arrived.shift()?.();
    if (arrived.length > 0) setImmediate(answerNext);
    else answering = false;
  };
  return (call) => {
    arrived.push(call);
    if (answering) return;
    answering = true;
    setImmediate(answerNext);
  };
}

/** Routes each new stream: a unary method, a health Watch, or a refusal. */
function streamRouter(
  options: GrpcServerOptions,
  health: ReturnType<typeof createHealthService>,
  watches: Set<http2.ServerHttp2Stream>,
): (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void {
  const unary = new Map<string, UnaryHandler>([
    [CHECK_PATH, options.check],
    [HEALTH_CHECK_PATH, (message) => health.check(message)],
  ]);
  const answerSoon = answerQueue();
  const watch = (stream: http2.ServerHttp2Stream, message: Buffer) => {
    if (stream.destroyed || stream.closed) return;
    openResponse(stream);
    watches.add(stream);
    const stop = health.watch(message, (framed) => stream.write(framed));
    stream.once("close", () => {
      stop();
      watches.delete(stream);
    });
  };
  return (stream, headers) => {
    // A peer's reset or a broken connection surfaces here; the call is simply over.
    stream.on("error", () => {});
    const contentType = String(headers[HTTP2_HEADER_CONTENT_TYPE] ?? "");
    if (headers[":method"] !== "POST" || !contentType.startsWith("application/grpc")) {
      stream.respond({ [HTTP2_HEADER_STATUS]: 415 }, { endStream: true });
      stream.close(NGHTTP2_NO_ERROR);
      return;
    }
    const encoding = headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") {
      sendError(stream, GrpcStatus.UNIMPLEMENTED, `grpc-encoding ${encoding} is not accepted`);
      return;
    }
    const path = headers[":path"] ?? "";
    const handler = unary.get(path);
    if (handler !== undefined) {
      readMessage(stream, options.maxReceiveBytes, (message) =>
        answerSoon(() => {
          // Envoy gave up on it (its timeout reset the stream): nobody would read the answer.
          if (!stream.destroyed && !stream.closed) runUnary(stream, handler, message);
        }),
      );
    } else if (path === PROCESS_PATH && options.process !== undefined) {
      runStreamingCall(stream, options.process, options.maxReceiveBytes, statusOf);
    } else if (path === HEALTH_WATCH_PATH) {
      readMessage(stream, options.maxReceiveBytes, (message) => watch(stream, message));
    } else {
      sendError(stream, GrpcStatus.UNIMPLEMENTED, `unknown method ${path}`);
    }
  };
}

/** The HTTP/2 server with keygate's settings, plaintext or TLS (reloaded in place). */
function createHttp2Server(options: GrpcServerOptions): http2.Http2Server {
  const settings = { initialWindowSize: STREAM_WINDOW_BYTES };
  const server =
    options.tls === undefined
      ? http2.createServer({ settings })
      : http2.createSecureServer({
          ...options.tls.current(),
          settings,
          requestCert: options.tls.mutual,
          rejectUnauthorized: options.tls.mutual,
        });
  options.tls?.onUpdate((material) => {
    (server as http2.Http2SecureServer).setSecureContext(material);
  });
  // Node's HTTP/2 server leaves Nagle's algorithm on; a small answer written while an
  // earlier one is unacknowledged could then wait for the peer's delayed ACK. gRPC
  // servers (grpc-go through Go's defaults) turn it off.
  server.on("connection", (socket: Socket) => socket.setNoDelay(true));
  // A broken connection ends its session; it never stops the server.
  server.on("sessionError", () => {});
  return server;
}

/**
 * Starts the gRPC server.
 * @throws Error when the address cannot be bound.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const health = createHealthService(options.ready ?? (() => true));
  const watches = new Set<http2.ServerHttp2Stream>();
  const server = createHttp2Server(options);
  server.on("stream", streamRouter(options, health, watches));
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    // The connection window too: the default 64 KiB would pace every large body.
    session.setLocalWindowSize(STREAM_WINDOW_BYTES);
    session.once("close", () => sessions.delete(session));
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listenOptions(options.address), () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address();
  const port = bound !== null && typeof bound === "object" ? bound.port : 0;

  return {
    port,
    setServing: (serving) => health.setServing(serving),
    drain(timeoutMs) {
      health.setServing(false);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          for (const session of sessions) session.destroy();
        }, timeoutMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        for (const stream of watches) if (!stream.closed) stream.end();
        for (const session of sessions) session.close();
      });
    },
  };
}
