/**
 * `keygate keystore check` and `list`: the commands that only read keystore.yaml (and,
 * for `list`, the server's database for last use). They never take the editor's lock.
 */
import { existsSync } from "node:fs";
import { type Config, loadConfig } from "../config.js";
import { readKeystoreFile } from "../keystore/format/load.js";
import { formatIssue, KeystoreError, type LoadedKeystore } from "../keystore/format/model.js";
import { KeystoreStore } from "../keystore/store/store.js";
import { utcDay, utcMonthStart } from "../usage/usage-day.js";
import { type RecentTokens, TokenUsageTable } from "../usage/usage-table.js";
import { DetailedError, keystorePath, note, out, parseCommand } from "./args.js";
import { KEYSTORE_OPTION } from "./keystore-command-shared.js";
import { type ClientUsage, listClients, renderJson, renderTable } from "./list-output.js";

/**
 * Validates keystore.yaml as the server would: prints the issues (exit 1) or "ok".
 * @throws UsageError on malformed arguments; Error on an unexpected failure.
 */
export async function check(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const path = keystorePath(parseCommand("keystore check", args, KEYSTORE_OPTION), env);
  const config = loadConfig(env);
  try {
    const loaded = readKeystoreFile(path, {
      masterKeys: config.masterKeys,
      env,
      requireClients: config.mode === "enforce",
      upstreamEnvPrefix: config.upstreamEnvPrefix,
    });
    for (const warning of loaded.warnings) note(`${formatIssue(warning)} (warning)`);
    out(`${path}: ok, ${loaded.keystore.clients.length} clients`);
    return 0;
  } catch (error) {
    if (!(error instanceof KeystoreError)) throw error;
    for (const issue of error.issues) out(formatIssue(issue));
    return 1;
  }
}

/**
 * Lists the clients as a table or JSON, with last use when the database is there.
 * @throws DetailedError when keystore.yaml is not valid; UsageError on malformed arguments.
 */
export async function list(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("keystore list", args, {
    ...KEYSTORE_OPTION,
    json: { type: "boolean" },
  });
  const path = keystorePath(parsed, env);
  const config = loadConfig(env);
  const loaded = readValidKeystore(path, config, env);
  const now = Date.now();
  const usage = readUsage(config.dbPath);
  const tokens = readRecentTokens(config.dbPath, now);
  const clients = listClients(loaded.keystore, { lastUse: usage, tokens }, now);
  if (parsed.values.json === true) {
    out(renderJson(path, usage === undefined ? null : config.dbPath, clients));
  } else {
    if (usage === undefined) {
      note(`no database at ${config.dbPath}: last use and token usage not shown`);
    }
    out(renderTable(clients));
  }
  return 0;
}

function readValidKeystore(path: string, config: Config, env: NodeJS.ProcessEnv): LoadedKeystore {
  try {
    return readKeystoreFile(path, {
      masterKeys: config.masterKeys,
      env,
      requireClients: false,
      upstreamEnvPrefix: config.upstreamEnvPrefix,
    });
  } catch (error) {
    if (!(error instanceof KeystoreError)) throw error;
    throw new DetailedError(`${path} is not a valid keystore`, error.issues.map(formatIssue));
  }
}

/** Last use by client from the server's database, or undefined when there is none to read. */
function readUsage(dbPath: string): Map<string, ClientUsage> | undefined {
  if (dbPath === ":memory:" || !existsSync(dbPath)) return undefined;
  let store: KeystoreStore | undefined;
  try {
    store = KeystoreStore.open(dbPath);
    return new Map(
      store
        .listClients()
        .map((row) => [row.id, { lastUsedAt: row.lastUsedAt, useCount: row.useCount }]),
    );
  } catch (error) {
    note(`warning: cannot read last use from ${dbPath}: ${(error as Error).message}`);
    return undefined;
  } finally {
    store?.close();
  }
}

/**
 * Each client's tokens today and this month, read-only; undefined when there is no
 * database, and empty when it predates token usage (nobody has used any).
 */
function readRecentTokens(dbPath: string, now: number): Map<string, RecentTokens> | undefined {
  try {
    const table = TokenUsageTable.openForReading(dbPath);
    if (table === "missing") return undefined;
    if (table === "no-usage") return new Map();
    try {
      return table.recentTokens(utcDay(now), utcMonthStart(now));
    } finally {
      table.close();
    }
  } catch (error) {
    note(`warning: cannot read token usage from ${dbPath}: ${(error as Error).message}`);
    return undefined;
  }
}
