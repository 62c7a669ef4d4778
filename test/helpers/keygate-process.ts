/**
 * Runs the built keygate server as an operator would (`node --no-memory-reducer
 * dist/server/cli/main.js serve`, the flags of server/node-flags.ts, configured only
 * through KEYGATE_* variables), captures its JSON log lines, and
 * stops it with a signal. Used by e2e tests, which must exercise the shipped artefact,
 * not the TypeScript sources.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { SERVER_NODE_FLAGS } from "../../server/node-flags.js";
import { PROJECT_ROOT } from "./envoy.js";
import { environmentWithoutKeygate, freePort } from "./local-process.js";

export const KEYGATE_MAIN = path.join(PROJECT_ROOT, "dist", "server", "cli", "main.js");
const READY_MESSAGE = "keygate listening";
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 15_000;

export interface StartKeygateOptions {
  /** KEYGATE_KEYSTORE: the keystore.yaml to serve. */
  readonly keystore: string;
  /** KEYGATE_DB: the SQLite file (put it in a temp dir). */
  readonly db: string;
  readonly logLevel?: string;
  /** KEYGATE_MASTER_KEY, `kid:base64[,kid:base64]`. */
  readonly masterKey?: string;
  /** More variables: other KEYGATE_* settings and the env:VAR upstream keys the keystore names. */
  readonly env?: Readonly<Record<string, string>>;
  /** Node flags before the script; the server's production flags unless given. */
  readonly nodeArgs?: readonly string[];
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface KeygateProcess {
  /** The server's process id (for /proc readings such as its CPU time). */
  readonly pid: number;
  readonly grpcPort: number;
  readonly adminPort: number;
  /** Everything written to stdout and stderr so far. */
  output(): string;
  /** stdout lines that parse as JSON (pino), in order. */
  logLines(): Record<string, unknown>[];
  /** Sends the signal and resolves with how the process exited (SIGKILL after a timeout). */
  stop(signal?: NodeJS.Signals): Promise<ExitStatus>;
}

function parseJsonLines(text: string): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // A partial line still being written; it is parsed on the next call.
    }
  }
  return lines;
}

/**
 * Starts keygate on free 127.0.0.1 ports and resolves once it logs that it is listening.
 * @throws Error (with keygate's output) when dist/ is not built, or keygate exits or is
 * not ready in time.
 */
export async function startKeygate(options: StartKeygateOptions): Promise<KeygateProcess> {
  if (!existsSync(KEYGATE_MAIN)) {
    throw new Error(
      `${path.relative(PROJECT_ROOT, KEYGATE_MAIN)} is missing: run \`npm run build\` first.`,
    );
  }
  const grpcPort = await freePort();
  const adminPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...environmentWithoutKeygate(),
    ...options.env,
    KEYGATE_KEYSTORE: options.keystore,
    KEYGATE_DB: options.db,
    KEYGATE_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
    KEYGATE_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
    KEYGATE_LOG_LEVEL: options.logLevel ?? "info",
  };
  if (options.masterKey !== undefined) env.KEYGATE_MASTER_KEY = options.masterKey;

  const nodeArgs = options.nodeArgs ?? SERVER_NODE_FLAGS;
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, KEYGATE_MAIN, "serve"], {
    cwd: PROJECT_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let all = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8");
    all += chunk.toString("utf8");
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    all += chunk.toString("utf8");
  });
  let status: ExitStatus | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    // "close", not "exit": by then stdout/stderr are drained, so the output is complete.
    child.once("close", (code, signal) => {
      status = { code, signal };
      resolve(status);
    });
  });

  const stop = async (signal: NodeJS.Signals = "SIGTERM"): Promise<ExitStatus> => {
    if (status !== undefined) return status;
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    const result = await exited;
    clearTimeout(timer);
    return result;
  };

  const ready = new Promise<void>((resolve, reject) => {
    const onData = (): void => {
      if (parseJsonLines(stdout).some((line) => line.msg === READY_MESSAGE)) {
        child.stdout?.off("data", onData);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.once("error", reject);
    void exited.then((s) =>
      reject(new Error(`keygate exited before it was ready (code ${s.code}, signal ${s.signal})`)),
    );
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new Error(`keygate did not log "${READY_MESSAGE}" within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([ready, timeout]);
  } catch (error) {
    await stop("SIGKILL");
    throw new Error(`${(error as Error).message}\n--- keygate output ---\n${all}`);
  } finally {
    clearTimeout(timer);
  }
  return {
    pid: child.pid ?? 0,
    grpcPort,
    adminPort,
    output: () => all,
    logLines: () => parseJsonLines(stdout),
    stop,
  };
}
