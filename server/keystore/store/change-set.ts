/**
 * The change set from the stored state to a new keystore, computed in JS: the rows to
 * insert, update and delete, and the report of what changed that the reload logs. Reading
 * the stored state is one text per table (the queries below), split here.
 */
import { digestPrefix } from "../../crypto/token-hash.js";
import type { Keystore } from "../format/model.js";
import { recordOf } from "./client-record.js";

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

/** A client's id and record JSON. */
export type ClientRow = readonly [id: string, record: string];
/** A token's digest, client id and expiry (epoch ms or null). */
export type TokenRow = readonly [digest: string, clientId: string, expiresAt: number | null];

/** The writes from the stored state to a keystore's; see diffState. */
export interface StateDiff {
  readonly insertClients: readonly ClientRow[];
  readonly updateClients: readonly ClientRow[];
  readonly deleteClients: readonly string[];
  readonly insertTokens: readonly TokenRow[];
  readonly updateTokens: readonly TokenRow[];
  readonly deleteTokens: readonly string[];
}

/** The stored state, read once per apply to diff the new keystore against. */
export interface StoredState {
  /** Record JSON by client id. */
  readonly clients: Map<string, string>;
  /** `<client id> <expiry or nothing>` by digest (see tokenValue). */
  readonly tokens: Map<string, string>;
}

/**
 * The stored clients and tokens, one text per table: a row object each would cost
 * better-sqlite3 about a microsecond per row, more than SQLite and the split take
 * together. Tab and newline cannot occur in a client id (the schema's pattern) or a
 * record (JSON escapes them), and a digest is DIGEST_LENGTH characters.
 */
export const STORED_CLIENTS_SQL =
  "SELECT group_concat(id || char(9) || record, char(10)) FROM clients";
export const STORED_TOKENS_SQL = `SELECT group_concat(digest || client_id || ' ' || ifnull(expires_at, ''), char(10))
  FROM tokens`;

/** Hex SHA-256. */
const DIGEST_LENGTH = 64;

/** The stored state from STORED_CLIENTS_SQL's and STORED_TOKENS_SQL's texts (null: no rows). */
export function parseStoredState(
  clientsText: string | null,
  tokensText: string | null,
): StoredState {
  const clients = new Map<string, string>();
  for (const line of lines(clientsText)) {
    const tab = line.indexOf("\t");
    clients.set(line.slice(0, tab), line.slice(tab + 1));
  }
  const tokens = new Map<string, string>();
  for (const line of lines(tokensText)) {
    tokens.set(line.slice(0, DIGEST_LENGTH), line.slice(DIGEST_LENGTH));
  }
  return { clients, tokens };
}

/**
 * The rows that turn the stored state into `keystore`'s: new and changed clients and
 * tokens in keystore order, removed ones sorted. Consumes `stored`. A client id or digest
 * listed twice lands in an insert list the second time (the first took it out of
 * `stored`), where SQLite refuses it with SQLITE_CONSTRAINT_PRIMARYKEY.
 */
export function diffState(stored: StoredState, keystore: Keystore): StateDiff {
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

/** What `diff` changes, as the reload reports it: ids and digest prefixes only. */
export function changesOf(diff: StateDiff): KeystoreChanges {
  return {
    clientsAdded: diff.insertClients.map(([id]) => id),
    clientsRemoved: diff.deleteClients,
    clientsChanged: diff.updateClients.map(([id]) => id),
    tokensAdded: diff.insertTokens.map(([digest]) => digestPrefix(digest)),
    tokensRevoked: diff.deleteTokens.map(digestPrefix),
  };
}

/** A stored token's client and expiry as parseStoredState reads them, for comparison. */
function tokenValue(clientId: string, expiresAt: number | null): string {
  return `${clientId} ${expiresAt ?? ""}`;
}

function lines(text: string | null): string[] {
  return text == null ? [] : text.split("\n");
}
