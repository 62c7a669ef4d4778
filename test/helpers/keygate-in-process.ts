/**
 * Starts the real keygate server in-process on free ports with a temp keystore.yaml and a
 * temp SQLite file, capturing its JSON log lines. Integration tests talk to it over real gRPC.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { loadConfig } from "../../server/config.js";
import { createLogger } from "../../server/logger.js";
import { type RunningKeygate, startKeygate } from "../../server/main.js";
import { type CheckClient, createCheckClient } from "./grpc-client.js";

export interface TestKeygate {
  readonly dir: string;
  readonly keystorePath: string;
  readonly dbPath: string;
  readonly running: RunningKeygate;
  readonly client: CheckClient;
  readonly adminUrl: string;
  /** Every log line written so far, raw. */
  readonly logs: string[];
  stop(): Promise<void>;
}

export interface TestKeygateOptions {
  /** keystore.yaml text; omit to start without a keystore file. */
  readonly keystore?: string;
  /** Extra environment (KEYGATE_MODE, KEYGATE_MASTER_KEY, env: references…). */
  readonly env?: Record<string, string>;
  /** Reuse a directory (and its database) from an earlier run, to simulate a restart. */
  readonly dir?: string;
}

/** A log sink that keeps every line. */
export function captureLogs(lines: string[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) if (line !== "") lines.push(line);
      callback();
    },
  });
}

export async function startTestKeygate(options: TestKeygateOptions = {}): Promise<TestKeygate> {
  const dir = options.dir ?? mkdtempSync(path.join(tmpdir(), "keygate-it-"));
  const keystorePath = path.join(dir, "keystore.yaml");
  const dbPath = path.join(dir, "data", "keystore.db");
  if (options.keystore !== undefined)
    writeFileSync(keystorePath, options.keystore, { mode: 0o600 });
  const env = {
    KEYGATE_KEYSTORE: keystorePath,
    KEYGATE_DB: dbPath,
    KEYGATE_GRPC_ADDR: "127.0.0.1:0",
    KEYGATE_ADMIN_ADDR: "127.0.0.1:0",
    KEYGATE_LOG_LEVEL: "debug",
    ...options.env,
  };
  const logs: string[] = [];
  const running = await startKeygate(
    loadConfig(env),
    env,
    createLogger("debug", captureLogs(logs)),
  );
  const client = createCheckClient(`127.0.0.1:${running.grpcPort}`);
  return {
    dir,
    keystorePath,
    dbPath,
    running,
    client,
    adminUrl: `http://127.0.0.1:${running.adminPort}`,
    logs,
    async stop() {
      client.close();
      await running.stop();
    },
  };
}
