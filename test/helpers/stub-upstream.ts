/**
 * A stand-in for Apollo, the service behind Envoy: an HTTP server on 127.0.0.1 that
 * records every request exactly as it arrived (after Envoy applied keygate's header
 * mutations) and answers 200 with a JSON echo of it. E2E tests assert on `requests` to
 * see what the upstream saw, and that denied requests never reached it.
 */
import { createServer, type IncomingHttpHeaders } from "node:http";
import { listenOnLoopback } from "./loopback-server.js";

export interface RecordedRequest {
  readonly method: string;
  /** Path with query string, as the upstream received it (after any prefix_rewrite). */
  readonly path: string;
  /** Lower-case header names, as node parses them. */
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export interface StubUpstream {
  readonly port: number;
  /** Every request received so far, oldest first. */
  readonly requests: readonly RecordedRequest[];
  close(): Promise<void>;
}

/** Starts the stub on an ephemeral port. */
export async function startStubUpstream(): Promise<StubUpstream> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const recorded: RecordedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      };
      requests.push(recorded);
      const payload = JSON.stringify(recorded);
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(payload),
      });
      res.end(payload);
    });
  });
  const { port, close } = await listenOnLoopback(server);
  return { port, requests, close };
}
