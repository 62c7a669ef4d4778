/**
 * The token_usage table (schema in keystore/store/schema.ts): the ledger's batched
 * writes, and the reads behind `keygate usage`, `keygate keystore list` and the budget
 * counters' start-up. The server writes through a connection that never waits for
 * another writer; the CLI reads through a read-only one, so it works beside a running
 * server and never migrates or creates a database.
 */
import { existsSync } from "node:fs";
import Database from "better-sqlite3";
import { openDatabase } from "../keystore/store/schema.js";
import type { UsageDay } from "./usage-day.js";

/** One client's usage of one model on one UTC day: a row, or what a batch adds to it. */
export interface DailyUsage {
  readonly clientId: string;
  readonly model: string;
  readonly day: UsageDay;
  readonly requests: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly cacheReadTokens: number;
  readonly cacheWriteTokens: number;
}

/** A client's totals for one model over a span of days (`keygate usage`). */
export type UsageTotals = Omit<DailyUsage, "day">;

/** A client's tokens of every kind, today and since the 1st of the month (`keystore list`). */
export interface RecentTokens {
  readonly today: number;
  readonly month: number;
}

const TOTAL = "input_tokens + output_tokens + cache_read_tokens + cache_write_tokens";

interface TotalsRow {
  client_id: string;
  model: string;
  requests: number;
  input_tokens: number;
  output_tokens: number;
  cache_read_tokens: number;
  cache_write_tokens: number;
}

export class TokenUsageTable {
  private readonly statements: ReturnType<typeof prepare>;
  private readonly addTransaction: (rows: readonly DailyUsage[]) => void;

  /** @param db a connection whose schema has token_usage (openDatabase's, or one checked by openForReading). */
  private constructor(private readonly db: Database.Database) {
    this.statements = prepare(db);
    const add = db.transaction((rows: readonly DailyUsage[]) => {
      for (const row of rows) {
        this.statements.add.run(
          row.clientId,
          row.day,
          row.model,
          row.requests,
          row.inputTokens,
          row.outputTokens,
          row.cacheReadTokens,
          row.cacheWriteTokens,
        );
      }
    });
    this.addTransaction = (rows) => add.immediate(rows);
  }

  /**
   * The server's connection: the database is created and migrated if needed, and a write
   * fails at once with SQLITE_BUSY rather than block the event loop behind the reload
   * worker's transaction (the ledger keeps the batch for the next flush).
   * @throws Error when the file cannot be opened or was written by a newer keygate.
   */
  static openForWriting(dbPath: string): TokenUsageTable {
    const db = openDatabase(dbPath);
    db.pragma("busy_timeout = 0");
    return new TokenUsageTable(db);
  }

  /**
   * A read-only connection for the CLI: `"missing"` when there is no database file,
   * `"no-usage"` when it was written by a keygate older than token usage (nothing recorded).
   * @throws Error when the file cannot be opened or read.
   */
  static openForReading(dbPath: string): TokenUsageTable | "missing" | "no-usage" {
    if (dbPath === ":memory:" || !existsSync(dbPath)) return "missing";
    const db = new Database(dbPath, { readonly: true, fileMustExist: true });
    try {
      const hasTable = db
        .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'token_usage'")
        .get();
      if (hasTable === undefined) {
        db.close();
        return "no-usage";
      }
      return new TokenUsageTable(db);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  /**
   * Adds a batch to the stored rows in one transaction: all of it lands, or none.
   * @throws Error on SQLite failure (SQLITE_BUSY when another connection is writing).
   */
  add(rows: readonly DailyUsage[]): void {
    if (rows.length > 0) this.addTransaction(rows);
  }

  /**
   * Every token (input, output, cache read and write) `clientId` used from the start of
   * `sinceDay` (UTC) on: what a day or month budget window has spent, given the window's
   * first day (usage-day.ts windowStartDay).
   * @throws Error on SQLite failure.
   */
  tokensSince(clientId: string, sinceDay: UsageDay): number {
    return this.statements.tokensSince.get(clientId, sinceDay) ?? 0;
  }

  /**
   * tokensSince for every client with usage, in one scan (a start-up reading all budgets).
   * @throws Error on SQLite failure.
   */
  tokensSinceByClient(sinceDay: UsageDay): Map<string, number> {
    return new Map(
      this.statements.tokensSinceByClient.all(sinceDay).map((row) => [row.client_id, row.tokens]),
    );
  }

  /**
   * Each client's tokens today and this month, as `keystore list` shows them.
   * @throws Error on SQLite failure.
   */
  recentTokens(today: UsageDay, monthStart: UsageDay): Map<string, RecentTokens> {
    return new Map(
      this.statements.recent
        .all(today, monthStart)
        .map((row) => [row.client_id, { today: row.today, month: row.month }]),
    );
  }

  /**
   * Totals per client and model from `sinceDay` on, ordered by client then model.
   * @throws Error on SQLite failure.
   */
  totals(sinceDay: UsageDay, clientId?: string): UsageTotals[] {
    const rows =
      clientId === undefined
        ? this.statements.totals.all(sinceDay)
        : this.statements.clientTotals.all(sinceDay, clientId);
    return rows.map((row) => ({
      clientId: row.client_id,
      model: row.model,
      requests: row.requests,
      inputTokens: row.input_tokens,
      outputTokens: row.output_tokens,
      cacheReadTokens: row.cache_read_tokens,
      cacheWriteTokens: row.cache_write_tokens,
    }));
  }

  close(): void {
    this.db.close();
  }
}

function prepare(db: Database.Database) {
  const totals = (where: string) =>
    `SELECT client_id, model, sum(requests) AS requests, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens,
       sum(cache_write_tokens) AS cache_write_tokens
     FROM token_usage WHERE ${where} GROUP BY client_id, model ORDER BY client_id, model`;
  return {
    add: db.prepare<[string, string, string, number, number, number, number, number]>(
      `INSERT INTO token_usage (client_id, day, model, requests, input_tokens, output_tokens,
         cache_read_tokens, cache_write_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (client_id, day, model) DO UPDATE SET
         requests = requests + excluded.requests,
         input_tokens = input_tokens + excluded.input_tokens,
         output_tokens = output_tokens + excluded.output_tokens,
         cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
         cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens`,
    ),
    tokensSince: db
      .prepare<[string, string], number>(
        `SELECT coalesce(sum(${TOTAL}), 0) FROM token_usage WHERE client_id = ? AND day >= ?`,
      )
      .pluck(),
    tokensSinceByClient: db.prepare<[string], { client_id: string; tokens: number }>(
      `SELECT client_id, sum(${TOTAL}) AS tokens FROM token_usage WHERE day >= ? GROUP BY client_id`,
    ),
    recent: db.prepare<[string, string], { client_id: string; today: number; month: number }>(
      `SELECT client_id, sum(CASE WHEN day >= ? THEN ${TOTAL} ELSE 0 END) AS today,
         sum(${TOTAL}) AS month
       FROM token_usage WHERE day >= ? GROUP BY client_id`,
    ),
    totals: db.prepare<[string], TotalsRow>(totals("day >= ?")),
    clientTotals: db.prepare<[string, string], TotalsRow>(totals("day >= ? AND client_id = ?")),
  };
}
