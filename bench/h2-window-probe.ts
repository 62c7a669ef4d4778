/**
 * Why a 4 MiB Check costs ~20 ms of server CPU even on the floor (not part of
 * `npm run bench`; run it when the hostile section's transport cost needs explaining):
 *   node --import tsx bench/h2-window-probe.ts
 * A bare node:http2 server (no gRPC, no protobuf) receives the same 4 MiB body with
 * HTTP/2's default 64 KiB stream window, then with a 16 MiB window. With the default,
 * the body crosses in about a hundred window-sized round trips, each waking the server
 * from idle; grpc-js's server offers no option to raise it (1.14: only the client side
 * reads grpc-node.flow_control_window). Server CPU from /proc/<pid>/task/<tid>/schedstat.
 */
import { fork } from "node:child_process";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import { processRuntimeNs } from "./machine-load.js";

const BODY_BYTES = 4 * 1024 * 1024;
const LARGE_WINDOW = 16 * 1024 * 1024;
const CALLS = 30;

function serve(largeWindow: boolean): void {
  const server = http2.createServer(
    largeWindow ? { settings: { initialWindowSize: LARGE_WINDOW } } : {},
  );
  server.on("session", (session) => {
    if (largeWindow) session.setLocalWindowSize(LARGE_WINDOW);
  });
  server.on("stream", (stream) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      stream.respond({ ":status": 200 });
      stream.end(String(Buffer.concat(chunks).length));
    });
  });
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    process.send?.(typeof address === "object" && address ? address.port : 0);
  });
}

async function measure(window: "default" | "16 MiB"): Promise<void> {
  const child = fork(fileURLToPath(import.meta.url), ["serve", window === "16 MiB" ? "large" : ""]);
  const port = await new Promise<number>((resolve) =>
    child.once("message", (p) => resolve(Number(p))),
  );
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const body = Buffer.alloc(BODY_BYTES, 0x5b);
  const call = () =>
    new Promise<void>((resolve) => {
      const stream = session.request({ ":method": "POST", ":path": "/" });
      stream.on("data", () => undefined);
      stream.on("close", () => resolve());
      stream.end(body);
    });
  for (let i = 0; i < 5; i++) await call();
  const pid = child.pid ?? 0;
  const cpu0 = processRuntimeNs(pid) ?? 0;
  const wall0 = performance.now();
  for (let i = 0; i < CALLS; i++) await call();
  const cpuMs = ((processRuntimeNs(pid) ?? 0) - cpu0) / 1e6 / CALLS;
  const wallMs = (performance.now() - wall0) / CALLS;
  process.stdout.write(
    `${window.padEnd(7)} window: server CPU ${cpuMs.toFixed(2)} ms, wall ${wallMs.toFixed(2)} ms per 4 MiB body\n`,
  );
  session.close();
  child.kill();
}

if (process.argv[2] === "serve") {
  serve(process.argv[3] === "large");
} else {
  for (const window of ["default", "16 MiB", "default", "16 MiB"] as const) await measure(window);
}
