/**
 * Child processes of the benchmark: the keygate server (the real CLI, `keygate serve`,
 * configured only through KEYGATE_* variables), the floor server and the load
 * generator. All three run as compiled JavaScript from a private build of server/ and
 * bench/ (bench/.build, by bench/tsconfig.build.json), as keygate ships: from source, the
 * keystore's reload worker would compile TypeScript on every reload. Every wait is
 * bounded; every child is killed by pid on exit. keygate and the floor both run with the
 * server's production Node flags (server/node-flags.ts).
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { SERVER_NODE_FLAGS } from "../server/node-flags.js";
import { environmentWithoutKeygate, freePort } from "../test/helpers/local-process.js";
import type { LoadResult, LoadSpec } from "./load-generator.js";
import { type QuietWait, waitForQuiet } from "./machine-load.js";

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const PROJECT_ROOT = path.dirname(BENCH_DIR);
const BUILD_DIR = path.join(BENCH_DIR, ".build");
const KEYGATE_CLI = path.join(BUILD_DIR, "server", "cli", "main.js");
const FLOOR_SERVER = path.join(BUILD_DIR, "bench", "floor-server.js");
const LOAD_GENERATOR = path.join(BUILD_DIR, "bench", "load-generator.js");
const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 10_000;
const BUILD_TIMEOUT_MS = 120_000;
/** Output kept per child for diagnostics (the tail). */
const OUTPUT_TAIL_CHARS = 64 * 1024;

export interface BuildStatus {
  /** tsc's exit code; non-zero with output means type errors (tsc still emits). */
  readonly exitCode: number | null;
  readonly diagnostics: string;
}

/**
 * Compiles server/ and the benchmark's child scripts into bench/.build.
 * @throws Error when the entry points were not emitted.
 */
export function buildForBench(): BuildStatus {
  rmSync(BUILD_DIR, { recursive: true, force: true });
  const tsc = path.join(PROJECT_ROOT, "node_modules", "typescript", "bin", "tsc");
  const result = spawnSync(
    process.execPath,
    [tsc, "-p", path.join(BENCH_DIR, "tsconfig.build.json")],
    {
      cwd: PROJECT_ROOT,
      encoding: "utf8",
      timeout: BUILD_TIMEOUT_MS,
    },
  );
  // The schemas' validators, as `npm run build` compiles them (server/paths.ts loads them).
  const validators = spawnSync(
    process.execPath,
    [path.join(PROJECT_ROOT, "scripts", "compile-validators.mjs")],
    { cwd: PROJECT_ROOT, encoding: "utf8", timeout: BUILD_TIMEOUT_MS },
  );
  if (validators.status !== 0)
    throw new Error(`compile-validators failed:\n${validators.stdout}${validators.stderr}`);
  const diagnostics = `${result.stdout ?? ""}${result.stderr ?? ""}`.trim();
  for (const entry of [KEYGATE_CLI, FLOOR_SERVER, LOAD_GENERATOR]) {
    if (!existsSync(entry)) throw new Error(`build did not emit ${entry}:\n${diagnostics}`);
  }
  return { exitCode: result.status, diagnostics };
}

/** Imports a module of the private build (e.g. "server/keystore/format/load.js"), as keygate runs it. */
export async function importBuilt<T>(relative: string): Promise<T> {
  return (await import(pathToFileURL(path.join(BUILD_DIR, relative)).href)) as T;
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

export interface Child {
  readonly pid: number;
  readonly process: ChildProcess;
  output(): string;
  /** SIGTERM, then SIGKILL after a timeout. */
  stop(): Promise<void>;
}

function spawnNode(
  script: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  nodeArgs: readonly string[] = [],
): Child {
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], {
    cwd: PROJECT_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  closed.then(() => live.delete(child));
  return {
    pid: child.pid ?? 0,
    process: child,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await closed;
      clearTimeout(timer);
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * keygate runs each keystore sync in a worker thread and retires it after 10 s idle
 * (server/keystore/reload/run-reload-worker.ts), giving its heap back; this long after a
 * server's last reload, its memory is the steady state's.
 */
export const SYNC_WORKER_RETIRED_MS = 12_500;

export interface KeygateChild extends Child {
  readonly grpcPort: number;
  readonly adminPort: number;
  /** Milliseconds from spawn to /readyz answering 200. */
  readonly startToReadyMs: number;
}

export interface KeygateChildOptions {
  readonly keystorePath: string;
  readonly dbPath: string;
  readonly masterKey: string;
  readonly logLevel: string;
  /** Node flags, e.g. --cpu-prof for profiling. */
  readonly nodeArgs?: readonly string[];
}

/**
 * Starts `keygate serve` and waits until /readyz says a generation is loaded (the ready
 * log line is at info, below the benchmark's warn level).
 * @throws Error with the child's output when it exits or is not ready in time.
 */
export async function startKeygateChild(options: KeygateChildOptions): Promise<KeygateChild> {
  const grpcPort = await freePort();
  const adminPort = await freePort();
  const started = performance.now();
  const child = spawnNode(
    KEYGATE_CLI,
    ["serve"],
    {
      ...environmentWithoutKeygate(),
      KEYGATE_KEYSTORE: options.keystorePath,
      KEYGATE_DB: options.dbPath,
      KEYGATE_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      KEYGATE_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      KEYGATE_LOG_LEVEL: options.logLevel,
      KEYGATE_MASTER_KEY: options.masterKey,
    },
    [...SERVER_NODE_FLAGS, ...(options.nodeArgs ?? [])],
  );
  const deadline = started + READY_TIMEOUT_MS;
  while (performance.now() < deadline) {
    if (child.process.exitCode !== null) break;
    try {
      const response = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
      await response.arrayBuffer();
      if (response.status === 200) {
        return { ...child, grpcPort, adminPort, startToReadyMs: performance.now() - started };
      }
    } catch {
      // Not listening yet.
    }
    await sleep(20);
  }
  await child.stop();
  throw new Error(`keygate did not become ready:\n${child.output()}`);
}

export interface FloorChild extends Child {
  readonly grpcPort: number;
}

/** Starts the floor server and waits for its listening line. */
export async function startFloorChild(nodeArgs: readonly string[] = []): Promise<FloorChild> {
  // The floor runs with keygate's production flags, so the comparison is runtime for runtime.
  const child = spawnNode(FLOOR_SERVER, [], environmentWithoutKeygate(), [
    ...SERVER_NODE_FLAGS,
    ...nodeArgs,
  ]);
  const deadline = performance.now() + READY_TIMEOUT_MS;
  while (performance.now() < deadline && child.process.exitCode === null) {
    const match = /"msg":"floor listening","port":(\d+)/.exec(child.output());
    if (match) return { ...child, grpcPort: Number(match[1]) };
    await sleep(20);
  }
  await child.stop();
  throw new Error(`floor server did not start:\n${child.output()}`);
}

export interface QuietGate {
  /** Go ahead once the whole machine uses fewer cores than this... */
  readonly thresholdCores: number;
  /** ...or once this much time has passed. */
  readonly maxWaitMs: number;
}

let quietGate: QuietGate = { thresholdCores: 0.5, maxWaitMs: 20_000 };

/** Sets how long measurements wait for other people's work to quieten down. */
export function configureQuietGate(gate: QuietGate): void {
  quietGate = gate;
}

/** Waits (boundedly) until the machine is quiet; see configureQuietGate. */
export function awaitQuiet(): Promise<QuietWait> {
  return waitForQuiet(cpus().length, quietGate.thresholdCores, quietGate.maxWaitMs);
}

export interface GatedLoadResult extends LoadResult {
  /** The wait for a quiet machine before this run. */
  readonly quietWait: QuietWait;
}

/**
 * Waits for a quiet machine, runs the load generator and returns its result.
 * `afterQuiet` runs once the machine is quiet, just before the load generator starts
 * (to start other traffic that must overlap the window without holding up the wait).
 * @throws Error with its output when it fails.
 */
export async function runLoad(
  spec: LoadSpec,
  specPath: string,
  afterQuiet?: () => void | Promise<void>,
): Promise<GatedLoadResult> {
  const quietWait = await awaitQuiet();
  await afterQuiet?.();
  writeFileSync(specPath, JSON.stringify(spec));
  const child = spawnNode(LOAD_GENERATOR, [specPath], environmentWithoutKeygate());
  const code = await new Promise<number | null>((resolve) =>
    child.process.once("close", (exitCode) => resolve(exitCode)),
  );
  const line = child
    .output()
    .split("\n")
    .find((text) => text.startsWith('{"calls"'));
  if (code !== 0 || line === undefined) {
    throw new Error(`load generator failed (exit ${code}):\n${child.output()}`);
  }
  return { ...(JSON.parse(line) as LoadResult), quietWait };
}

/** Resident and peak resident memory of a process, in MiB, from /proc/<pid>/status. */
export function memoryOf(pid: number): { rssMiB: number; peakRssMiB: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
    return {
      rssMiB: Math.round((kib("VmRSS") / 1024) * 10) / 10,
      peakRssMiB: Math.round((kib("VmHWM") / 1024) * 10) / 10,
    };
  } catch {
    return null;
  }
}

/**
 * Resets a process's peak RSS (VmHWM) to its current RSS (Linux: /proc/<pid>/clear_refs
 * "5"), so that a later memoryOf() reports the peak of what ran in between.
 * @throws Error when the kernel refuses (not Linux, or not our process).
 */
export function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** Kernel clock ticks per second, for /proc/<pid>/stat CPU times. */
export function clockTicks(): number {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** Reads one Prometheus sample (no labels) from keygate's /metrics; null when absent. */
export async function metricValue(adminPort: number, name: string): Promise<number | null> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
  const text = await response.text();
  const match = new RegExp(`^${name} ([0-9.e+-]+)$`, "m").exec(text);
  return match ? Number(match[1]) : null;
}
