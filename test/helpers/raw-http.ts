/**
 * An HTTP/1.1 request written byte for byte on a TCP socket, for e2e tests that need what
 * fetch() cannot send: a header repeated on two lines, odd whitespace, exact framing.
 * One request per connection (`connection: close`); the reply is read to the end.
 */
import { connect } from "node:net";

export interface RawReply {
  readonly status: number;
  /** Lower-case names; a repeated header keeps its last value. */
  readonly headers: ReadonlyMap<string, string>;
  /** The body as received (de-chunked when Envoy sent it chunked). */
  readonly body: string;
}

function dechunk(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = data.indexOf("\r\n", at);
    if (lineEnd === -1) break;
    const size = Number.parseInt(data.subarray(at, lineEnd).toString("latin1"), 16);
    if (!Number.isFinite(size) || size === 0) break;
    parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/**
 * Sends `method path` with the header lines exactly as given (repeats kept) and the body
 * with a content-length, then reads the whole reply.
 * @throws Error when the connection fails or the reply is not HTTP.
 */
export function rawHttpRequest(
  port: number,
  method: string,
  target: string,
  headers: ReadonlyArray<readonly [string, string]>,
  body: Buffer = Buffer.alloc(0),
): Promise<RawReply> {
  const head = [
    `${method} ${target} HTTP/1.1`,
    "host: 127.0.0.1",
    ...headers.map(([name, value]) => `${name}: ${value}`),
    `content-length: ${body.length}`,
    "connection: close",
    "",
    "",
  ].join("\r\n");
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.setTimeout(10_000, () => socket.destroy(new Error("raw HTTP request timed out")));
    // write, not end: Envoy treats a half-closed downstream as gone and answers nothing.
    socket.on("connect", () => socket.write(Buffer.concat([Buffer.from(head, "latin1"), body])));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const data = Buffer.concat(chunks);
      const split = data.indexOf("\r\n\r\n");
      const lines = data
        .subarray(0, split === -1 ? data.length : split)
        .toString("latin1")
        .split("\r\n");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? "")?.[1]);
      if (!Number.isFinite(status)) {
        reject(new Error(`not an HTTP reply: ${data.subarray(0, 80).toString("latin1")}`));
        return;
      }
      const replyHeaders = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0)
          replyHeaders.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      const rawBody = split === -1 ? Buffer.alloc(0) : data.subarray(split + 4);
      const chunked = replyHeaders.get("transfer-encoding")?.toLowerCase() === "chunked";
      resolve({
        status,
        headers: replyHeaders,
        body: (chunked ? dechunk(rawBody) : rawBody).toString("utf8"),
      });
    });
  });
}
