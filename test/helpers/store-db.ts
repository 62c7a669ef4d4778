/**
 * KeystoreStore test plumbing: a temporary database file, a store closed at teardown,
 * and a second read-only connection for asserting what is on disk.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { ExecutionContext } from "ava";
import Database from "better-sqlite3";
import { KeystoreStore } from "../../server/keystore/store/store.js";

/** A database path in a fresh temporary directory (removed at teardown); `subdir` is not created. */
export function tempDb(t: ExecutionContext, subdir = ""): string {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-store-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, subdir, "keystore.db");
}

/** Opens a store on `dbPath`, closed at teardown unless the test closed it first. */
export function openStore(t: ExecutionContext, dbPath: string): KeystoreStore {
  const store = KeystoreStore.open(dbPath);
  t.teardown(() => {
    try {
      store.close();
    } catch {
      // already closed by the test
    }
  });
  return store;
}

/** A second, read-only connection: what the tests check is what is on disk. */
export function inspect<T>(dbPath: string, query: (db: Database.Database) => T): T {
  const db = new Database(dbPath, { readonly: true });
  try {
    return query(db);
  } finally {
    db.close();
  }
}

// --- Databases as older keygate releases left them, for the migration tests ---

/** The tables v1 and v2 share, exactly as keygate created them. */
const GENERATIONS_AND_USAGE = `
  CREATE TABLE generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_sha256 TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    client_count INTEGER NOT NULL,
    default_upstream_key TEXT
  ) STRICT;
  CREATE TABLE client_usage (
    client_id TEXT PRIMARY KEY,
    last_used_at INTEGER NOT NULL,
    use_count INTEGER NOT NULL
  ) STRICT;
`;

/** The v1 schema (one full copy of every row per generation), frozen here on purpose. */
const V1_SCHEMA = `${GENERATIONS_AND_USAGE}
  CREATE TABLE clients (
    generation INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('client', 'internal')),
    disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    upstream_key TEXT CHECK (upstream_key IS NULL OR upstream_key GLOB 'enc:*' OR upstream_key GLOB 'env:*'),
    routes TEXT,
    models TEXT,
    PRIMARY KEY (generation, id)
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE tokens (
    generation INTEGER NOT NULL,
    digest TEXT NOT NULL CHECK (length(digest) = 64),
    client_id TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (generation, digest),
    FOREIGN KEY (generation, client_id) REFERENCES clients (generation, id) ON DELETE CASCADE
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX tokens_by_client ON tokens (generation, client_id);
`;

/** The v2 schema (row versions visible in generations [since, until)), frozen here on purpose. */
const V2_SCHEMA = `${GENERATIONS_AND_USAGE}
  CREATE TABLE clients (
    id TEXT NOT NULL,
    since INTEGER NOT NULL,
    until INTEGER CHECK (until IS NULL OR until > since),
    position INTEGER NOT NULL,
    name TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('client', 'internal')),
    disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    upstream_key TEXT CHECK (upstream_key IS NULL OR upstream_key GLOB 'enc:*' OR upstream_key GLOB 'env:*'),
    routes TEXT,
    models TEXT,
    PRIMARY KEY (id, since)
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE tokens (
    digest TEXT NOT NULL CHECK (length(digest) = 64),
    since INTEGER NOT NULL,
    until INTEGER CHECK (until IS NULL OR until > since),
    client_id TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (digest, since)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX tokens_by_client ON tokens (client_id);
`;

/** A client row of an old schema: what both versions store per client. */
export interface OldClientRow {
  readonly id: string;
  readonly name?: string | null;
  readonly kind?: "client" | "internal";
  readonly disabled?: boolean;
  readonly upstreamKey?: string | null;
  readonly routes?: readonly string[] | null;
  readonly models?: readonly string[] | null;
}

/** One generation of an old database: its clients and tokens ([digest, client id, expiry]). */
export interface OldGeneration {
  readonly defaultUpstreamKey: string | null;
  readonly clients: readonly OldClientRow[];
  readonly tokens: readonly (readonly [string, string, number | null])[];
}

function clientValues(row: OldClientRow, position: number) {
  return [
    row.id,
    position,
    row.name ?? null,
    row.kind ?? "client",
    row.disabled ? 1 : 0,
    row.upstreamKey ?? null,
    row.routes == null ? null : JSON.stringify(row.routes),
    row.models == null ? null : JSON.stringify(row.models),
  ];
}

function createOld(
  dbPath: string,
  version: 1 | 2 | 3,
  schema: string,
  write: (db: Database.Database) => void,
) {
  const db = new Database(dbPath);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("foreign_keys = ON");
    db.exec(schema);
    db.pragma(`user_version = ${version}`);
    db.transaction(() => write(db))();
  } finally {
    db.close();
  }
}

function addGeneration(db: Database.Database, generation: OldGeneration): number {
  return Number(
    db
      .prepare(
        `INSERT INTO generations (source_sha256, loaded_at, client_count, default_upstream_key)
         VALUES (?, '2026-05-01T00:00:00.000Z', ?, ?)`,
      )
      .run("a".repeat(64), generation.clients.length, generation.defaultUpstreamKey)
      .lastInsertRowid,
  );
}

/**
 * A v1 database as a v1 server leaves it: generation 1 pruned, each later one stored in
 * full, and the given usage rows ([client id, last use, count]).
 */
export function writeV1Database(
  dbPath: string,
  generations: readonly OldGeneration[],
  usage: readonly (readonly [string, number, number])[] = [],
): void {
  createOld(dbPath, 1, V1_SCHEMA, (db) => {
    addGeneration(db, { defaultUpstreamKey: null, clients: [], tokens: [] });
    db.prepare("DELETE FROM generations WHERE id = 1").run();
    const addClient = db.prepare("INSERT INTO clients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    const addToken = db.prepare("INSERT INTO tokens VALUES (?, ?, ?, ?)");
    for (const generation of generations) {
      const id = addGeneration(db, generation);
      generation.clients.forEach((row, at) => {
        addClient.run(id, ...clientValues(row, at));
      });
      for (const token of generation.tokens) addToken.run(id, ...token);
    }
    for (const row of usage) db.prepare("INSERT INTO client_usage VALUES (?, ?, ?)").run(...row);
  });
}

/**
 * A v2 database as a v2 server leaves it after applying `generations` in turn, with a
 * first, empty generation pruned: each row version runs from the generation that wrote
 * it until the one that changed or dropped it.
 */
export function writeV2Database(dbPath: string, generations: readonly OldGeneration[]): void {
  createOld(dbPath, 2, V2_SCHEMA, (db) => {
    addGeneration(db, { defaultUpstreamKey: null, clients: [], tokens: [] });
    db.prepare("DELETE FROM generations WHERE id = 1").run();
    const insert = {
      clients: db.prepare(
        `INSERT INTO clients (id, since, position, name, kind, disabled, upstream_key, routes, models)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      tokens: db.prepare(
        "INSERT INTO tokens (digest, since, client_id, expires_at) VALUES (?, ?, ?, ?)",
      ),
    };
    const retire = {
      clients: db.prepare("UPDATE clients SET until = ? WHERE id = ? AND until IS NULL"),
      tokens: db.prepare("UPDATE tokens SET until = ? WHERE digest = ? AND until IS NULL"),
    };
    let visible = { clients: new Map<string, string>(), tokens: new Map<string, string>() };
    for (const generation of generations) {
      const since = addGeneration(db, generation);
      const rows = {
        clients: generation.clients.map((row, at) => clientValues(row, at)),
        tokens: generation.tokens.map((token) => [...token]),
      };
      const next = { clients: new Map<string, string>(), tokens: new Map<string, string>() };
      for (const table of ["clients", "tokens"] as const) {
        for (const [key, ...values] of rows[table]) {
          const text = JSON.stringify(values);
          next[table].set(String(key), text);
          if (visible[table].get(String(key)) === text) continue;
          if (visible[table].has(String(key))) retire[table].run(since, key);
          insert[table].run(key, since, ...values);
        }
        for (const key of visible[table].keys()) {
          if (!next[table].has(key)) retire[table].run(since, key);
        }
      }
      visible = next;
    }
  });
}

/** The v3 schema (current state tables, no token usage), frozen here on purpose. */
const V3_SCHEMA = `${GENERATIONS_AND_USAGE}
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
 * A v3 database as a v3 server leaves it: one generation holding the clients given as
 * [id, token digest], and their last use ([client id, last use, count]).
 */
export function writeV3Database(
  dbPath: string,
  clients: readonly (readonly [string, string])[],
  usage: readonly (readonly [string, number, number])[] = [],
): void {
  createOld(dbPath, 3, V3_SCHEMA, (db) => {
    addGeneration(db, { defaultUpstreamKey: null, clients: [], tokens: [] });
    const record = JSON.stringify({
      name: null,
      kind: "client",
      disabled: false,
      upstreamKey: null,
      routes: null,
      models: null,
    });
    for (const [id, digest] of clients) {
      db.prepare("INSERT INTO clients VALUES (?, ?)").run(id, record);
      db.prepare("INSERT INTO tokens VALUES (?, ?, NULL)").run(digest, id);
    }
    for (const row of usage) db.prepare("INSERT INTO client_usage VALUES (?, ?, ?)").run(...row);
  });
}
