/**
 * The keystore in SQLite: the current state of keystore.yaml (clients and token digests)
 * and a log of the generations applied. A valid keystore is applied in one transaction
 * that writes what changed against the stored state (change-set.ts), appends its
 * generation and trims the log to the newest GENERATIONS_KEPT; that change set is also
 * what the reload logs. A Check's lookup is one synchronous statement, so it sees the
 * state before a transaction or after it, never half of each. After a restart the stored
 * state is the last good keystore, served until the YAML is valid again. Only digests and
 * `enc:`/`env:` references are stored, never a token or key in clear. The file, its
 * schema and its upgrades are schema.ts's.
 */
import type Database from "better-sqlite3";
import { DIGEST_PATTERN } from "../../crypto/token-hash.js";
import type { Generation, Keystore, LoadedKeystore, TokenMatch } from "../format/model.js";
import {
  changesOf,
  diffState,
  type KeystoreChanges,
  parseStoredState,
  STORED_CLIENTS_SQL,
  STORED_TOKENS_SQL,
  type StateDiff,
  type StoredState,
} from "./change-set.js";
import { type MatchRow, toMatch } from "./client-record.js";
import { GENERATIONS_KEPT, openDatabase } from "./schema.js";

export type { KeystoreChanges } from "./change-set.js";

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
    const db = openDatabase(dbPath);
    try {
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
   * state, and the new generation, dropping the log's rows beyond GENERATIONS_KEPT.
   */
  private write(loaded: LoadedKeystore, loadedAt: string): AppliedKeystore {
    const { keystore, sourceSha256 } = loaded;
    const diff = diffState(this.readState(), keystore);
    this.writeRows(diff);
    const generation = {
      sourceSha256,
      loadedAt,
      clientCount: keystore.clients.length,
      defaultUpstreamKey: keystore.defaultUpstreamKey,
    };
    const { lastInsertRowid } = this.statements.insertGeneration.run(
      sourceSha256,
      loadedAt,
      generation.clientCount,
      generation.defaultUpstreamKey,
    );
    this.statements.pruneGenerations.run();
    return {
      generation: { id: Number(lastInsertRowid), ...generation },
      changes: changesOf(diff),
    };
  }

  private writeRows(diff: StateDiff): void {
    const s = this.statements;
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
  }

  private readState(): StoredState {
    return parseStoredState(
      this.statements.storedClients.get() ?? null,
      this.statements.storedTokens.get() ?? null,
    );
  }

  private readLatestGeneration(): Generation | undefined {
    const row = this.statements.latestGeneration.get();
    return row === undefined ? undefined : toGeneration(row);
  }
}

function prepareStatements(db: Database.Database) {
  return {
    insertGeneration: db.prepare<[string, string, number, string | null]>(
      `INSERT INTO generations (source_sha256, loaded_at, client_count, default_upstream_key)
       VALUES (?, ?, ?, ?)`,
    ),
    // The newest GENERATIONS_KEPT rows stay; with fewer, the subquery is NULL and none go.
    pruneGenerations: db.prepare<[]>(
      `DELETE FROM generations WHERE id < (
         SELECT id FROM generations ORDER BY id DESC LIMIT 1 OFFSET ${GENERATIONS_KEPT - 1})`,
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
    storedClients: db.prepare<[], string | null>(STORED_CLIENTS_SQL).pluck(),
    storedTokens: db.prepare<[], string | null>(STORED_TOKENS_SQL).pluck(),
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
