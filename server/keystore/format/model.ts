/**
 * The keystore's data model, shared by the YAML loader, the SQLite store, the Check
 * path and the CLI. Plain data only: no secrets in clear (tokens are digests, upstream
 * keys are `enc:`/`env:` references).
 *
 * The keystore, folder by folder: format/ (this model, the reader and validator in
 * load.ts, the starter file), edit/ (the CLI's comment-preserving editor), store/ (the
 * current state in SQLite, usage, upstream-key resolution), reload/ (the watcher, the
 * sync worker and the manager the Check path reads). Data flows one way: keystore.yaml →
 * load.ts (one YAML reader, schema, semantic checks) → Keystore (this file) → store.ts
 * (one transaction per change set) → lookup (one prepared statement per Check).
 *
 * Adding a field to a client touches, in order:
 *   1. schemas/keystore.schema.json: the property, its type and its errorMessage (then
 *      `npm run build`, which compiles its validator: keygate refuses a stale one);
 *   2. this file: KeystoreClient, and TokenMatch if a Check reads it;
 *   3. format/load.ts: RawClient and toClient;
 *   4. store/client-record.ts: ClientRecord, recordOf and toMatch (the record is JSON,
 *      so an optional field needs no migration);
 *   5. edit/keystore-editor.ts: CLIENT_FIELD_ORDER, where the editor writes it, and
 *      NewClient / ClientDraft when a command sets it;
 *   6. cli/keystore-client-commands.ts (the `add` flags) and cli/list-output.ts (`list`).
 * The tests that pin each step: test/unit/keystore-load.test.ts, keystore-store.test.ts,
 * test/cli/keystore-add.test.ts and keystore-list.test.ts.
 */

export type ClientKind = "client" | "internal";

/** A client's token budget: what it may spend per UTC day or UTC month (post-paid). */
export interface Budget {
  /** A positive integer: input + output + cache tokens, as the provider reports them. */
  readonly tokens: number;
  readonly per: BudgetPeriod;
}

export type BudgetPeriod = "day" | "month";

/**
 * Additional authenticated data for an `enc:` value in `defaults.upstream_key`. Client
 * values are bound to their client id; the default is shared, so it is bound to this
 * string, which no client id can equal (ids cannot contain ":").
 */
export const DEFAULTS_AAD = "keygate:defaults";

export interface KeystoreToken {
  /** Lowercase hex SHA-256 of the token. */
  readonly digest: string;
  /** Expiry in epoch milliseconds, or null for none. */
  readonly expiresAt: number | null;
}

export interface KeystoreClient {
  readonly id: string;
  readonly name: string | null;
  readonly kind: ClientKind;
  readonly disabled: boolean;
  readonly tokens: readonly KeystoreToken[];
  /** `enc:v1:<kid>:<b64>` or `env:VAR`, never a key in clear; null when absent. */
  readonly upstreamKey: string | null;
  /** Path-prefix allow-list; null means every path. */
  readonly routes: readonly string[] | null;
  /** Glob allow-list for the JSON body's `model`; null means every model. */
  readonly models: readonly string[] | null;
  /** Token budget; absent means none (absent rather than null, so older records and fixtures stay valid). */
  readonly budget?: Budget;
}

export interface Keystore {
  readonly version: 1;
  /** Fallback upstream key reference for clients without their own; null when absent. */
  readonly defaultUpstreamKey: string | null;
  readonly clients: readonly KeystoreClient[];
}

/** A problem found in keystore.yaml, located for `file:line:column: message` output. */
export interface KeystoreIssue {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

export function formatIssue(issue: KeystoreIssue): string {
  return `${issue.file}:${issue.line}:${issue.column}: ${issue.message}`;
}

/** A keystore that parsed and validated, with what the operator should still hear about. */
export interface LoadedKeystore {
  readonly keystore: Keystore;
  /** Lowercase hex SHA-256 of the file's bytes. */
  readonly sourceSha256: string;
  /** Non-fatal problems, e.g. an `enc:` value whose kid is not loaded (that client answers 503). */
  readonly warnings: readonly KeystoreIssue[];
}

/** Thrown when keystore.yaml cannot be used; message is the issues, one per line. */
export class KeystoreError extends Error {
  readonly issues: readonly KeystoreIssue[];
  constructor(issues: readonly KeystoreIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.name = "KeystoreError";
    this.issues = issues;
  }
}

/** One keystore generation as recorded in SQLite. */
export interface Generation {
  readonly id: number;
  readonly sourceSha256: string;
  /** ISO 8601 time the generation was applied. */
  readonly loadedAt: string;
  readonly clientCount: number;
  readonly defaultUpstreamKey: string | null;
}

/** What a Check sees when a digest is found in the current generation. */
export interface TokenMatch {
  readonly generation: number;
  readonly clientId: string;
  readonly kind: ClientKind;
  readonly disabled: boolean;
  /** Expiry of the matched token (epoch ms) or null. */
  readonly expiresAt: number | null;
  /** The client's own upstream key reference, or the generation's default, or null. */
  readonly upstreamKey: string | null;
  /** Whether upstreamKey is the generation's default (an `enc:` default is bound to DEFAULTS_AAD). */
  readonly upstreamKeyIsDefault: boolean;
  readonly routes: readonly string[] | null;
  readonly models: readonly string[] | null;
  /** The client's token budget, absent for none; Check compares it with what the window has spent. */
  readonly budget?: Budget;
}
