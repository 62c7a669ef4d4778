/**
 * A client as the store keeps it: `clients.record`, the client without its id and tokens,
 * as JSON. The one place in store/ that a new client field touches (JSON, so an optional
 * field needs no migration): ClientRecord, recordOf that writes it, toMatch that reads it.
 */
import type { Budget, ClientKind, KeystoreClient, TokenMatch } from "../format/model.js";

/** `clients.record`: a client without its id and tokens. */
interface ClientRecord {
  readonly name: string | null;
  readonly kind: ClientKind;
  readonly disabled: boolean;
  readonly upstreamKey: string | null;
  readonly routes: readonly string[] | null;
  readonly models: readonly string[] | null;
  /** Absent when the client has none (and in records written before budgets existed). */
  readonly budget?: Budget;
}

/** A row of the store's lookup: the token, its client's record and the newest generation. */
export interface MatchRow {
  client_id: string;
  expires_at: number | null;
  record: string;
  generation: number;
  default_upstream_key: string | null;
}

/**
 * The record JSON of a client. Keys in a fixed order, so equal records are equal strings
 * (schema.ts's upgrade from older schemas builds them in the same order).
 */
export function recordOf(client: KeystoreClient): string {
  const record: ClientRecord = {
    name: client.name,
    kind: client.kind,
    disabled: client.disabled,
    upstreamKey: client.upstreamKey,
    routes: client.routes,
    models: client.models,
    // Left out when absent, so the records of clients without a budget stay as they were.
    ...(client.budget === undefined ? {} : { budget: client.budget }),
  };
  return JSON.stringify(record);
}

/** What a Check sees for a lookup row; frozen, allow-lists included. */
export function toMatch(row: MatchRow): TokenMatch {
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
    ...(record.budget === undefined ? {} : { budget: Object.freeze(record.budget) }),
  });
}
