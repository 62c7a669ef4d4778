/**
 * Bidirectional-streaming gRPC calls over one HTTP/2 stream, for Envoy's ext_proc
 * (ExternalProcessor/Process): the peer sends many length-prefixed messages, split and
 * joined across DATA frames in any way, and the handler answers each as it likes. The
 * unary path (grpc-server.ts readMessage) stays separate: it reads exactly one message
 * and is benchmarked (issue 9); this one never waits for the end of the request.
 *
 * Each message is capped by maxReceiveBytes (its declared length is refused before its
 * bytes arrive), compressed messages are refused, and a handler that throws ends the call
 * with a gRPC status instead of escaping into Node's HTTP/2 code.
 */
import http2 from "node:http2";
import { GrpcStatus } from "./grpc-status.js";
import { GRPC_PREFIX_BYTES } from "./protobuf-wire.js";

/** One open call, as a handler sees it. */
export interface StreamCall {
  /** Writes one framed message (WireWriter.framed()); ignored once the call is over. */
  send(framed: Buffer): void;
  /** Ends the call with grpc-status 0, or with `code` and `message`. */
  end(code?: number, message?: string): void;
}

/** What a handler does with a call's messages; every method is optional but onMessage. */
export interface StreamListener {
  /** One request message's bytes (a view: copy what must outlive the call). */
  onMessage(message: Buffer): void;
  /** The peer sent all it will; the server ends the call with status 0 after this returns. */
  onHalfClose?(): void;
  /** The call is over, whoever ended it (a reset stream included): release per-call state. */
  onClose?(): void;
}

/** A streaming method: called once per call. Errors it or its listener throw become statuses. */
export type StreamHandler = (call: StreamCall) => StreamListener;

/** A protocol failure the frame reader reports instead of a message. */
export interface FrameError {
  readonly code: number;
  readonly message: string;
}

/**
 * Splits a byte stream into gRPC messages. Chunks are kept as they arrive and joined
 * only when a message spans several (once per message, never per chunk).
 * Returns the function to feed each chunk to; it stops after the first error.
 */
export function createFrameReader(
  maxReceiveBytes: number,
  onMessage: (message: Buffer) => void,
  onError: (error: FrameError) => void,
): (chunk: Buffer) => void {
  let chunks: Buffer[] = [];
  let buffered = 0;
  let failed = false;

  const take = (bytes: number): Buffer => {
    if (bytes === 0) return Buffer.alloc(0);
    const first = chunks[0] as Buffer;
    let taken: Buffer;
    if (first.length >= bytes) {
      taken = first.subarray(0, bytes);
      if (first.length === bytes) chunks.shift();
      else chunks[0] = first.subarray(bytes);
    } else {
      const joined = Buffer.concat(chunks, buffered);
      taken = joined.subarray(0, bytes);
      chunks = joined.length > bytes ? [joined.subarray(bytes)] : [];
    }
    buffered -= bytes;
    return taken;
  };

  return (chunk) => {
    if (failed || chunk.length === 0) return;
    chunks.push(chunk);
    buffered += chunk.length;
    while (!failed && buffered >= GRPC_PREFIX_BYTES) {
      const prefix = take(GRPC_PREFIX_BYTES);
      const length = prefix.readUInt32BE(1);
      if (prefix[0] !== 0) {
        failed = true;
        onError({
          code: GrpcStatus.UNIMPLEMENTED,
          message: "compressed messages are not accepted",
        });
        return;
      }
      if (length > maxReceiveBytes) {
        failed = true;
        onError({
          code: GrpcStatus.RESOURCE_EXHAUSTED,
          message: `request message larger than the limit of ${maxReceiveBytes} bytes`,
        });
        return;
      }
      if (buffered < length) {
        // Put the prefix back until the whole message is here: a view, so cheap, and no
        // state is kept between chunks beyond the chunks themselves.
        chunks.unshift(prefix);
        buffered += GRPC_PREFIX_BYTES;
        return;
      }
      onMessage(take(length));
    }
  };
}

const { HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE, NGHTTP2_NO_ERROR } = http2.constants;

function grpcMessage(text: string): string {
  return encodeURIComponent(text.slice(0, 200));
}

/** The StreamCall over one HTTP/2 stream; headers go out with the first message or the end. */
function streamCall(stream: http2.ServerHttp2Stream): StreamCall & { readonly over: boolean } {
  let over = false;
  const open = () => {
    if (stream.headersSent) return;
    stream.respond(
      { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc" },
      { waitForTrailers: true },
    );
  };
  return {
    get over() {
      return over || stream.destroyed || stream.closed;
    },
    send(framed) {
      if (this.over) return;
      open();
      stream.write(framed);
    },
    end(code = GrpcStatus.OK, message = "") {
      if (this.over) return;
      over = true;
      const trailers: Record<string, string> = { "grpc-status": String(code) };
      if (message !== "") trailers["grpc-message"] = grpcMessage(message);
      if (stream.headersSent) {
        stream.once("wantTrailers", () => stream.sendTrailers(trailers));
        stream.end();
        return;
      }
      stream.respond(
        {
          [HTTP2_HEADER_STATUS]: 200,
          [HTTP2_HEADER_CONTENT_TYPE]: "application/grpc",
          ...trailers,
        },
        { endStream: true },
      );
      // Ended before the peer half-closed (the usage filter's streams, at the end of what
      // keygate needs): RST_STREAM NO_ERROR after the status asks the peer to stop sending
      // without error (RFC 9113 section 8.1). Otherwise Envoy resets the stream with
      // INTERNAL_ERROR, and Node builds an error with a stack trace for each. (Not after
      // trailers that follow messages: Node can send the reset before them.)
      if (!stream.readableEnded) stream.close(NGHTTP2_NO_ERROR);
    },
  };
}

/**
 * Runs a streaming call on an HTTP/2 stream: frames in, the handler's messages out.
 * `statusOf` turns what a handler throws into a status (grpc-server.ts owns that rule).
 */
export function runStreamingCall(
  stream: http2.ServerHttp2Stream,
  handler: StreamHandler,
  maxReceiveBytes: number,
  statusOf: (error: unknown) => [code: number, message: string],
): void {
  const call = streamCall(stream);
  let listener: StreamListener | undefined;
  const guarded = (work: () => void) => {
    try {
      work();
    } catch (error) {
      call.end(...statusOf(error));
    }
  };
  guarded(() => {
    listener = handler(call);
  });
  const read = createFrameReader(
    maxReceiveBytes,
    (message) => guarded(() => listener?.onMessage(message)),
    (error) => call.end(error.code, error.message),
  );
  stream.on("data", (chunk: Buffer) => {
    if (!call.over) read(chunk);
  });
  stream.once("end", () => {
    if (call.over) return;
    guarded(() => listener?.onHalfClose?.());
    call.end();
  });
  stream.once("close", () => {
    const closing = listener;
    listener = undefined;
    try {
      closing?.onClose?.();
    } catch {
      // The call is over; nothing is left to tell the peer.
    }
  });
}
