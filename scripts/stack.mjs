#!/usr/bin/env node
/**
 * `npm run stack`: the docker-compose stack without Docker. Starts, on 127.0.0.1,
 *
 *   the stub Apollo   scripts/stub-apollo.mjs                      :8000
 *   keygate           node dist/server/cli/main.js serve           :9191 (admin :9192)
 *   Envoy             envoy/envoy.yaml, addresses rewritten        :8080 (admin :9901)
 *
 * waits until each is ready (the stub answers, keygate's /readyz, Envoy LIVE and keygate
 * healthy in its cluster), then prints curl commands that show a key swap, a denial and
 * a bring-your-own key. Ctrl-C stops all three, front to back.
 *
 * The keystore is ./keystore.yaml (or KEYGATE_KEYSTORE). When the default one is missing
 * the stack writes a starter with `keygate keystore init` and shows the demo token, which
 * is printed once and never stored. Ports can be moved with STACK_HTTP_PORT,
 * STACK_ENVOY_ADMIN_PORT, STACK_KEYGATE_PORT, STACK_KEYGATE_ADMIN_PORT, STACK_APOLLO_PORT.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { ENVOY_INSTALL_HINT, findEnvoy, isExecutableFile } from "./find-envoy.mjs";
import { renderEnvoyConfig } from "./render-envoy-config.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const KEYGATE_MAIN = path.join(ROOT, "dist", "server", "cli", "main.js");
/** The server's Node flags, as in package.json's start script (server/node-flags.ts says why). */
const KEYGATE_NODE_FLAGS = ["--no-memory-reducer"];
const STUB_APOLLO = path.join(ROOT, "scripts", "stub-apollo.mjs");
const DEFAULT_KEYSTORE = "keystore.yaml";

const PORTS = {
  http: { variable: "STACK_HTTP_PORT", fallback: 8080 },
  envoyAdmin: { variable: "STACK_ENVOY_ADMIN_PORT", fallback: 9901 },
  keygate: { variable: "STACK_KEYGATE_PORT", fallback: 9191 },
  keygateAdmin: { variable: "STACK_KEYGATE_ADMIN_PORT", fallback: 9192 },
  apollo: { variable: "STACK_APOLLO_PORT", fallback: 8000 },
};

const PORT_VARIABLES = Object.values(PORTS)
  .map(({ variable, fallback }) => `${variable} (${fallback})`)
  .join(", ");

/**
 * The stub Apollo only echoes, so a real provider key would gain nothing and be printed to
 * the terminal: keygate gets this placeholder as ANTHROPIC_API_KEY, the variable the
 * starter keystore's commented-out `defaults.upstream_key: env:ANTHROPIC_API_KEY` names.
 */
const DEMO_UPSTREAM_KEY = "sk-ant-stack-demo-placeholder-not-a-real-key";
const DEMO_BYO_KEY = "sk-ant-api03-your-own-provider-key";
const UNKNOWN_TOKEN = "kg_this-token-is-not-in-the-keystore";
const DEMO_BODY = JSON.stringify({
  model: "claude-sonnet-4-5",
  max_tokens: 16,
  messages: [{ role: "user", content: "Hello" }],
});

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const POLL_INTERVAL_MS = 100;
const NAME_WIDTH = 7;

/** A problem the user can fix: printed as one line, exit 1. */
class StackError extends Error {}

function say(line = "") {
  process.stdout.write(`${line}\n`);
}

function readPorts(env) {
  const ports = {};
  for (const [name, { variable, fallback }] of Object.entries(PORTS)) {
    const raw = env[variable];
    const port = raw === undefined || raw === "" ? fallback : Number(raw);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new StackError(
        `${variable} must be a port number 1-65535 (got ${JSON.stringify(raw)})`,
      );
    }
    ports[name] = port;
  }
  return ports;
}

function requireBuild() {
  if (!existsSync(KEYGATE_MAIN)) {
    throw new StackError(
      `${path.relative(ROOT, KEYGATE_MAIN)} is missing: run \`npm ci\` (or \`npm run build\`) first`,
    );
  }
}

function requireEnvoyBinary() {
  const found = findEnvoy();
  if (found === undefined) throw new StackError(`Envoy was not found. ${ENVOY_INSTALL_HINT}`);
  if (!isExecutableFile(found))
    throw new StackError(`ENVOY_BIN=${found} is not an executable file`);
  return found;
}

/**
 * The keystore to serve, written as a starter when the default one is missing. Like
 * `keygate serve`, an explicitly configured KEYGATE_KEYSTORE that is missing is never
 * created: a typo must not turn into a fresh keystore.
 * @returns {{ file: string, token: string | undefined }} token: the demo token when the
 *   starter was written now.
 */
function prepareKeystore(env) {
  const explicit = env.KEYGATE_KEYSTORE !== undefined && env.KEYGATE_KEYSTORE !== "";
  const file = path.resolve(explicit ? env.KEYGATE_KEYSTORE : DEFAULT_KEYSTORE);
  if (existsSync(file)) return { file, token: undefined };
  if (explicit) {
    throw new StackError(
      `KEYGATE_KEYSTORE=${env.KEYGATE_KEYSTORE} does not exist (unset it to get a starter ./${DEFAULT_KEYSTORE})`,
    );
  }
  const init = spawnSync(process.execPath, [KEYGATE_MAIN, "keystore", "init", "--keystore", file], {
    encoding: "utf8",
    env,
  });
  const token = init.stdout?.trim() ?? "";
  if (init.status !== 0 || token === "") {
    throw new StackError(`keygate keystore init failed: ${init.stderr?.trim() || init.error}`);
  }
  return { file, token };
}

/** Copies a child's output to ours, each line tagged with its name, compose style. */
function tagOutput(name, stream, sink) {
  const prefix = `${name.padEnd(NAME_WIDTH)} | `;
  createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) =>
    sink.write(`${prefix}${line}\n`),
  );
}

/**
 * Starts one of the three. `detached`: each child gets its own process group, so the
 * terminal's Ctrl-C reaches only this script, which then stops them in order (keygate
 * would otherwise get SIGINT and SIGTERM and cut its drain short).
 */
function startChild(name, command, args, env) {
  const child = spawn(command, args, {
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  tagOutput(name, child.stdout, process.stdout);
  tagOutput(name, child.stderr, process.stderr);
  const closed = new Promise((resolve) => {
    child.once("close", (code, signal) => resolve({ code, signal }));
    child.once("error", (error) => resolve({ code: null, signal: null, error }));
  });
  return { name, child, closed, exited: false };
}

async function waitUntil(what, probe, children, deadline) {
  for (;;) {
    const gone = children.find((c) => c.exited);
    if (gone !== undefined) throw new StackError(`${gone.name} exited while waiting for ${what}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new StackError(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

async function httpOk(url) {
  const response = await fetch(url);
  await response.arrayBuffer();
  return response.ok;
}

async function envoyLive(adminPort) {
  const response = await fetch(`http://127.0.0.1:${adminPort}/ready`);
  return (await response.text()).trim() === "LIVE";
}

async function keygateHealthyInEnvoy(adminPort) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/clusters`)).text();
  const flags = text
    .split("\n")
    .filter((line) => line.startsWith("keygate::") && line.includes("::health_flags::"));
  return flags.length > 0 && flags.every((line) => line.endsWith("::health_flags::healthy"));
}

function printDemo(ports, keystore) {
  const base = `http://127.0.0.1:${ports.http}`;
  const json = `-H 'content-type: application/json' -d '${DEMO_BODY}'`;
  const where = path.relative(process.cwd(), keystore.file) || keystore.file;
  say();
  say(
    `stack: ready. Envoy http://127.0.0.1:${ports.http} -> keygate 127.0.0.1:${ports.keygate} (admin :${ports.keygateAdmin}) -> stub Apollo 127.0.0.1:${ports.apollo}`,
  );
  say();
  if (keystore.token !== undefined) {
    say(`  # The demo client's token, shown once (${where} holds only its SHA-256):`);
    say(`  TOKEN=${keystore.token}`);
  } else {
    say(`  # ${where} already existed, so no token was minted: use one of your clients' tokens.`);
    say("  TOKEN=<your-client-token>");
  }
  say();
  say("  # 1. Swap: keygate removes the token and adds x-client-id (the echo is what Apollo got)");
  say(`  curl -s ${base}/v1/messages -H "Authorization: Bearer $TOKEN" ${json}`);
  say();
  say("  # 2. Denial: an unknown token gets keygate's 401 JSON; Apollo never sees the request");
  say(`  curl -si ${base}/v1/messages -H 'Authorization: Bearer ${UNKNOWN_TOKEN}' ${json}`);
  say();
  say("  # 3. Bring your own key: on /byo/ a provider key (sk-ant-...) passes through untouched");
  say(`  curl -s ${base}/byo/v1/messages -H 'x-api-key: ${DEMO_BYO_KEY}' ${json}`);
  say();
  say(
    `  To see an upstream key swapped in as well, uncomment \`defaults:\` and its \`upstream_key: env:ANTHROPIC_API_KEY\` in ${where} and save:`,
  );
  say(
    "  keygate reloads it within a second, and the echo shows x-api-key set to the stack's placeholder key.",
  );
  say(
    "  Each client is rate limited to 600 requests a minute (envoy/envoy.yaml); Envoy's access log lines carry client_id.",
  );
  say();
  say("stack: Ctrl-C stops all three.");
}

async function stopChild(entry, signal) {
  if (entry.exited) return;
  entry.child.kill(signal);
  const timer = setTimeout(() => entry.child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  await entry.closed;
  clearTimeout(timer);
}

async function main() {
  const env = process.env;
  const ports = readPorts(env);
  requireBuild();
  const envoyBin = requireEnvoyBinary();
  const keystore = prepareKeystore(env);

  const workDir = mkdtempSync(path.join(tmpdir(), "keygate-stack-"));
  const envoyConfig = path.join(workDir, "envoy.yaml");
  writeFileSync(
    envoyConfig,
    renderEnvoyConfig({
      listenPort: ports.http,
      adminPort: ports.envoyAdmin,
      keygatePort: ports.keygate,
      upstreamPort: ports.apollo,
    }),
  );

  /** Started children, front (Envoy) first: the order they are stopped in. */
  const children = [];
  let stopping = false;
  let ready = false;
  // Last resort if this script dies unexpectedly: the children are in their own process
  // groups and would outlive it.
  process.on("exit", () => {
    for (const entry of children) if (!entry.exited) entry.child.kill("SIGKILL");
  });

  const stopAll = async (code) => {
    if (stopping) return;
    stopping = true;
    for (const entry of children) await stopChild(entry, "SIGTERM");
    rmSync(workDir, { recursive: true, force: true });
    say("stack: stopped");
    process.exit(code);
  };
  const track = (entry) => {
    children.unshift(entry);
    entry.closed.then(({ code, signal, error }) => {
      entry.exited = true;
      if (stopping) return;
      const how = error ? error.message : `code ${code}, signal ${signal}`;
      process.stderr.write(`stack: ${entry.name} exited (${how}); stopping the others\n`);
      if (!ready) process.stderr.write(`stack: if a port is taken, move it: ${PORT_VARIABLES}\n`);
      void stopAll(1);
    });
    return entry;
  };
  // A second Ctrl-C while stopping: do not wait for the drain.
  process.on("SIGINT", () => (stopping ? process.exit(130) : void stopAll(0)));
  process.once("SIGTERM", () => void stopAll(0));

  const deadline = Date.now() + START_TIMEOUT_MS;
  try {
    track(
      startChild("apollo", process.execPath, [STUB_APOLLO], {
        ...env,
        PORT: String(ports.apollo),
        HOST: "127.0.0.1",
      }),
    );
    await waitUntil(
      "the stub Apollo",
      () => httpOk(`http://127.0.0.1:${ports.apollo}/`),
      children,
      deadline,
    );

    track(
      startChild("keygate", process.execPath, [...KEYGATE_NODE_FLAGS, KEYGATE_MAIN, "serve"], {
        ...env,
        KEYGATE_KEYSTORE: keystore.file,
        KEYGATE_GRPC_ADDR: `127.0.0.1:${ports.keygate}`,
        KEYGATE_ADMIN_ADDR: `127.0.0.1:${ports.keygateAdmin}`,
        ANTHROPIC_API_KEY: DEMO_UPSTREAM_KEY,
      }),
    );
    await waitUntil(
      "keygate's /readyz (a keystore generation loaded)",
      () => httpOk(`http://127.0.0.1:${ports.keygateAdmin}/readyz`),
      children,
      deadline,
    );

    track(
      startChild(
        "envoy",
        envoyBin,
        [
          "--config-path",
          envoyConfig,
          // No shared memory or base id to collide with another Envoy on this machine.
          "--disable-hot-restart",
          "--log-level",
          env.STACK_ENVOY_LOG_LEVEL || "warn",
          // Access log lines show up promptly instead of every 10 s.
          "--file-flush-interval-msec",
          "200",
        ],
        env,
      ),
    );
    await waitUntil("Envoy to be LIVE", () => envoyLive(ports.envoyAdmin), children, deadline);
    await waitUntil(
      "Envoy to see keygate as healthy",
      () => keygateHealthyInEnvoy(ports.envoyAdmin),
      children,
      deadline,
    );
  } catch (error) {
    if (stopping) return;
    process.stderr.write(`stack: ${error.message}\n`);
    await stopAll(1);
    return;
  }
  ready = true;
  printDemo(ports, keystore);
}

main().catch((error) => {
  process.stderr.write(`stack: ${error instanceof StackError ? error.message : error.stack}\n`);
  process.exit(1);
});
