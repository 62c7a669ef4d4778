/**
 * `keygate keystore list`: what an operator needs to see about each client, as a table
 * or as JSON, and never a secret: token digests appear only as 12-character prefixes
 * (what `revoke --token` takes), upstream keys only as their kind and kid or variable.
 * Pure: the keystore, what the database says of each client and `now` are passed in.
 */
import { ENC_PATTERN } from "../crypto/aes-gcm.js";
import { digestPrefix } from "../crypto/token-hash.js";
import type {
  BudgetPeriod,
  ClientKind,
  Keystore,
  KeystoreClient,
} from "../keystore/format/model.js";
import { listed } from "../shown-text.js";
import { windowResetAt } from "../usage/usage-day.js";
import type { RecentTokens } from "../usage/usage-table.js";
import { alignedTable } from "./aligned-table.js";
import { formatTimestamp } from "./time-args.js";

export interface ClientUsage {
  /** Epoch ms, or null if never used. */
  readonly lastUsedAt: number | null;
  readonly useCount: number;
}

/** What the server's database adds to the keystore, by client id; undefined when unknown. */
export interface ListSources {
  readonly lastUse: ReadonlyMap<string, ClientUsage> | undefined;
  /** Provider-reported tokens today and this month (UTC); a client without a row used none. */
  readonly tokens: ReadonlyMap<string, RecentTokens> | undefined;
}

export type UpstreamKeySource =
  | { readonly source: "enc"; readonly kid: string }
  | { readonly source: "env"; readonly variable: string }
  | { readonly source: "default" }
  | { readonly source: "none" };

/** One client as `list --json` prints it (snake_case, as in keystore.yaml). */
export interface ListedClient {
  readonly id: string;
  readonly name: string | null;
  readonly kind: ClientKind;
  readonly disabled: boolean;
  readonly token_count: number;
  readonly expired_token_count: number;
  /** The earliest expiry still ahead, or null. */
  readonly next_expiry: string | null;
  readonly tokens: readonly {
    readonly sha256_prefix: string;
    readonly expires: string | null;
    readonly expired: boolean;
  }[];
  readonly upstream_key: UpstreamKeySource;
  /** null when unknown (no database) or never used. */
  readonly last_used_at: string | null;
  /** null when unknown (no database). */
  readonly use_count: number | null;
  /** Tokens of every kind providers reported today (UTC); null when unknown (no database). */
  readonly tokens_today: number | null;
  /** The same since the 1st of this month (UTC). */
  readonly tokens_this_month: number | null;
  /** The client's token budget and the current window; null when it has none. */
  readonly budget: ListedBudget | null;
}

export interface ListedBudget {
  readonly tokens: number;
  readonly per: BudgetPeriod;
  /**
   * Spent in the current window by this database's ledger, null when unknown (no
   * database). With several replicas sharing Redis, /keystore shows the shared total.
   */
  readonly spent: number | null;
  readonly exhausted: boolean | null;
  /** When the window resets (00:00 UTC of the next day or month). */
  readonly resets_at: string;
}

/**
 * The listing of a validated keystore.
 * @param sources last use and token usage by client id from the database.
 */
export function listClients(keystore: Keystore, sources: ListSources, now: number): ListedClient[] {
  const usage = sources.lastUse;
  return keystore.clients.map((client) => {
    const tokens = client.tokens.map((token) => ({
      sha256_prefix: digestPrefix(token.digest),
      expires: token.expiresAt === null ? null : formatTimestamp(token.expiresAt),
      expired: token.expiresAt !== null && token.expiresAt <= now,
    }));
    const ahead = client.tokens
      .map((token) => token.expiresAt)
      .filter((at): at is number => at !== null && at > now);
    const used = usage?.get(client.id);
    return {
      id: client.id,
      name: client.name === null ? null : listed(client.name),
      kind: client.kind,
      disabled: client.disabled,
      token_count: tokens.length,
      expired_token_count: tokens.filter((token) => token.expired).length,
      next_expiry: ahead.length === 0 ? null : formatTimestamp(Math.min(...ahead)),
      tokens,
      upstream_key: upstreamKeySource(client.upstreamKey, keystore.defaultUpstreamKey),
      last_used_at:
        used?.lastUsedAt === undefined || used.lastUsedAt === null
          ? null
          : formatTimestamp(used.lastUsedAt),
      use_count: usage === undefined ? null : (used?.useCount ?? 0),
      ...tokensOf(sources.tokens, client.id),
      budget: budgetOf(client, sources.tokens, now),
    };
  });
}

function budgetOf(
  client: KeystoreClient,
  tokens: ReadonlyMap<string, RecentTokens> | undefined,
  now: number,
): ListedBudget | null {
  const { budget } = client;
  if (budget === undefined) return null;
  const used = tokens?.get(client.id);
  const spent =
    tokens === undefined ? null : ((budget.per === "day" ? used?.today : used?.month) ?? 0);
  return {
    tokens: budget.tokens,
    per: budget.per,
    spent,
    exhausted: spent === null ? null : spent >= budget.tokens,
    resets_at: formatTimestamp(windowResetAt(budget.per, now)),
  };
}

function tokensOf(
  tokens: ReadonlyMap<string, RecentTokens> | undefined,
  id: string,
): Pick<ListedClient, "tokens_today" | "tokens_this_month"> {
  if (tokens === undefined) return { tokens_today: null, tokens_this_month: null };
  const used = tokens.get(id);
  return { tokens_today: used?.today ?? 0, tokens_this_month: used?.month ?? 0 };
}

function upstreamKeySource(own: string | null, fallback: string | null): UpstreamKeySource {
  if (own === null) return fallback === null ? { source: "none" } : { source: "default" };
  const kid = ENC_PATTERN.exec(own)?.[1];
  if (kid !== undefined) return { source: "enc", kid };
  return { source: "env", variable: own.slice("env:".length) };
}

/** The JSON document `list --json` prints. */
export function renderJson(
  keystorePath: string,
  usageFrom: string | null,
  clients: readonly ListedClient[],
): string {
  return `${JSON.stringify({ keystore: keystorePath, usage_from: usageFrom, clients }, null, 2)}\n`;
}

const COLUMNS = [
  "ID",
  "NAME",
  "KIND",
  "STATUS",
  "TOKENS",
  "NEXT EXPIRY",
  "UPSTREAM KEY",
  "LAST USE",
  "USES",
  "TOKENS TODAY",
  "TOKENS MONTH",
  "BUDGET",
  "SPENT",
  "RESETS",
] as const;

/** An aligned table, one client per line, with a header. */
export function renderTable(clients: readonly ListedClient[]): string {
  const rows = clients.map((client) => [
    client.id,
    client.name ?? "-",
    client.kind,
    client.disabled ? "disabled" : "enabled",
    client.expired_token_count === 0
      ? String(client.token_count)
      : `${client.token_count} (${client.expired_token_count} expired)`,
    client.next_expiry ?? "-",
    client.kind === "internal" ? "- (internal)" : describeSource(client.upstream_key),
    client.last_used_at ?? (client.use_count === null ? "-" : "never"),
    client.use_count === null ? "-" : String(client.use_count),
    client.tokens_today === null ? "-" : String(client.tokens_today),
    client.tokens_this_month === null ? "-" : String(client.tokens_this_month),
    ...budgetCells(client.budget),
  ]);
  return alignedTable(COLUMNS, rows);
}

/** BUDGET, SPENT and RESETS: `100000/day`, `250 (0%)` or `100500 (exhausted)`, the reset time. */
function budgetCells(budget: ListedBudget | null): string[] {
  if (budget === null) return ["-", "-", "-"];
  const { spent } = budget;
  const share = budget.exhausted
    ? "exhausted"
    : `${Math.floor(((spent ?? 0) * 100) / budget.tokens)}%`;
  return [
    `${budget.tokens}/${budget.per}`,
    spent === null ? "-" : `${spent} (${share})`,
    budget.resets_at,
  ];
}

function describeSource(source: UpstreamKeySource): string {
  switch (source.source) {
    case "enc":
      return `enc (${source.kid})`;
    case "env":
      return `env (${source.variable})`;
    default:
      return source.source;
  }
}
