/**
 * The keystore in SQLite. Each valid keystore.yaml is applied as a new *generation* in
 * one transaction, so a Check sees either the old keystore or the new one, never half of
 * each; after a restart the newest generation on disk is the last good one and is served
 * until the YAML is valid again. Rows are versioned rather than copied per generation:
 * each carries the range of generations it is visible in, so applying an edit writes
 * only what the edit changed, which keeps a revocation at 100 000 clients off a
 * 200 000-row rewrite. Lookups are one primary-key read on a statement prepared once.
 * Only digests and `enc:`/`env:` references are stored, never a token or key in clear.
 */
import { chmodSync, closeSync, mkdirSync, openSync, statSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { DIGEST_PATTERN, digestPrefix } from "../crypto/token-hash.js";
import type { ClientKind, Generation, Keystore, LoadedKeystore, TokenMatch } from "./types.js";

/** One row of `keygate keystore list`: what an operator needs, no secrets. */
export interface ClientSummary {
  readonly id: string;
  readonly name: string | null;
  readonly kind: ClientKind;
  readonly disabled: boolean;
  readonly tokenCount: number;
  /** Tokens whose expiry has passed; they still count in tokenCount until revoked. */
  readonly expiredTokenCount: number;
  /** Earliest expiry (epoch ms) still in the future, or null when no token will expire. */
  readonly nextExpiry: number | null;
  readonly upstreamKeyKind: "enc" | "env" | "default" | "none";
  /** Epoch ms of the last recorded use, or null if never used. */
  readonly lastUsedAt: number | null;
  readonly useCount: number;
}

/** What one generation changed against another: client ids and digest prefixes, never a secret. */
export interface KeystoreChanges {
  readonly clientsAdded: readonly string[];
  readonly clientsRemoved: readonly string[];
  /** Same id, different name, kind, disabled flag, upstream key reference, routes or models. */
  readonly clientsChanged: readonly string[];
  /** Digest prefixes (see digestPrefix) of tokens new in the later generation. */
  readonly tokensAdded: readonly string[];
  /** Digest prefixes of tokens gone from the later generation. */
  readonly tokensRevoked: readonly string[];
}

export interface UsageEntry {
  readonly clientId: string;
  /** Epoch ms. */
  readonly lastUsedAt: number;
  readonly count: number;
}

/**
 * Schema versions, applied in order and recorded in PRAGMA user_version. Append, never
 * edit: a database written by this release must open in the next one.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE generations (
    -- AUTOINCREMENT: ids are never reused after pruning, so the generation metric only grows.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_sha256 TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    client_count INTEGER NOT NULL,
    default_upstream_key TEXT
  ) STRICT;
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
  -- Not generation-scoped: usage survives reloads and follows the client id.
  CREATE TABLE client_usage (
    client_id TEXT PRIMARY KEY,
    last_used_at INTEGER NOT NULL,
    use_count INTEGER NOT NULL
  ) STRICT;
  `,
  // v2: rows carry the generations they are visible in, [since, until), instead of one
  // full copy per generation; see visibleIn. Only the newest v1 generation is carried
  // over (it is what a restart serves); the generations table and its ids stay. No
  // foreign keys: a row outlives the generation that created it, so `since` cannot
  // cascade from generations, and a token's row need not share its client's `since`.
  `
  CREATE TABLE clients_v2 (
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
  CREATE TABLE tokens_v2 (
    digest TEXT NOT NULL CHECK (length(digest) = 64),
    since INTEGER NOT NULL,
    until INTEGER CHECK (until IS NULL OR until > since),
    client_id TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (digest, since)
  ) STRICT, WITHOUT ROWID;
  INSERT INTO clients_v2 (id, since, until, position, name, kind, disabled, upstream_key, routes, models)
    SELECT id, generation, NULL, position, name, kind, disabled, upstream_key, routes, models
    FROM clients WHERE generation = (SELECT max(id) FROM generations);
  INSERT INTO tokens_v2 (digest, since, until, client_id, expires_at)
    SELECT digest, generation, NULL, client_id, expires_at
    FROM tokens WHERE generation = (SELECT max(id) FROM generations);
  -- Children first: with foreign_keys on, dropping a parent checks its children.
  DROP TABLE tokens;
  DROP TABLE clients;
  DELETE FROM generations WHERE id < (SELECT max(id) FROM generations);
  ALTER TABLE clients_v2 RENAME TO clients;
  ALTER TABLE tokens_v2 RENAME TO tokens;
  -- For listClients' token counts; lookups and diffs go through the primary keys.
  CREATE INDEX tokens_by_client ON tokens (client_id);
  `,
];

/** Writers wait this long for the lock (a CLI reading while the server applies) instead of failing. */
const BUSY_TIMEOUT_MS = 5000;
/** Cached lookups per generation: generous for active clients, bounded for memory (~10 MB). */
const MATCH_CACHE_SIZE = 50_000;
const REFERENCE_PATTERN = /^(enc|env):/;
/**
 * Read as "no generation": ids start at 1 (AUTOINCREMENT), so no row is visible in 0.
 * diff() reads a pruned or unknown generation as this, since rows it shared with a
 * newer generation are still stored and would otherwise show through.
 */
const NO_GENERATION = 0;

/**
 * SQL for "row `alias` is visible in generation `param`". A row written by generation
 * `since` stays visible until the generation `until` that changed or dropped it (NULL:
 * still visible). `until` only ever names a generation that existed when it was set,
 * so in the newest generation the visible rows are exactly those with `until IS NULL`.
 */
function visibleIn(alias: string, param: string): string {
  return `(${alias}.since <= ${param} AND (${alias}.until IS NULL OR ${alias}.until > ${param}))`;
}

interface GenerationRow {
  id: number;
  source_sha256: string;
  loaded_at: string;
  client_count: number;
  default_upstream_key: string | null;
}

/** One stored version of a client, as in the `clients` table (minus `until`). */
interface ClientRow {
  readonly id: string;
  readonly since: number;
  readonly position: number;
  readonly name: string | null;
  readonly kind: ClientKind;
  readonly disabled: 0 | 1;
  readonly upstream_key: string | null;
  readonly routes: string | null;
  readonly models: string | null;
}

/** One stored version of a token, as in the `tokens` table (minus `until`). */
interface TokenRow {
  readonly digest: string;
  readonly since: number;
  readonly client_id: string;
  readonly expires_at: number | null;
}

/** ClientRow's columns in order, as newestClients reads them. */
type ClientTuple = [
  string,
  number,
  number,
  string | null,
  ClientKind,
  0 | 1,
  string | null,
  string | null,
  string | null,
];
/** TokenRow's columns in order, as newestTokens reads them. */
type TokenTuple = [string, number, string, number | null];

/**
 * The rows visible in one generation: what apply() diffs the next keystore against
 * without reading 200 000 rows back. Holds what the database holds (digests and key
 * references), nothing more.
 */
interface Snapshot {
  readonly generation: number;
  readonly clients: readonly ClientRow[];
  readonly tokens: readonly TokenRow[];
}

const EMPTY_SNAPSHOT: Snapshot = { generation: NO_GENERATION, clients: [], tokens: [] };

interface MatchRow {
  client_id: string;
  expires_at: number | null;
  kind: ClientKind;
  disabled: 0 | 1;
  upstream_key: string | null;
  routes: string | null;
  models: string | null;
}

interface SummaryRow {
  id: string;
  name: string | null;
  kind: ClientKind;
  disabled: 0 | 1;
  upstream_key: string | null;
  token_count: number;
  expired_token_count: number;
  next_expiry: number | null;
  last_used_at: number | null;
  use_count: number | null;
}

interface ClientPolicy {
  readonly routes: readonly string[] | null;
  readonly models: readonly string[] | null;
}

export class KeystoreStore {
  private generation: Generation | undefined;
  /** Parsed routes/models by client id for the current generation, so lookups never JSON.parse twice. */
  private readonly policies = new Map<string, ClientPolicy>();
  /** Known digests of the current generation, so a busy client costs one SQLite read per generation. */
  private readonly matches = new Map<string, TokenMatch>();
  /**
   * The last generation this connection applied. Trusted only while it is still the
   * newest on disk; after another connection applies, apply() reads the rows instead.
   */
  private snapshot: Snapshot | undefined;

  private readonly statements: ReturnType<typeof prepareStatements>;
  private readonly applyTransaction: (
    loaded: LoadedKeystore,
    loadedAt: string,
  ) => { generation: Generation; snapshot: Snapshot };
  private readonly usageTransaction: (entries: readonly UsageEntry[]) => void;
  private readonly pruneTransaction: () => void;

  private constructor(private readonly db: Database.Database) {
    this.statements = prepareStatements(db);
    const apply = db.transaction((loaded: LoadedKeystore, loadedAt: string) =>
      this.writeGeneration(loaded, loadedAt),
    );
    // IMMEDIATE takes the write lock up front, so two writers wait (busy_timeout) rather
    // than deadlock, and no other connection can apply between reading the newest
    // generation and writing the next one against it.
    this.applyTransaction = (loaded, loadedAt) => apply.immediate(loaded, loadedAt);
    const usage = db.transaction((entries: readonly UsageEntry[]) => {
      for (const entry of entries) {
        this.statements.upsertUsage.run(entry.clientId, entry.lastUsedAt, entry.count);
      }
    });
    this.usageTransaction = (entries) => usage.immediate(entries);
    const prune = db.transaction(() => {
      const newest = this.statements.latestGeneration.get()?.id;
      if (newest === undefined) return;
      const previous = this.statements.previousGeneration.get(newest)?.id ?? newest;
      // Rows that stopped being visible at or before `previous` are visible in neither
      // generation kept; rows still visible in either have `until` NULL or > previous.
      this.statements.pruneTokens.run(previous);
      this.statements.pruneClients.run(previous);
      this.statements.pruneGenerations.run(previous);
    });
    this.pruneTransaction = () => prune.immediate();
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
   * Applies a validated keystore as a new generation (one transaction), makes it current,
   * and prunes generations older than the previous one unless `prune` is false (the
   * reload worker prunes later, off the revocation's critical path). Only rows that
   * differ from the newest generation on disk are written.
   * @throws Error when the keystore holds something that is not a digest or a key
   *   reference (a programming error: nothing in clear may reach the database), or on
   *   SQLite failure, including SQLITE_CONSTRAINT_PRIMARYKEY for a client id or digest
   *   listed twice.
   */
  apply(loaded: LoadedKeystore, now: Date, options: { readonly prune?: boolean } = {}): Generation {
    assertNoSecrets(loaded.keystore);
    let applied: { generation: Generation; snapshot: Snapshot };
    try {
      applied = this.applyTransaction(loaded, now.toISOString());
    } catch (error) {
      // Rolled back, so the snapshot would still match; dropping it costs one read of the
      // rows next time and guards against a failure that left it out of step.
      this.snapshot = undefined;
      throw error;
    }
    const { generation } = applied;
    this.snapshot = applied.snapshot;
    if (options.prune ?? true) this.prune();
    this.generation = generation;
    this.policies.clear();
    this.matches.clear();
    return generation;
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
      this.policies.clear();
      this.matches.clear();
    }
    return this.generation;
  }

  /** The newest generation; after a restart, the last good one from disk. */
  current(): Generation | undefined {
    return this.generation;
  }

  /**
   * The client holding `digest` (lowercase hex) in the current generation.
   * @throws Error on SQLite failure (the Check path turns that into a denial).
   */
  lookup(digest: string): TokenMatch | undefined {
    const generation = this.generation;
    if (generation === undefined) return undefined;
    const cached = this.matches.get(digest);
    if (cached !== undefined) return cached;
    const row = this.statements.lookup.get(digest, generation.id);
    if (row === undefined) return undefined;
    const policy = this.policyOf(row);
    const match: TokenMatch = Object.freeze({
      generation: generation.id,
      clientId: row.client_id,
      kind: row.kind,
      disabled: row.disabled === 1,
      expiresAt: row.expires_at,
      upstreamKey: row.upstream_key ?? generation.defaultUpstreamKey,
      upstreamKeyIsDefault: row.upstream_key === null && generation.defaultUpstreamKey !== null,
      routes: policy.routes,
      models: policy.models,
    });
    // Only hits are kept, so unknown tokens cannot fill the cache; at the cap it starts over.
    if (this.matches.size >= MATCH_CACHE_SIZE) this.matches.clear();
    this.matches.set(digest, match);
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
   * The current generation's clients in keystore order, with usage; never a secret.
   * @throws Error on SQLite failure.
   */
  listClients(now: Date = new Date()): ClientSummary[] {
    const generation = this.generation;
    if (generation === undefined) return [];
    return this.statements.summaries
      .all({ generation: generation.id, now: now.getTime() })
      .map((row) => toSummary(row, generation));
  }

  /**
   * What `to` changed against `from`, for the reload log line. A generation that was
   * pruned (or never existed) reads as empty, so everything in the other one differs.
   * @throws Error on SQLite failure.
   */
  diff(from: number, to: number): KeystoreChanges {
    const { clientsOnlyIn, clientsChanged, digestsOnlyIn, generationExists } = this.statements;
    const stored = (id: number) => (generationExists.get(id) === undefined ? NO_GENERATION : id);
    const [a, b] = [stored(from), stored(to)];
    return {
      clientsAdded: clientsOnlyIn.all({ present: b, absent: a }),
      clientsRemoved: clientsOnlyIn.all({ present: a, absent: b }),
      clientsChanged: clientsChanged.all({ from: a, to: b }),
      tokensAdded: digestsOnlyIn.all({ present: b, absent: a }).map(digestPrefix),
      tokensRevoked: digestsOnlyIn.all({ present: a, absent: b }).map(digestPrefix),
    };
  }

  /** Closes the database; the store cannot be used afterwards. */
  close(): void {
    this.db.close();
  }

  /**
   * Deletes every generation older than the one before the newest (one transaction): the
   * newest is served, the one before may still be finishing in-flight Checks.
   * @throws Error on SQLite failure.
   */
  prune(): void {
    this.pruneTransaction();
  }

  private writeGeneration(
    loaded: LoadedKeystore,
    loadedAt: string,
  ): { generation: Generation; snapshot: Snapshot } {
    const { keystore, sourceSha256 } = loaded;
    const base = this.newestSnapshot();
    const id = Number(
      this.statements.insertGeneration.run(
        sourceSha256,
        loadedAt,
        keystore.clients.length,
        keystore.defaultUpstreamKey,
      ).lastInsertRowid,
    );
    const clients = this.writeClients(keystore.clients, base.clients, id);
    const tokens = this.writeTokens(keystore.clients, base.tokens, id);
    return {
      generation: {
        id,
        sourceSha256,
        loadedAt,
        clientCount: keystore.clients.length,
        defaultUpstreamKey: keystore.defaultUpstreamKey,
      },
      snapshot: { generation: id, clients, tokens },
    };
  }

  /** The newest generation's rows: the snapshot when it is that generation, else read from disk. */
  private newestSnapshot(): Snapshot {
    const newest = this.statements.latestGeneration.get()?.id;
    if (newest === undefined) return EMPTY_SNAPSHOT;
    if (this.snapshot?.generation === newest) return this.snapshot;
    const { newestClients, newestTokens } = this.statements;
    return {
      generation: newest,
      clients: parseTuples<ClientTuple>(newestClients.get()).map(toClientRow),
      tokens: parseTuples<TokenTuple>(newestTokens.get()).map(toTokenRow),
    };
  }

  /**
   * Writes generation `id`'s clients against the newest generation's (`before`): a new
   * version for each new or changed client, `until = id` on each changed or dropped one.
   * `position` only orders listClients, so it is moved in place on the visible version
   * instead of versioned: a removal in the middle of the list would otherwise version
   * every client after it. Positions need only increase down the list, so a client keeps
   * its old one when it still does and only clients out of order are moved. The cost is
   * that an older generation still stored shows the newer order.
   *
   * The new keystore is indexed by key and the old rows are looked up in it, not the
   * other way round: at 100 000 clients, hashing key strings is most of an edit's cost,
   * and this way each side is hashed once (the new keys must be indexed anyway to refuse
   * duplicates) and the old rows, when read from disk, need no index of their own.
   * @throws SqliteError SQLITE_CONSTRAINT_PRIMARYKEY when a client id is listed twice.
   */
  private writeClients(
    clients: Keystore["clients"],
    before: readonly ClientRow[],
    id: number,
  ): ClientRow[] {
    const { insertClient, retireClient, moveClient } = this.statements;
    const indexOf = new Map<string, number>();
    clients.forEach((client, index) => {
      indexOf.set(client.id, index);
      if (indexOf.size === index) throw duplicateKey("clients.id");
    });
    const olds = new Array<ClientRow | undefined>(clients.length);
    for (const old of before) {
      const index = indexOf.get(old.id);
      if (index === undefined) expectOneRow(retireClient.run(id, old.id, old.since));
      else olds[index] = old;
    }
    const after: ClientRow[] = [];
    let last = -1;
    clients.forEach((client, index) => {
      const old = olds[index];
      const position = old !== undefined && old.position > last ? old.position : last + 1;
      last = position;
      const disabled = client.disabled ? 1 : 0;
      const routes = client.routes === null ? null : JSON.stringify(client.routes);
      const models = client.models === null ? null : JSON.stringify(client.models);
      // Everything but position: what diff() reports as a changed client.
      if (
        old !== undefined &&
        old.name === client.name &&
        old.kind === client.kind &&
        old.disabled === disabled &&
        old.upstream_key === client.upstreamKey &&
        old.routes === routes &&
        old.models === models
      ) {
        if (old.position === position) {
          after.push(old);
        } else {
          expectOneRow(moveClient.run(position, old.id, old.since));
          after.push({ ...old, position });
        }
        return;
      }
      if (old !== undefined) expectOneRow(retireClient.run(id, old.id, old.since));
      const row: ClientRow = {
        id: client.id,
        since: id,
        position,
        name: client.name,
        kind: client.kind,
        disabled,
        upstream_key: client.upstreamKey,
        routes,
        models,
      };
      insertClient.run(
        row.id,
        row.since,
        row.position,
        row.name,
        row.kind,
        row.disabled,
        row.upstream_key,
        row.routes,
        row.models,
      );
      after.push(row);
    });
    return after;
  }

  /**
   * Writes generation `id`'s tokens against the newest generation's (`before`), keyed by
   * digest, as writeClients does: a token moved to another client or given another
   * expiry is a new version.
   * @throws SqliteError SQLITE_CONSTRAINT_PRIMARYKEY when a digest is listed twice.
   */
  private writeTokens(
    clients: Keystore["clients"],
    before: readonly TokenRow[],
    id: number,
  ): TokenRow[] {
    const { insertToken, retireToken } = this.statements;
    // Tokens are numbered in keystore order, client by client.
    const indexOf = new Map<string, number>();
    for (const client of clients) {
      for (const { digest } of client.tokens) {
        const index = indexOf.size;
        indexOf.set(digest, index);
        if (indexOf.size === index) throw duplicateKey("tokens.digest");
      }
    }
    const olds = new Array<TokenRow | undefined>(indexOf.size);
    for (const old of before) {
      const index = indexOf.get(old.digest);
      if (index === undefined) expectOneRow(retireToken.run(id, old.digest, old.since));
      else olds[index] = old;
    }
    const after: TokenRow[] = [];
    for (const client of clients) {
      for (const { digest, expiresAt } of client.tokens) {
        const old = olds[after.length];
        if (old !== undefined && old.client_id === client.id && old.expires_at === expiresAt) {
          after.push(old);
          continue;
        }
        if (old !== undefined) expectOneRow(retireToken.run(id, old.digest, old.since));
        insertToken.run(digest, id, client.id, expiresAt);
        after.push({ digest, since: id, client_id: client.id, expires_at: expiresAt });
      }
    }
    return after;
  }

  private readLatestGeneration(): Generation | undefined {
    const row = this.statements.latestGeneration.get();
    return row === undefined ? undefined : toGeneration(row);
  }

  private policyOf(row: MatchRow): ClientPolicy {
    let policy = this.policies.get(row.client_id);
    if (policy === undefined) {
      policy = { routes: parseList(row.routes), models: parseList(row.models) };
      this.policies.set(row.client_id, policy);
    }
    return policy;
  }
}

/**
 * The error SQLite raised for a key listed twice when every generation was written in
 * full. An unchanged row is no longer written, so SQLite cannot see the duplicate itself.
 */
function duplicateKey(column: string): Error {
  return new Database.SqliteError(
    `UNIQUE constraint failed: ${column}`,
    "SQLITE_CONSTRAINT_PRIMARYKEY",
  );
}

/**
 * A retire or move matched no row only when the snapshot disagrees with the database;
 * failing rolls the generation back rather than versioning on a wrong picture.
 * @throws Error when `result` changed other than exactly one row.
 */
function expectOneRow(result: Database.RunResult): void {
  if (result.changes !== 1) {
    throw new Error("keystore rows changed under this connection; apply again");
  }
}

/** Rows read as one JSON array of arrays (see newestClients); none reads as empty. */
function parseTuples<T>(json: string | null | undefined): T[] {
  return json == null ? [] : (JSON.parse(json) as T[]);
}

function toClientRow([
  id,
  since,
  position,
  name,
  kind,
  disabled,
  upstream_key,
  routes,
  models,
]: ClientTuple): ClientRow {
  return { id, since, position, name, kind, disabled, upstream_key, routes, models };
}

function toTokenRow([digest, since, client_id, expires_at]: TokenTuple): TokenRow {
  return { digest, since, client_id, expires_at };
}

/** Owner-only, like keystore.yaml: the database holds every digest and key reference. */
const DB_FILE_MODE = 0o600;

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
  if (version > MIGRATIONS.length) {
    throw new Error(
      `database schema version ${version} is newer than this keygate understands (${MIGRATIONS.length}); upgrade keygate or use another KEYGATE_DB`,
    );
  }
  if (version === MIGRATIONS.length) return;
  db.transaction(() => {
    for (const sql of MIGRATIONS.slice(version)) db.exec(sql);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  }).immediate();
}

function prepareStatements(db: Database.Database) {
  return {
    insertGeneration: db.prepare<[string, string, number, string | null]>(
      `INSERT INTO generations (source_sha256, loaded_at, client_count, default_upstream_key)
       VALUES (?, ?, ?, ?)`,
    ),
    insertClient: db.prepare<
      [
        string,
        number,
        number,
        string | null,
        ClientKind,
        0 | 1,
        string | null,
        string | null,
        string | null,
      ]
    >(
      `INSERT INTO clients (id, since, position, name, kind, disabled, upstream_key, routes, models)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    retireClient: db.prepare<[number, string, number]>(
      "UPDATE clients SET until = ? WHERE id = ? AND since = ? AND until IS NULL",
    ),
    moveClient: db.prepare<[number, string, number]>(
      "UPDATE clients SET position = ? WHERE id = ? AND since = ? AND until IS NULL",
    ),
    insertToken: db.prepare<[string, number, string, number | null]>(
      "INSERT INTO tokens (digest, since, client_id, expires_at) VALUES (?, ?, ?, ?)",
    ),
    retireToken: db.prepare<[number, string, number]>(
      "UPDATE tokens SET until = ? WHERE digest = ? AND since = ? AND until IS NULL",
    ),
    // One JSON text per table, not a row object each: better-sqlite3 spends about a
    // microsecond per row object, three times what SQLite and JSON.parse take together.
    // JSON carries every stored value exactly (text, null, integers below 2^53).
    newestClients: db
      .prepare<[], string | null>(
        `SELECT json_group_array(json_array(
           id, since, position, name, kind, disabled, upstream_key, routes, models))
         FROM clients WHERE until IS NULL`,
      )
      .pluck(),
    newestTokens: db
      .prepare<[], string | null>(
        `SELECT json_group_array(json_array(digest, since, client_id, expires_at))
         FROM tokens WHERE until IS NULL`,
      )
      .pluck(),
    previousGeneration: db.prepare<[number], { id: number }>(
      "SELECT id FROM generations WHERE id < ? ORDER BY id DESC LIMIT 1",
    ),
    pruneTokens: db.prepare<[number]>("DELETE FROM tokens WHERE until <= ?"),
    pruneClients: db.prepare<[number]>("DELETE FROM clients WHERE until <= ?"),
    pruneGenerations: db.prepare<[number]>("DELETE FROM generations WHERE id < ?"),
    latestGeneration: db.prepare<[], GenerationRow>(
      `SELECT id, source_sha256, loaded_at, client_count, default_upstream_key
       FROM generations ORDER BY id DESC LIMIT 1`,
    ),
    generationExists: db.prepare<[number], { id: number }>(
      "SELECT id FROM generations WHERE id = ?",
    ),
    // Three seeks: the generation by rowid, then tokens and clients each by primary key
    // (key, since) to the few versions of that key. Starting from the generations row
    // makes a pruned generation find nothing, as when its rows were deleted with it,
    // rather than the rows it shared with a newer one; it also measured fastest.
    lookup: db.prepare<[string, number], MatchRow>(
      `SELECT t.client_id, t.expires_at, c.kind, c.disabled, c.upstream_key, c.routes, c.models
       FROM generations g
       JOIN tokens t ON t.digest = ? AND ${visibleIn("t", "g.id")}
       JOIN clients c ON c.id = t.client_id AND ${visibleIn("c", "g.id")}
       WHERE g.id = ?`,
    ),
    // The row-level test first: a row visible in both generations settles it without a seek.
    clientsOnlyIn: db
      .prepare<{ present: number; absent: number }, string>(
        `SELECT c.id FROM clients c
         WHERE ${visibleIn("c", ":present")} AND NOT ${visibleIn("c", ":absent")}
           AND NOT EXISTS (SELECT 1 FROM clients o WHERE o.id = c.id AND ${visibleIn("o", ":absent")})
         ORDER BY c.position`,
      )
      .pluck(),
    clientsChanged: db
      .prepare<{ from: number; to: number }, string>(
        `SELECT b.id FROM clients b JOIN clients a ON a.id = b.id AND ${visibleIn("a", ":from")}
         WHERE ${visibleIn("b", ":to")} AND NOT ${visibleIn("b", ":from")}
           AND (a.name IS NOT b.name OR a.kind IS NOT b.kind OR a.disabled IS NOT b.disabled
             OR a.upstream_key IS NOT b.upstream_key OR a.routes IS NOT b.routes
             OR a.models IS NOT b.models)
         ORDER BY b.position`,
      )
      .pluck(),
    digestsOnlyIn: db
      .prepare<{ present: number; absent: number }, string>(
        `SELECT t.digest FROM tokens t
         WHERE ${visibleIn("t", ":present")} AND NOT ${visibleIn("t", ":absent")}
           AND NOT EXISTS (SELECT 1 FROM tokens o WHERE o.digest = t.digest AND ${visibleIn("o", ":absent")})
         ORDER BY t.digest`,
      )
      .pluck(),
    upsertUsage: db.prepare<[string, number, number]>(
      `INSERT INTO client_usage (client_id, last_used_at, use_count) VALUES (?, ?, ?)
       ON CONFLICT (client_id) DO UPDATE SET
         last_used_at = max(last_used_at, excluded.last_used_at),
         use_count = use_count + excluded.use_count`,
    ),
    // INDEXED BY: without statistics the planner may scan every token per client (v1 did,
    // minutes at 100 000 clients); this makes a missing index an error, not a slow list.
    summaries: db.prepare<{ generation: number; now: number }, SummaryRow>(
      `SELECT c.id, c.name, c.kind, c.disabled, c.upstream_key,
              count(t.digest) AS token_count,
              coalesce(sum(t.expires_at <= :now), 0) AS expired_token_count,
              min(CASE WHEN t.expires_at > :now THEN t.expires_at END) AS next_expiry,
              u.last_used_at, u.use_count
       FROM clients c
       LEFT JOIN tokens t INDEXED BY tokens_by_client
         ON t.client_id = c.id AND ${visibleIn("t", ":generation")}
       LEFT JOIN client_usage u ON u.client_id = c.id
       WHERE ${visibleIn("c", ":generation")}
         AND EXISTS (SELECT 1 FROM generations WHERE id = :generation)
       GROUP BY c.id
       -- Positions only tie in an older generation whose clients have been moved since.
       ORDER BY c.position, c.id`,
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

function parseList(json: string | null): readonly string[] | null {
  return json === null ? null : Object.freeze(JSON.parse(json) as string[]);
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

function toSummary(row: SummaryRow, generation: Generation): ClientSummary {
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    disabled: row.disabled === 1,
    tokenCount: row.token_count,
    expiredTokenCount: row.expired_token_count,
    nextExpiry: row.next_expiry,
    upstreamKeyKind: upstreamKeyKind(row.upstream_key, generation.defaultUpstreamKey),
    lastUsedAt: row.last_used_at,
    useCount: row.use_count ?? 0,
  };
}

function upstreamKeyKind(
  own: string | null,
  fallback: string | null,
): ClientSummary["upstreamKeyKind"] {
  if (own?.startsWith("enc:")) return "enc";
  if (own?.startsWith("env:")) return "env";
  return fallback === null ? "none" : "default";
}
