/**
 * Runs the built `keygate` bin as an operator does (`node dist/server/cli/main.js …`),
 * configured only through KEYGATE_* variables in a temp directory, with stdin piped.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { ExecutionContext } from "ava";
import { generateMasterKey } from "../../server/crypto/aes-gcm.js";
import { PROJECT_ROOT } from "../helpers/envoy.js";
import { KEYGATE_MAIN } from "../helpers/keygate-process.js";
import { environmentWithoutKeygate } from "../helpers/local-process.js";

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** KEYGATE_* and other variables; the parent's KEYGATE_* never leak in. */
  readonly env?: Readonly<Record<string, string>>;
  /** Piped to stdin; stdin is closed empty when omitted. */
  readonly stdin?: string;
}

/** @throws Error when dist/ has not been built. */
export function runKeygate(args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  if (!existsSync(KEYGATE_MAIN)) {
    throw new Error(`${path.relative(PROJECT_ROOT, KEYGATE_MAIN)} is missing: run npm run build`);
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [KEYGATE_MAIN, ...args], {
      env: { ...environmentWithoutKeygate(), ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString("utf8");
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.on("error", () => {}); // a command that does not read stdin may exit first
    child.stdin.end(options.stdin ?? "");
  });
}

export interface Workspace {
  readonly dir: string;
  readonly keystore: string;
  readonly db: string;
  /** `k1:base64`, loaded in `env`. */
  readonly masterKey: string;
  /** KEYGATE_KEYSTORE, KEYGATE_DB and KEYGATE_MASTER_KEY for this workspace. */
  readonly env: Record<string, string>;
  /** Runs keygate with this workspace's environment (plus `env`). */
  run(args: readonly string[], options?: RunOptions): Promise<CliResult>;
  read(): string;
  /** Writes keystore.yaml (mode 0600 unless given). */
  write(text: string, mode?: number): void;
}

/** A temp directory with a keystore path, a database path and a master key; removed after the test. */
export function workspace(t: ExecutionContext): Workspace {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-cli-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const keystore = path.join(dir, "keystore.yaml");
  const db = path.join(dir, "data", "keystore.db");
  const masterKey = generateMasterKey("k1");
  const env = { KEYGATE_KEYSTORE: keystore, KEYGATE_DB: db, KEYGATE_MASTER_KEY: masterKey };
  return {
    dir,
    keystore,
    db,
    masterKey,
    env,
    run: (args, options = {}) => runKeygate(args, { ...options, env: { ...env, ...options.env } }),
    read: () => readFileSync(keystore, "utf8"),
    write: (text, mode = 0o600) => writeFileSync(keystore, text, { mode }),
  };
}

/** A token's line on stdout: exactly one `kg_` token and a newline, nothing else. */
export const TOKEN_LINE = /^(kg_[A-Za-z0-9_-]{43}[0-9A-Za-z]{6})\n$/;

/** The token printed by `add` or `rotate`. @throws Error when stdout is anything else. */
export function printedToken(result: CliResult): string {
  const token = TOKEN_LINE.exec(result.stdout)?.[1];
  if (token === undefined || result.code !== 0) {
    throw new Error(
      `expected exit 0 and one token on stdout, got ${result.code}:\n${result.stdout}\n${result.stderr}`,
    );
  }
  return token;
}

/** A digest of 64 hex characters that starts with `prefix`, for hand-written keystores. */
export function digestStartingWith(prefix: string, fill: string): string {
  return (prefix + fill.repeat(64)).slice(0, 64);
}
