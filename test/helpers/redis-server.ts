/**
 * A real redis-server (the Debian package) for the budget tests: on 127.0.0.1 at a free
 * port, no persistence (`--save '' --appendonly no`), its working directory a temp dir,
 * killed and removed after. A missing redis-server fails the test, never skips it: in
 * CI (`CI` set, .ci/run installs it) that is a broken pipeline; locally the message says
 * how to install it.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./local-process.js";

export interface RunningRedis {
  readonly port: number;
  readonly url: string;
  /** Kills the server (SIGKILL: an outage, not a shutdown); its data goes with it. */
  kill(): Promise<void>;
  /** Starts a fresh, empty server on the same port (a restart without persistence). */
  restart(): Promise<void>;
  /** Kills it and removes its directory. */
  stop(): Promise<void>;
}

/** The redis-server binary: REDIS_SERVER_BIN, else redis-server on PATH. @throws Error saying how to get it. */
export function redisServerBin(): string {
  const bin = process.env.REDIS_SERVER_BIN ?? "redis-server";
  try {
    execFileSync(bin, ["--version"], { stdio: "ignore" });
    return bin;
  } catch {
    const context = process.env.CI
      ? "CI is set: the budget tests need a real Redis and are never skipped (.ci/run installs it)."
      : "The budget tests need a real Redis.";
    throw new Error(
      `${context} redis-server was not found (${bin}). Install it: apt-get install redis-server (Debian/Ubuntu), brew install redis (macOS), or set REDIS_SERVER_BIN.`,
    );
  }
}

/** Waits until something accepts connections on the port. */
async function waitForPort(port: number, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: "127.0.0.1", port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/**
 * Starts redis-server; `password` sets `requirepass`.
 * @throws Error when redis-server is missing or does not come up.
 */
export async function startRedis(options: { password?: string } = {}): Promise<RunningRedis> {
  const bin = redisServerBin();
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-redis-"));
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  args.push("--dir", dir, "--logfile", "");
  if (options.password !== undefined) args.push("--requirepass", options.password);
  let child: ChildProcess | null = null;
  const launch = async () => {
    child = spawn(bin, args, { stdio: "ignore" });
    await waitForPort(port, child);
  };
  const kill = async () => {
    const running = child;
    child = null;
    if (running === null) return;
    running.kill("SIGKILL");
    await exited(running);
  };
  await launch();
  const auth = options.password === undefined ? "" : `:${encodeURIComponent(options.password)}@`;
  return {
    port,
    url: `redis://${auth}127.0.0.1:${port}/0`,
    kill,
    restart: async () => {
      await kill();
      await launch();
    },
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
