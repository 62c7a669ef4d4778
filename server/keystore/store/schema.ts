/**
 * The keystore database's file and schema: where it is created and with what mode, the
 * pragmas every connection runs with, the tables, and the upgrades from older schemas.
 * Opening goes through here, so no connection ever sees an old or half-made schema.
 */
import { chmodSync, closeSync, mkdirSync, openSync, statSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";

/**
 * Rows the generations log keeps; older ones are deleted in the transaction that appends
 * a new one, so a server reloading for years does not grow the file. Only the newest row
 * is ever read (the generation served); the rest are there for an operator's inspection.
 */
export const GENERATIONS_KEPT = 1000;

/** The state tables: a client's record is ClientRecord as JSON (see client-record.ts). */
const STATE_TABLES = `
  CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE tokens (
    digest TEXT PRIMARY KEY CHECK (length(digest) = 64),
    client_id TEXT NOT NULL,
    expires_at INTEGER
  ) STRICT, WITHOUT ROWID;
`;

/**
 * Provider-reported tokens per client, model and UTC day (`YYYY-MM-DD`), written in
 * batches by the usage ledger (server/usage/). A day row is exact for day and month
 * budget windows, and the table stays small: clients × models × days. Keyed client
 * first, so one client's totals since a day are a range scan.
 */
const TOKEN_USAGE_TABLE = `
  CREATE TABLE token_usage (
    client_id TEXT NOT NULL,
    day TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]'),
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    PRIMARY KEY (client_id, day, model)
  ) STRICT, WITHOUT ROWID;
`;

/** The schema a new database gets, recorded as SCHEMA_VERSION in PRAGMA user_version. */
const SCHEMA = `
  -- A log: one row per keystore applied, the newest GENERATIONS_KEPT kept. AUTOINCREMENT:
  -- ids are never reused, even once deleted, so the generation metric only grows.
  CREATE TABLE generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_sha256 TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    client_count INTEGER NOT NULL,
    default_upstream_key TEXT
  ) STRICT;
  ${STATE_TABLES}
  -- Usage survives reloads and follows the client id.
  CREATE TABLE client_usage (
    client_id TEXT PRIMARY KEY,
    last_used_at INTEGER NOT NULL,
    use_count INTEGER NOT NULL
  ) STRICT;
  ${TOKEN_USAGE_TABLE}
`;
const SCHEMA_VERSION = 4;

/**
 * Older schemas, each upgraded straight to the current one, by the SQL condition that
 * picks its newest generation's rows out of its clients and tokens tables (the
 * generations and client_usage tables are unchanged since v1). v1 kept one full copy of
 * every row per generation; v2 kept row versions visible in generations [since, until).
 * v3 has the current state tables and lacks only token_usage.
 */
const NEWEST_ROWS_BY_VERSION: Readonly<Record<number, string>> = {
  1: "generation = (SELECT max(id) FROM generations)",
  2: "until IS NULL",
};

/** Writers wait this long for the lock (a CLI reading while the server applies) instead of failing. */
const BUSY_TIMEOUT_MS = 5000;
/** Owner-only, like keystore.yaml: the database holds every digest and key reference. */
const DB_FILE_MODE = 0o600;

/**
 * Opens (creating if needed) the database and its directory, in WAL mode, migrated to
 * the current schema.
 * @throws Error when the file cannot be opened or was written by a newer keygate.
 */
export function openDatabase(dbPath: string): Database.Database {
  if (dbPath !== ":memory:") {
    mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
    restrictToOwner(dbPath);
  }
  const db = new Database(dbPath);
  try {
    configure(db);
    migrate(db);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

/**
 * SQL that carries an older schema's newest generation over as the current state.
 * Records are built in recordOf's key order, so an unchanged client reads as unchanged
 * at the next apply.
 */
function upgradeFrom(newestRows: string): string {
  return `
  ALTER TABLE tokens RENAME TO old_tokens;
  ALTER TABLE clients RENAME TO old_clients;
  ${STATE_TABLES}
  INSERT INTO clients (id, record)
    SELECT id, json_object(
      'name', name,
      'kind', kind,
      'disabled', json(CASE disabled WHEN 1 THEN 'true' ELSE 'false' END),
      'upstreamKey', upstream_key,
      'routes', json(routes),
      'models', json(models))
    FROM old_clients WHERE ${newestRows};
  INSERT INTO tokens (digest, client_id, expires_at)
    SELECT digest, client_id, expires_at FROM old_tokens WHERE ${newestRows};
  -- Children first: with foreign_keys on, dropping a parent checks its children (v1).
  DROP TABLE old_tokens;
  DROP TABLE old_clients;
  `;
}

/**
 * Creates the database file owner-only before SQLite does (SQLite would make it 0644 and
 * gives -wal and -shm the main file's mode), and narrows files an older keygate left
 * wider. A file this user does not own is left as it is: that is the owner's choice.
 */
function restrictToOwner(dbPath: string): void {
  try {
    closeSync(openSync(dbPath, "wx", DB_FILE_MODE));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  for (const file of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) {
    try {
      const mode = statSync(file).mode;
      if ((mode & 0o077) !== 0) chmodSync(file, mode & 0o700);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOENT" && code !== "EPERM") throw error;
    }
  }
}

function configure(db: Database.Database): void {
  // WAL: Checks keep reading while a reload writes. NORMAL is durable against process
  // crashes in WAL mode; a power cut may lose the newest generation, which the next
  // start rebuilds from keystore.yaml anyway.
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
  db.pragma("foreign_keys = ON");
}

/** @throws Error when the database was written by a newer keygate (its schema is unknown here). */
function migrate(db: Database.Database): void {
  const version = Number(db.pragma("user_version", { simple: true }));
  if (version === SCHEMA_VERSION) return;
  const upgrade = upgradeSql(version);
  if (upgrade === undefined) {
    throw new Error(
      `database schema version ${version} is newer than this keygate understands (${SCHEMA_VERSION}); upgrade keygate or use another KEYGATE_DB`,
    );
  }
  db.transaction(() => {
    db.exec(upgrade);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

/** The SQL that takes a database at `version` (0: new) to the current schema, if known. */
function upgradeSql(version: number): string | undefined {
  if (version === 0) return SCHEMA;
  if (version === 3) return TOKEN_USAGE_TABLE;
  const newestRows = NEWEST_ROWS_BY_VERSION[version];
  return newestRows === undefined ? undefined : upgradeFrom(newestRows) + TOKEN_USAGE_TABLE;
}
