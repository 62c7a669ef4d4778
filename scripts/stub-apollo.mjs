#!/usr/bin/env node
/**
 * A stand-in for Apollo (the LLM-backed service behind Envoy) for demos: it answers every
 * request with 200 and a JSON echo of what it received (method, path, headers, body), so
 * you can see what keygate changed: the credential gone, x-api-key swapped in, x-client-id
 * added. Dependency-free, so docker-compose can run it on a bare node:20-alpine image.
 *
 *   PORT (default 8000) and HOST (default 0.0.0.0: in a container it must be reachable
 *   from Envoy; `npm run stack` sets 127.0.0.1).
 *
 * It echoes headers, including the upstream key keygate swapped in: that is its purpose,
 * so never put it behind a keygate whose keystore holds real provider keys.
 */
import { createServer } from "node:http";

const DEFAULT_PORT = 8000;
const DEFAULT_HOST = "0.0.0.0";
/** Bodies above this are cut in the echo (the request is still read whole). */
const ECHO_BODY_LIMIT = 64 * 1024;

function parsePort(value) {
  if (value === undefined || value === "") return DEFAULT_PORT;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`stub-apollo: PORT must be 0-65535 (got ${JSON.stringify(value)})`);
    process.exit(1);
  }
  return port;
}

/** The request body for the echo: parsed when it is JSON, else as text. */
function echoBody(raw) {
  const text = raw.subarray(0, ECHO_BODY_LIMIT).toString("utf8");
  const suffix = raw.length > ECHO_BODY_LIMIT ? `… (${raw.length} bytes)` : "";
  if (suffix === "") {
    try {
      return JSON.parse(text);
    } catch {
      // Not JSON: echoed as text below.
    }
  }
  return `${text}${suffix}`;
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const echo = {
      stub: "apollo",
      method: req.method,
      path: req.url,
      headers: req.headers,
      body: echoBody(Buffer.concat(chunks)),
    };
    // Indented: the echo is read by people in a terminal, not by programs.
    const payload = `${JSON.stringify(echo, null, 2)}\n`;
    res.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(payload),
    });
    res.end(payload);
  });
});

function stop(signal) {
  console.log(`stub-apollo: ${signal}, stopping`);
  server.closeAllConnections();
  server.close(() => process.exit(0));
}
// As PID 1 in a container node gets no default signal handling: without these, `docker
// compose stop` would wait its full timeout and then kill.
process.once("SIGTERM", () => stop("SIGTERM"));
process.once("SIGINT", () => stop("SIGINT"));

const port = parsePort(process.env.PORT);
const host = process.env.HOST || DEFAULT_HOST;
server.on("error", (error) => {
  console.error(`stub-apollo: ${error.message}`);
  process.exit(1);
});
server.listen(port, host, () => {
  const address = server.address();
  console.log(`stub-apollo: listening on ${host}:${address.port}, echoing every request`);
});
