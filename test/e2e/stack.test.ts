/**
 * `npm run stack` as a newcomer uses it: started in a fresh directory (so it writes a
 * starter keystore there), on free ports (STACK_*_PORT), it prints curl commands; the
 * test runs those very commands with sh and curl, as printed, then stops the stack with
 * SIGINT (Ctrl-C) and checks that all three processes are gone. The script is run with
 * node directly because `npm run` would move the working directory to the project root.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import anyTest, { type ExecutionContext, type TestFn } from "ava";
import { PROJECT_ROOT, requireEnvoy } from "../helpers/envoy.js";
import { KEYGATE_MAIN } from "../helpers/keygate-process.js";
import { freePort } from "../helpers/local-process.js";

const STACK_SCRIPT = path.join(PROJECT_ROOT, "scripts", "stack.mjs");
const READY_LINE = "stack: Ctrl-C stops all three.";
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const CURL_TIMEOUT_MS = 15_000;
const run = promisify(execFile);

interface Ports {
  readonly STACK_HTTP_PORT: number;
  readonly STACK_ENVOY_ADMIN_PORT: number;
  readonly STACK_KEYGATE_PORT: number;
  readonly STACK_KEYGATE_ADMIN_PORT: number;
  readonly STACK_APOLLO_PORT: number;
}

interface Context {
  dir: string;
  ports: Ports;
}

const test = anyTest as TestFn<Context>;

interface Stack {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function allocatePorts(): Promise<Ports> {
  return {
    STACK_HTTP_PORT: await freePort(),
    STACK_ENVOY_ADMIN_PORT: await freePort(),
    STACK_KEYGATE_PORT: await freePort(),
    STACK_KEYGATE_ADMIN_PORT: await freePort(),
    STACK_APOLLO_PORT: await freePort(),
  };
}

function startStack(t: ExecutionContext<Context>): Stack {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("KEYGATE_")) env[name] = value;
  }
  for (const [name, port] of Object.entries(t.context.ports)) env[name] = String(port);
  const child = spawn(process.execPath, [STACK_SCRIPT], {
    cwd: t.context.dir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let all = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    all += chunk.toString("utf8");
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    all += chunk.toString("utf8");
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("close", (code, signal) => resolve({ code, signal })),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  return { child, output: () => all, exited };
}

async function until(stack: Stack, text: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let gone = false;
  void stack.exited.then(() => {
    gone = true;
  });
  while (!stack.output().includes(text)) {
    if (gone) throw new Error(`the stack exited before printing "${text}":\n${stack.output()}`);
    if (Date.now() > deadline) throw new Error(`no "${text}" in time:\n${stack.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function stop(stack: Stack): Promise<{ code: number | null; signal: string | null }> {
  stack.child.kill("SIGINT");
  const timer = setTimeout(() => stack.child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  const result = await stack.exited;
  clearTimeout(timer);
  return result;
}

/** The printed demo: the TOKEN= line and the curl commands, in order. */
function demo(output: string): { tokenLine: string; curls: string[] } {
  const lines = output.split("\n").map((line) => line.trim());
  const tokenLine = lines.find((line) => line.startsWith("TOKEN=")) ?? "";
  return { tokenLine, curls: lines.filter((line) => line.startsWith("curl ")) };
}

/** Runs a printed command through sh, with the printed TOKEN= line before it. */
async function shell(tokenLine: string, curl: string): Promise<string> {
  const { stdout } = await run("sh", ["-c", `${tokenLine}\n${curl}`], {
    timeout: CURL_TIMEOUT_MS,
  });
  return stdout;
}

async function refusesConnections(port: number): Promise<boolean> {
  return fetch(`http://127.0.0.1:${port}/`).then(
    () => false,
    () => true,
  );
}

test.before((t) => {
  requireEnvoy(t);
  readFileSync(KEYGATE_MAIN); // built: `npm test` builds first
  t.context.dir = mkdtempSync(path.join(tmpdir(), "keygate-stack-"));
});

test.beforeEach(async (t) => {
  t.context.ports = await allocatePorts();
});

test.after.always((t) => {
  if (t.context.dir) rmSync(t.context.dir, { recursive: true, force: true });
});

test.serial("npm run stack runs scripts/stack.mjs", (t) => {
  const manifest = JSON.parse(readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8")) as {
    scripts: Record<string, string>;
  };
  t.is(manifest.scripts.stack, "node scripts/stack.mjs");
});

test.serial(
  "a fresh stack prints curl commands that show a swap, a denial and a BYO key, and Ctrl-C stops it",
  async (t) => {
    const stack = startStack(t);
    await until(stack, READY_LINE);
    const { tokenLine, curls } = demo(stack.output());
    t.regex(tokenLine, /^TOKEN=kg_\S+$/, "the starter keystore's demo token");
    t.true(
      readFileSync(path.join(t.context.dir, "keystore.yaml"), "utf8").includes("id: demo"),
      "the starter keystore was written in the working directory",
    );
    t.is(curls.length, 3);
    const [swap = "", denial = "", byo = ""] = curls;
    for (const curl of curls) t.true(curl.includes(`127.0.0.1:${t.context.ports.STACK_HTTP_PORT}`));

    const swapped = JSON.parse(await shell(tokenLine, swap)) as {
      path: string;
      headers: Record<string, string>;
    };
    t.is(swapped.path, "/v1/messages");
    t.is(swapped.headers["x-client-id"], "demo");
    t.is(swapped.headers.authorization, undefined, "the keygate token never reaches Apollo");

    const refused = await shell(tokenLine, denial);
    t.regex(refused, /^HTTP\/1\.1 401 /);
    const denialBody = JSON.parse(refused.trim().split("\n").at(-1) ?? "") as { type: string };
    t.is(denialBody.type, "UNAUTHORIZED");

    const ownKey = /x-api-key: (sk-ant-[^']+)'/.exec(byo)?.[1];
    t.truthy(ownKey);
    const passed = JSON.parse(await shell(tokenLine, byo)) as {
      path: string;
      headers: Record<string, string>;
    };
    t.is(passed.path, "/v1/messages", "/byo/ is stripped on the way to Apollo");
    t.is(passed.headers["x-api-key"], ownKey, "a provider key passes through untouched");
    t.is(passed.headers["x-client-id"], undefined);

    t.deepEqual(await stop(stack), { code: 0, signal: null }, stack.output());
    t.regex(stack.output(), /keygate \| .*draining in-flight checks/);
    t.true(stack.output().includes("stack: stopped"));
    for (const port of Object.values(t.context.ports)) {
      t.true(await refusesConnections(port), `nothing listens on ${port} any more`);
    }
  },
);

test.serial("with the keystore already there, the stack mints no token", async (t) => {
  const keystore = path.join(t.context.dir, "keystore.yaml");
  const before = readFileSync(keystore, "utf8");
  const stack = startStack(t);
  await until(stack, READY_LINE);
  t.is(demo(stack.output()).tokenLine, "TOKEN=<your-client-token>");
  t.is(readFileSync(keystore, "utf8"), before);
  t.deepEqual(await stop(stack), { code: 0, signal: null }, stack.output());
});

test.serial(
  "a port already in use stops the stack with exit 1 and nothing left running",
  async (t) => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) =>
      blocker.listen(t.context.ports.STACK_HTTP_PORT, "127.0.0.1", resolve),
    );
    t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const stack = startStack(t);
    const { code } = await stack.exited;
    t.is(code, 1, stack.output());
    t.regex(stack.output(), /stack: envoy exited/);
    for (const [name, port] of Object.entries(t.context.ports)) {
      if (name !== "STACK_HTTP_PORT") t.true(await refusesConnections(port), `${name} is closed`);
    }
  },
);
