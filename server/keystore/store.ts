/**
 * The keystore in SQLite. Each valid keystore.yaml is applied as a new *generation* in
 * one transaction, so a Check sees either the old keystore or the new one, never half of
 * each; after a restart the newest generation on disk is the last good one and is served
 * until the YAML is valid again. Lookups are one primary-key read on a statement prepared
 * once. Only digests and `enc:`/`env:` references are stored, never a token or key in clear.
 */
import { mkdirSync } from "node:fs";
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
];

/** Writers wait this long for the lock (a CLI reading while the server applies) instead of failing. */
const BUSY_TIMEOUT_MS = 5000;
/** Cached lookups per generation: generous for active clients, bounded for memory (~10 MB). */
const MATCH_CACHE_SIZE = 50_000;
const REFERENCE_PATTERN = /^(enc|env):/;

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

  private readonly statements: ReturnType<typeof prepareStatements>;
  private readonly applyTransaction: (loaded: LoadedKeystore, loadedAt: string) => Generation;
  private readonly usageTransaction: (entries: readonly UsageEntry[]) => void;
  private readonly pruneTransaction: () => void;

  private constructor(private readonly db: Database.Database) {
    this.statements = prepareStatements(db);
    const apply = db.transaction((loaded: LoadedKeystore, loadedAt: string) =>
      this.writeGeneration(loaded, loadedAt),
    );
    // IMMEDIATE takes the write lock up front, so two writers wait (busy_timeout) rather than deadlock.
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
    if (dbPath !== ":memory:") mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
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
   * reload worker prunes later, off the revocation's critical path).
   * @throws Error when the keystore holds something that is not a digest or a key
   *   reference (a programming error: nothing in clear may reach the database), or on SQLite failure.
   */
  apply(loaded: LoadedKeystore, now: Date, options: { readonly prune?: boolean } = {}): Generation {
    assertNoSecrets(loaded.keystore);
    const generation = this.applyTransaction(loaded, now.toISOString());
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
    const row = this.statements.lookup.get(generation.id, digest);
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
    const { clientsOnlyIn, clientsChanged, digestsOnlyIn } = this.statements;
    return {
      clientsAdded: clientsOnlyIn.all({ present: to, absent: from }),
      clientsRemoved: clientsOnlyIn.all({ present: from, absent: to }),
      clientsChanged: clientsChanged.all({ from, to }),
      tokensAdded: digestsOnlyIn.all({ present: to, absent: from }).map(digestPrefix),
      tokensRevoked: digestsOnlyIn.all({ present: from, absent: to }).map(digestPrefix),
    };
  }

  /** Closes the database; the store cannot be used afterwards. */
  close(): void {
    this.db.close();
  }

  private writeGeneration(loaded: LoadedKeystore, loadedAt: string): Generation {
    const { keystore, sourceSha256 } = loaded;
    const { insertGeneration, insertClient, insertToken } = this.statements;
    const id = Number(
      insertGeneration.run(
        sourceSha256,
        loadedAt,
        keystore.clients.length,
        keystore.defaultUpstreamKey,
      ).lastInsertRowid,
    );
    keystore.clients.forEach((client, position) => {
      insertClient.run(
        id,
        client.id,
        position,
        client.name,
        client.kind,
        client.disabled ? 1 : 0,
        client.upstreamKey,
        client.routes === null ? null : JSON.stringify(client.routes),
        client.models === null ? null : JSON.stringify(client.models),
      );
      for (const token of client.tokens)
        insertToken.run(id, token.digest, client.id, token.expiresAt);
    });
    return {
      id,
      sourceSha256,
      loadedAt,
      clientCount: keystore.clients.length,
      defaultUpstreamKey: keystore.defaultUpstreamKey,
    };
  }

  /**
   * Deletes every generation older than the one before the newest (one transaction): the
   * newest is served, the one before may still be finishing in-flight Checks.
   * @throws Error on SQLite failure.
   */
  prune(): void {
    this.pruneTransaction();
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
        number,
        string,
        number,
        string | null,
        ClientKind,
        0 | 1,
        string | null,
        string | null,
        string | null,
      ]
    >(
      `INSERT INTO clients (generation, id, position, name, kind, disabled, upstream_key, routes, models)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    insertToken: db.prepare<[number, string, string, number | null]>(
      "INSERT INTO tokens (generation, digest, client_id, expires_at) VALUES (?, ?, ?, ?)",
    ),
    previousGeneration: db.prepare<[number], { id: number }>(
      "SELECT id FROM generations WHERE id < ? ORDER BY id DESC LIMIT 1",
    ),
    pruneTokens: db.prepare<[number]>("DELETE FROM tokens WHERE generation < ?"),
    pruneClients: db.prepare<[number]>("DELETE FROM clients WHERE generation < ?"),
    pruneGenerations: db.prepare<[number]>("DELETE FROM generations WHERE id < ?"),
    latestGeneration: db.prepare<[], GenerationRow>(
      `SELECT id, source_sha256, loaded_at, client_count, default_upstream_key
       FROM generations ORDER BY id DESC LIMIT 1`,
    ),
    lookup: db.prepare<[number, string], MatchRow>(
      `SELECT t.client_id, t.expires_at, c.kind, c.disabled, c.upstream_key, c.routes, c.models
       FROM tokens t JOIN clients c ON c.generation = t.generation AND c.id = t.client_id
       WHERE t.generation = ? AND t.digest = ?`,
    ),
    clientsOnlyIn: db
      .prepare<{ present: number; absent: number }, string>(
        `SELECT id FROM clients
         WHERE generation = :present
           AND id NOT IN (SELECT id FROM clients WHERE generation = :absent)
         ORDER BY position`,
      )
      .pluck(),
    clientsChanged: db
      .prepare<{ from: number; to: number }, string>(
        `SELECT b.id FROM clients a JOIN clients b ON b.id = a.id
         WHERE a.generation = :from AND b.generation = :to
           AND (a.name IS NOT b.name OR a.kind IS NOT b.kind OR a.disabled IS NOT b.disabled
             OR a.upstream_key IS NOT b.upstream_key OR a.routes IS NOT b.routes
             OR a.models IS NOT b.models)
         ORDER BY b.position`,
      )
      .pluck(),
    digestsOnlyIn: db
      .prepare<{ present: number; absent: number }, string>(
        `SELECT digest FROM tokens
         WHERE generation = :present
           AND digest NOT IN (SELECT digest FROM tokens WHERE generation = :absent)
         ORDER BY digest`,
      )
      .pluck(),
    upsertUsage: db.prepare<[string, number, number]>(
      `INSERT INTO client_usage (client_id, last_used_at, use_count) VALUES (?, ?, ?)
       ON CONFLICT (client_id) DO UPDATE SET
         last_used_at = max(last_used_at, excluded.last_used_at),
         use_count = use_count + excluded.use_count`,
    ),
    summaries: db.prepare<{ generation: number; now: number }, SummaryRow>(
      `SELECT c.id, c.name, c.kind, c.disabled, c.upstream_key,
              count(t.digest) AS token_count,
              coalesce(sum(t.expires_at <= :now), 0) AS expired_token_count,
              min(CASE WHEN t.expires_at > :now THEN t.expires_at END) AS next_expiry,
              u.last_used_at, u.use_count
       FROM clients c
       LEFT JOIN tokens t ON t.generation = c.generation AND t.client_id = c.id
       LEFT JOIN client_usage u ON u.client_id = c.id
       WHERE c.generation = :generation
       GROUP BY c.id
       ORDER BY c.position`,
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
