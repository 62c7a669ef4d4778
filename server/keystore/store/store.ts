/**
 * The keystore in SQLite: the current state of keystore.yaml (clients and token digests)
 * and a log of the generations applied. A valid keystore is applied in one transaction
 * that writes what changed against the stored state, computed here in JS, and appends
 * its generation; that change set is also what the reload logs. A Check's lookup is one
 * synchronous statement, so it sees the state before a transaction or after it, never
 * half of each. After a restart the stored state is the last good keystore, served until
 * the YAML is valid again. Only digests and `enc:`/`env:` references are stored, never a
 * token or key in clear.
 */
import { chmodSync, closeSync, mkdirSync, openSync, statSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { DIGEST_PATTERN, digestPrefix } from "../../crypto/token-hash.js";
import type {
  ClientKind,
  Generation,
  Keystore,
  KeystoreClient,
  LoadedKeystore,
  TokenMatch,
} from "../format/model.js";

/** What one keystore changed against the state before it: client ids and digest prefixes, never a secret. */
export interface KeystoreChanges {
  /** In keystore order. */
  readonly clientsAdded: readonly string[];
  /** Sorted by id. */
  readonly clientsRemoved: readonly string[];
  /** Same id, different name, kind, disabled flag, upstream key reference, routes or models; in keystore order. */
  readonly clientsChanged: readonly string[];
  /** Digest prefixes (see digestPrefix) of tokens new in the keystore, in keystore order. */
  readonly tokensAdded: readonly string[];
  /** Digest prefixes of tokens gone from the keystore, sorted. */
  readonly tokensRevoked: readonly string[];
}

/** What apply() did: the generation now served and what it changed. */
export interface AppliedKeystore {
  readonly generation: Generation;
  readonly changes: KeystoreChanges;
}

/** A current client's last use, for `keygate keystore list` (which reads the rest from the YAML). */
export interface ClientLastUse {
  readonly id: string;
  /** Epoch ms of the last recorded use, or null if never used. */
  readonly lastUsedAt: number | null;
  readonly useCount: number;
}

export interface UsageEntry {
  readonly clientId: string;
  /** Epoch ms. */
  readonly lastUsedAt: number;
  readonly count: number;
}

/** The state tables: a client's record is ClientRecord as JSON (see recordOf). */
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

/** The schema a new database gets, recorded as SCHEMA_VERSION in PRAGMA user_version. */
const SCHEMA = `
  -- A log: one row per keystore applied. AUTOINCREMENT: ids are never reused, so the
  -- generation metric only grows.
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
`;
const SCHEMA_VERSION = 3;

/**
 * Older schemas, each upgraded straight to the current one, by the SQL condition that
 * picks its newest generation's rows out of its clients and tokens tables (the
 * generations and client_usage tables are unchanged since v1). v1 kept one full copy of
 * every row per generation; v2 kept row versions visible in generations [since, until).
 */
const NEWEST_ROWS_BY_VERSION: Readonly<Record<number, string>> = {
  1: "generation = (SELECT max(id) FROM generations)",
  2: "until IS NULL",
};

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

/** Writers wait this long for the lock (a CLI reading while the server applies) instead of failing. */
const BUSY_TIMEOUT_MS = 5000;
/** Cached lookups per generation: generous for active clients, bounded for memory (~10 MB). */
const MATCH_CACHE_SIZE = 50_000;
const REFERENCE_PATTERN = /^(enc|env):/;
/** Hex SHA-256. */
const DIGEST_LENGTH = 64;
/** Owner-only, like keystore.yaml: the database holds every digest and key reference. */
const DB_FILE_MODE = 0o600;

/** `clients.record`: a client without its id and tokens. */
interface ClientRecord {
  readonly name: string | null;
  readonly kind: ClientKind;
  readonly disabled: boolean;
  readonly upstreamKey: string | null;
  readonly routes: readonly string[] | null;
  readonly models: readonly string[] | null;
}

/** The stored state, read once per apply to diff the new keystore against. */
interface StoredState {
  /** Record JSON by client id. */
  readonly clients: Map<string, string>;
  /** `<client id> <expiry or nothing>` by digest (see tokenValue). */
  readonly tokens: Map<string, string>;
}

/** A client's id and record JSON. */
type ClientRow = readonly [id: string, record: string];
/** A token's digest, client id and expiry (epoch ms or null). */
type TokenRow = readonly [digest: string, clientId: string, expiresAt: number | null];

/** The writes from the stored state to a keystore's; see diffState. */
interface StateDiff {
  readonly insertClients: readonly ClientRow[];
  readonly updateClients: readonly ClientRow[];
  readonly deleteClients: readonly string[];
  readonly insertTokens: readonly TokenRow[];
  readonly updateTokens: readonly TokenRow[];
  readonly deleteTokens: readonly string[];
}

interface GenerationRow {
  id: number;
  source_sha256: string;
  loaded_at: string;
  client_count: number;
  default_upstream_key: string | null;
}

interface MatchRow {
  client_id: string;
  expires_at: number | null;
  record: string;
  generation: number;
  default_upstream_key: string | null;
}

export class KeystoreStore {
  private generation: Generation | undefined;
  /** Known digests of the current generation, so a busy client costs one SQLite read per generation. */
  private readonly matches = new Map<string, TokenMatch>();
  private readonly statements: ReturnType<typeof prepareStatements>;
  private readonly applyTransaction: (loaded: LoadedKeystore, loadedAt: string) => AppliedKeystore;
  private readonly usageTransaction: (entries: readonly UsageEntry[]) => void;

  private constructor(private readonly db: Database.Database) {
    this.statements = prepareStatements(db);
    const apply = db.transaction((loaded: LoadedKeystore, loadedAt: string) =>
      this.write(loaded, loadedAt),
    );
    // IMMEDIATE takes the write lock up front, so two writers wait (busy_timeout) rather
    // than deadlock, and no other connection can write between reading the stored state
    // and writing the change set computed against it.
    this.applyTransaction = (loaded, loadedAt) => apply.immediate(loaded, loadedAt);
    const usage = db.transaction((entries: readonly UsageEntry[]) => {
      for (const entry of entries) {
        this.statements.upsertUsage.run(entry.clientId, entry.lastUsedAt, entry.count);
      }
    });
    this.usageTransaction = (entries) => usage.immediate(entries);
    this.generation = this.readLatestGeneration();
  }

  /**
   * Opens (creating if needed) the database and its directory, in WAL mode, migrated to
   * the current schema.
   * @throws Error when the file cannot be opened or was written by a newer keygate.
   */
  static open(dbPath: string): KeystoreStore {
    if (dbPath !== ":memory:") {
      mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
      restrictToOwner(dbPath);
    }
    const db = new Database(dbPath);
    try {
      configure(db);
      migrate(db);
      return new KeystoreStore(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /**
   * Makes writes on this connection fail at once with SQLITE_BUSY instead of waiting for
   * another writer. For the server's main thread: a usage write waiting on the reload
   * worker's transaction would block the event loop, and every Check with it. Reads
   * never wait in WAL mode.
   */
  neverWaitForWriters(): void {
    this.db.pragma("busy_timeout = 0");
  }

  /**
   * Applies a validated keystore as a new generation (one transaction) and makes it
   * current. Only what differs from the stored state is written.
   * @throws Error when the keystore holds something that is not a digest or a key
   *   reference (a programming error: nothing in clear may reach the database), or on
   *   SQLite failure, including SQLITE_CONSTRAINT_PRIMARYKEY for a client id or digest
   *   listed twice. Nothing is written then.
   */
  apply(loaded: LoadedKeystore, now: Date): AppliedKeystore {
    assertNoSecrets(loaded.keystore);
    const applied = this.applyTransaction(loaded, now.toISOString());
    this.generation = applied.generation;
    this.matches.clear();
    return applied;
  }

  /**
   * Re-reads the newest generation from disk and makes it current: the reload worker
   * applies through its own connection, and this one must then switch over.
   * @returns the current generation.
   * @throws Error on SQLite failure.
   */
  refresh(): Generation | undefined {
    const latest = this.readLatestGeneration();
    if (latest?.id !== this.generation?.id) {
      this.generation = latest;
      this.matches.clear();
    }
    return this.generation;
  }

  /** The generation this connection serves; after a restart, the last good one from disk. */
  current(): Generation | undefined {
    return this.generation;
  }

  /**
   * The client holding `digest` (lowercase hex), with the generation it was read from.
   * Nothing is found before this connection knows a generation. A generation another
   * connection applied is read as soon as it is committed, but only cached once
   * refresh() has switched to it.
   * @throws Error on SQLite failure (the Check path turns that into a denial).
   */
  lookup(digest: string): TokenMatch | undefined {
    const generation = this.generation;
    if (generation === undefined) return undefined;
    const cached = this.matches.get(digest);
    if (cached !== undefined) return cached;
    const row = this.statements.lookup.get(digest);
    if (row === undefined) return undefined;
    const match = toMatch(row);
    if (row.generation === generation.id) {
      // Only hits are kept, so unknown tokens cannot fill the cache; at the cap it starts over.
      if (this.matches.size >= MATCH_CACHE_SIZE) this.matches.clear();
      this.matches.set(digest, match);
    }
    return match;
  }

  /**
   * Adds use counts and moves last-use times forward (never back, so batches may arrive
   * out of order), all in one transaction.
   * @throws Error on SQLite failure.
   */
  recordUsage(entries: ReadonlyArray<UsageEntry>): void {
    if (entries.length > 0) this.usageTransaction(entries);
  }

  /**
   * The stored clients' last use, by id; never a secret.
   * @throws Error on SQLite failure.
   */
  listClients(): ClientLastUse[] {
    return this.statements.lastUse.all().map((row) => ({
      id: row.id,
      lastUsedAt: row.last_used_at,
      useCount: row.use_count ?? 0,
    }));
  }

  /** Closes the database; the store cannot be used afterwards. */
  close(): void {
    this.db.close();
  }

  /**
   * Inside the apply transaction: writes what the keystore changed against the stored
   * state, and the new generation.
   */
  private write(loaded: LoadedKeystore, loadedAt: string): AppliedKeystore {
    const { keystore, sourceSha256 } = loaded;
    const s = this.statements;
    const diff = diffState(this.readState(), keystore);
    for (const [id, record] of diff.insertClients) s.insertClient.run(id, record);
    for (const [id, record] of diff.updateClients) s.updateClient.run(record, id);
    for (const id of diff.deleteClients) s.deleteClient.run(id);
    for (const [digest, clientId, expiresAt] of diff.insertTokens) {
      s.insertToken.run(digest, clientId, expiresAt);
    }
    for (const [digest, clientId, expiresAt] of diff.updateTokens) {
      s.updateToken.run(clientId, expiresAt, digest);
    }
    for (const digest of diff.deleteTokens) s.deleteToken.run(digest);
    const generation = {
      sourceSha256,
      loadedAt,
      clientCount: keystore.clients.length,
      defaultUpstreamKey: keystore.defaultUpstreamKey,
    };
    const { lastInsertRowid } = s.insertGeneration.run(
      sourceSha256,
      loadedAt,
      generation.clientCount,
      generation.defaultUpstreamKey,
    );
    return {
      generation: { id: Number(lastInsertRowid), ...generation },
      changes: {
        clientsAdded: diff.insertClients.map(([id]) => id),
        clientsRemoved: diff.deleteClients,
        clientsChanged: diff.updateClients.map(([id]) => id),
        tokensAdded: diff.insertTokens.map(([digest]) => digestPrefix(digest)),
        tokensRevoked: diff.deleteTokens.map(digestPrefix),
      },
    };
  }

  /**
   * The stored clients and tokens. One text per table, split here, rather than a row
   * object each: better-sqlite3 spends about a microsecond per row object, more than
   * SQLite and the split take together. Tab and newline cannot occur in a client id
   * (the schema's pattern) or a record (JSON escapes them), and a digest is 64 characters.
   */
  private readState(): StoredState {
    const clients = new Map<string, string>();
    for (const line of lines(this.statements.storedClients.get())) {
      const tab = line.indexOf("\t");
      clients.set(line.slice(0, tab), line.slice(tab + 1));
    }
    const tokens = new Map<string, string>();
    for (const line of lines(this.statements.storedTokens.get())) {
      tokens.set(line.slice(0, DIGEST_LENGTH), line.slice(DIGEST_LENGTH));
    }
    return { clients, tokens };
  }

  private readLatestGeneration(): Generation | undefined {
    const row = this.statements.latestGeneration.get();
    return row === undefined ? undefined : toGeneration(row);
  }
}

/**
 * The rows that turn the stored state into `keystore`'s: new and changed clients and
 * tokens in keystore order, removed ones sorted. Consumes `stored`. A client id or digest
 * listed twice lands in an insert list the second time (the first took it out of
 * `stored`), where SQLite refuses it with SQLITE_CONSTRAINT_PRIMARYKEY.
 */
function diffState(stored: StoredState, keystore: Keystore): StateDiff {
  const diff = {
    insertClients: [] as ClientRow[],
    updateClients: [] as ClientRow[],
    insertTokens: [] as TokenRow[],
    updateTokens: [] as TokenRow[],
  };
  for (const client of keystore.clients) {
    const record = recordOf(client);
    const old = stored.clients.get(client.id);
    if (old === undefined) diff.insertClients.push([client.id, record]);
    else {
      stored.clients.delete(client.id);
      if (old !== record) diff.updateClients.push([client.id, record]);
    }
    for (const { digest, expiresAt } of client.tokens) {
      const old = stored.tokens.get(digest);
      const row: TokenRow = [digest, client.id, expiresAt];
      if (old === undefined) diff.insertTokens.push(row);
      else {
        stored.tokens.delete(digest);
        // Moved to another client or given another expiry: the same token, updated.
        if (old !== tokenValue(client.id, expiresAt)) diff.updateTokens.push(row);
      }
    }
  }
  return {
    ...diff,
    deleteClients: [...stored.clients.keys()].sort(),
    deleteTokens: [...stored.tokens.keys()].sort(),
  };
}

/** A stored token's client and expiry as readState reads them, for comparison. */
function tokenValue(clientId: string, expiresAt: number | null): string {
  return `${clientId} ${expiresAt ?? ""}`;
}

function lines(text: string | null | undefined): string[] {
  return text == null ? [] : text.split("\n");
}

/** The record JSON of a client. Keys in a fixed order, so equal records are equal strings. */
function recordOf(client: KeystoreClient): string {
  const record: ClientRecord = {
    name: client.name,
    kind: client.kind,
    disabled: client.disabled,
    upstreamKey: client.upstreamKey,
    routes: client.routes,
    models: client.models,
  };
  return JSON.stringify(record);
}

function toMatch(row: MatchRow): TokenMatch {
  const record = JSON.parse(row.record) as ClientRecord;
  const own = record.upstreamKey;
  return Object.freeze({
    generation: row.generation,
    clientId: row.client_id,
    kind: record.kind,
    disabled: record.disabled,
    expiresAt: row.expires_at,
    upstreamKey: own ?? row.default_upstream_key,
    upstreamKeyIsDefault: own === null && row.default_upstream_key !== null,
    routes: record.routes === null ? null : Object.freeze(record.routes),
    models: record.models === null ? null : Object.freeze(record.models),
  });
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
  const newestRows = NEWEST_ROWS_BY_VERSION[version];
  if (version !== 0 && newestRows === undefined) {
    throw new Error(
      `database schema version ${version} is newer than this keygate understands (${SCHEMA_VERSION}); upgrade keygate or use another KEYGATE_DB`,
    );
  }
  db.transaction(() => {
    db.exec(newestRows === undefined ? SCHEMA : upgradeFrom(newestRows));
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

function prepareStatements(db: Database.Database) {
  return {
    insertGeneration: db.prepare<[string, string, number, string | null]>(
      `INSERT INTO generations (source_sha256, loaded_at, client_count, default_upstream_key)
       VALUES (?, ?, ?, ?)`,
    ),
    latestGeneration: db.prepare<[], GenerationRow>(
      `SELECT id, source_sha256, loaded_at, client_count, default_upstream_key
       FROM generations ORDER BY id DESC LIMIT 1`,
    ),
    insertClient: db.prepare<[string, string]>("INSERT INTO clients (id, record) VALUES (?, ?)"),
    updateClient: db.prepare<[string, string]>("UPDATE clients SET record = ? WHERE id = ?"),
    deleteClient: db.prepare<[string]>("DELETE FROM clients WHERE id = ?"),
    insertToken: db.prepare<[string, string, number | null]>(
      "INSERT INTO tokens (digest, client_id, expires_at) VALUES (?, ?, ?)",
    ),
    updateToken: db.prepare<[string, number | null, string]>(
      "UPDATE tokens SET client_id = ?, expires_at = ? WHERE digest = ?",
    ),
    deleteToken: db.prepare<[string]>("DELETE FROM tokens WHERE digest = ?"),
    storedClients: db
      .prepare<[], string | null>(
        "SELECT group_concat(id || char(9) || record, char(10)) FROM clients",
      )
      .pluck(),
    storedTokens: db
      .prepare<[], string | null>(
        `SELECT group_concat(digest || client_id || ' ' || ifnull(expires_at, ''), char(10))
         FROM tokens`,
      )
      .pluck(),
    // Two primary-key seeks (the token, its client) and the newest generation's row, in
    // one statement: the record and the default key come from the same committed state.
    lookup: db.prepare<[string], MatchRow>(
      `SELECT t.client_id, t.expires_at, c.record, g.id AS generation, g.default_upstream_key
       FROM tokens t
       JOIN clients c ON c.id = t.client_id
       JOIN (SELECT id, default_upstream_key FROM generations ORDER BY id DESC LIMIT 1) g
       WHERE t.digest = ?`,
    ),
    upsertUsage: db.prepare<[string, number, number]>(
      `INSERT INTO client_usage (client_id, last_used_at, use_count) VALUES (?, ?, ?)
       ON CONFLICT (client_id) DO UPDATE SET
         last_used_at = max(last_used_at, excluded.last_used_at),
         use_count = use_count + excluded.use_count`,
    ),
    lastUse: db.prepare<[], { id: string; last_used_at: number | null; use_count: number | null }>(
      `SELECT c.id, u.last_used_at, u.use_count
       FROM clients c LEFT JOIN client_usage u ON u.client_id = c.id
       ORDER BY c.id`,
    ),
  };
}

/**
 * Defence in depth: the loader only produces digests and references, but apply() is the
 * last gate before disk, so a raw token or key handed to it by mistake is refused.
 * @throws Error naming the client, never the offending value.
 */
function assertNoSecrets(keystore: Keystore): void {
  const badReference = (value: string | null) => value !== null && !REFERENCE_PATTERN.test(value);
  if (badReference(keystore.defaultUpstreamKey)) {
    throw new Error("refusing to store defaults.upstream_key: not an enc: or env: reference");
  }
  for (const client of keystore.clients) {
    if (badReference(client.upstreamKey)) {
      throw new Error(
        `refusing to store client "${client.id}": upstream key is not an enc: or env: reference`,
      );
    }
    if (client.tokens.some((token) => !DIGEST_PATTERN.test(token.digest))) {
      throw new Error(
        `refusing to store client "${client.id}": a token is not a lowercase SHA-256 digest`,
      );
    }
  }
}

function toGeneration(row: GenerationRow): Generation {
  return {
    id: row.id,
    sourceSha256: row.source_sha256,
    loadedAt: row.loaded_at,
    clientCount: row.client_count,
    defaultUpstreamKey: row.default_upstream_key,
  };
}
