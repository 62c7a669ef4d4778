/**
 * A stand-in for a WebSocket service behind Envoy: an HTTP server on 127.0.0.1 that
 * accepts every upgrade (101 with the RFC 6455 accept key), records the upgrade request
 * as it arrived (after keygate's header mutations), and then echoes whatever bytes the
 * client sends. It does not parse WebSocket frames: the tests only need to see that the
 * tunnel carries bytes both ways.
 */
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import type { Socket } from "node:net";
import { listenOnLoopback } from "./loopback-server.js";
import type { RecordedRequest, StubUpstream } from "./stub-upstream.js";

/** RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing. */
const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export function websocketAccept(key: string): string {
  return createHash("sha1").update(`${key}${WEBSOCKET_GUID}`).digest("base64");
}

/** Starts the upstream on an ephemeral port; plain (non-upgrade) requests get a 426. */
export async function startWebSocketUpstream(): Promise<StubUpstream> {
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    requests.push({
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      body: "",
    });
    res.writeHead(426, { upgrade: "websocket", "content-length": "0" });
    res.end();
  });
  server.on("upgrade", (req, socket: Socket, head: Buffer) => {
    requests.push({
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      body: "",
    });
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.write(
      [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        `Sec-WebSocket-Accept: ${websocketAccept(String(req.headers["sec-websocket-key"] ?? ""))}`,
        "",
        "",
      ].join("\r\n"),
    );
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  const listening = await listenOnLoopback(server);
  return {
    port: listening.port,
    requests,
    close: () => {
      // Upgraded sockets are no longer the HTTP server's to close.
      for (const socket of sockets) socket.destroy();
      return listening.close();
    },
  };
}
