/**
 * Runs the real Envoy for e2e tests: finds the binary (DESIGN §3 order), renders the
 * shipped envoy/envoy.yaml with local addresses, starts Envoy and waits until it is LIVE
 * and sees keygate as healthy. Readiness is read from Envoy's admin API, never guessed
 * with a sleep.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ExecutionContext } from "ava";
import {
  ENVOY_INSTALL_HINT,
  findEnvoy,
  isExecutableFile,
  LOCAL_ENVOY_PYTHONPATH,
} from "../../scripts/find-envoy.mjs";

export type {
  EnvoyPorts,
  RenderEnvoyOptions,
  TokenBucket,
} from "../../scripts/render-envoy-config.mjs";
export {
  ENVOY_CONFIG_PATH,
  renderEnvoyConfig,
} from "../../scripts/render-envoy-config.mjs";
// Finding the binary and rendering the config are shared with `npm run stack`.
export { findEnvoy, LOCAL_ENVOY_PYTHONPATH };

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 50;

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
  throw new Error(`${problem} ${context} ${ENVOY_INSTALL_HINT}`);
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
