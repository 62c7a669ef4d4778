/**
 * A lean gRPC client for the Check method on bare node:http2, standing in for Envoy:
 * requests are encoded once up front and framed by hand, so the load generator spends
 * its core on sending, not on protobuf encoding or grpc-js bookkeeping, and the server
 * (the thing measured) is the bottleneck. Responses come back as raw message bytes.
 */
import http2 from "node:http2";

export const CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check";
/** ext_proc's streaming method, which the response section calls straight (not through this client). */
export const PROCESS_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process";

/** Call-level failure that is not a gRPC status (connection reset, stream error). */
export const TRANSPORT_ERROR = -1;

export interface CallResult {
  /** grpc-status from the trailers (or a trailers-only response); TRANSPORT_ERROR when none arrived. */
  readonly grpcStatus: number;
  /** The response message without the 5-byte gRPC frame header, or null. */
  readonly message: Buffer | null;
}

const REQUEST_HEADERS = {
  ":method": "POST",
  ":path": CHECK_PATH,
  "content-type": "application/grpc",
  te: "trailers",
} as const;

/** A length-prefixed, uncompressed gRPC frame around an encoded message. */
export function grpcFrame(message: Buffer): Buffer {
  const framed = Buffer.allocUnsafe(5 + message.length);
  framed[0] = 0;
  framed.writeUInt32BE(message.length, 1);
  message.copy(framed, 5);
  return framed;
}

function unframe(chunks: Buffer[]): Buffer | null {
  const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  if (body.length < 5) return null;
  return body.subarray(5, 5 + body.readUInt32BE(1));
}

function statusOf(headers: http2.IncomingHttpHeaders): number | undefined {
  const value = headers["grpc-status"];
  return typeof value === "string" ? Number(value) : undefined;
}

/** One HTTP/2 connection (what Envoy keeps per worker thread to the ext_authz cluster). */
export class GrpcH2Channel {
  private constructor(private readonly session: http2.ClientHttp2Session) {}

  /**
   * Connects to 127.0.0.1:port.
   * @throws Error when the connection fails or does not complete within timeoutMs.
   */
  static connect(port: number, timeoutMs = 5000): Promise<GrpcH2Channel> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      const timer = setTimeout(() => {
        session.destroy();
        reject(new Error(`HTTP/2 connect to 127.0.0.1:${port} timed out`));
      }, timeoutMs);
      session.once("connect", () => {
        clearTimeout(timer);
        session.removeListener("error", reject);
        // Later session errors surface as per-stream transport errors.
        session.on("error", () => undefined);
        resolve(new GrpcH2Channel(session));
      });
      session.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  /** Sends one framed request; `done` is called exactly once. */
  call(framed: Buffer, done: (result: CallResult) => void): void {
    let status: number | undefined;
    const chunks: Buffer[] = [];
    let finished = false;
    const finish = (result: CallResult) => {
      if (finished) return;
      finished = true;
      done(result);
    };
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.request(REQUEST_HEADERS);
    } catch {
      finish({ grpcStatus: TRANSPORT_ERROR, message: null });
      return;
    }
    stream.on("response", (headers) => {
      status = statusOf(headers) ?? status;
    });
    stream.on("trailers", (trailers) => {
      status = statusOf(trailers) ?? status;
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => finish({ grpcStatus: TRANSPORT_ERROR, message: null }));
    stream.on("close", () =>
      finish({
        grpcStatus: status ?? TRANSPORT_ERROR,
        message: chunks.length > 0 ? unframe(chunks) : null,
      }),
    );
    stream.end(framed);
  }

  /** One call as a promise. */
  callOnce(framed: Buffer): Promise<CallResult> {
    return new Promise((resolve) => this.call(framed, resolve));
  }

  close(): void {
    this.session.close();
  }
}
