/**
 * Per-client token usage, recorded off the hot path: record() adds a response's tokens to
 * an in-memory batch keyed by client, model and UTC day; a timer writes the batch to
 * SQLite in one transaction every few seconds (and once more at close), so the response
 * path never waits on a disk write (write-batch.ts).
 */
import type { Logger } from "../logger.js";
import { WindowClock } from "./budget-window.js";
import { normalizeModel } from "./model-name.js";
import type { TokenUsage, UsageSink } from "./token-usage.js";
import type { DailyUsage } from "./usage-table.js";
import { WriteBatch } from "./write-batch.js";

/**
 * Rows (client × model × day) held at most: bounds what a database that stays unwritable
 * can make keygate hold (about 200 bytes a row, so ~20 MB). Beyond it new rows are
 * dropped and counted; rows already held keep adding up.
 */
export const MAX_PENDING_ROWS = 100_000;
/**
 * Models kept apart per client and UTC day; further ones add up under OTHER_MODELS. The
 * model comes from the response, which an OpenAI-compatible upstream may echo from the
 * request: unbounded, one client could make a row (and a `keygate usage` line) per string
 * it sends.
 */
export const MAX_MODELS_PER_CLIENT_DAY = 50;
/** Where a client's models past the bound are counted; never a real (normalized) model id. */
export const OTHER_MODELS = "(other)";
/** Where a batch goes: one all-or-nothing write (TokenUsageTable.add). */
export interface UsageBatchWriter {
  add(rows: readonly DailyUsage[]): void;
}

export interface UsageLedgerOptions {
  readonly flushIntervalMs: number;
  readonly maxPendingRows?: number;
  /** Told at each flush how many responses' usage was dropped since the last (the batch was full). */
  readonly onDropped?: (responses: number) => void;
}

interface PendingRow {
  clientId: string;
  model: string;
  day: string;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
}

export class UsageLedger implements UsageSink {
  private readonly batch: WriteBatch<PendingRow>;
  private readonly clock = new WindowClock();
  /** Each client's distinct models on `modelsDay` (only today's are kept). */
  private modelsToday = new Map<string, Set<string>>();
  private modelsDay = "";

  constructor(writer: UsageBatchWriter, logger: Logger, options: UsageLedgerOptions) {
    this.batch = new WriteBatch<PendingRow>({
      what: "token usage",
      flushIntervalMs: options.flushIntervalMs,
      maxPending: options.maxPendingRows ?? MAX_PENDING_ROWS,
      write: (rows) => writer.add(rows),
      merge: addRow,
      weight: (row) => row.requests,
      ...(options.onDropped === undefined ? {} : { onDropped: options.onDropped }),
      logger,
    });
  }

  /** Adds one response's usage to the batch; O(1), no I/O. */
  record(clientId: string, usage: TokenUsage, now: number): void {
    const day = this.clock.windowOf("day", now).startDay;
    const model = this.boundedModel(clientId, normalizeModel(usage.model), day);
    const row = this.batch.row(`${clientId}\0${model}\0${day}`, () =>
      emptyRow(clientId, model, day),
    );
    if (row === undefined) return;
    row.requests++;
    row.inputTokens += count(usage.inputTokens);
    row.outputTokens += count(usage.outputTokens);
    row.cacheReadTokens += count(usage.cacheReadTokens);
    row.cacheWriteTokens += count(usage.cacheWriteTokens);
  }

  /** `model`, or OTHER_MODELS once the client has MAX_MODELS_PER_CLIENT_DAY others today. */
  private boundedModel(clientId: string, model: string, day: string): string {
    if (day !== this.modelsDay) {
      this.modelsToday.clear();
      this.modelsDay = day;
    }
    let models = this.modelsToday.get(clientId);
    if (models === undefined) {
      models = new Set();
      this.modelsToday.set(clientId, models);
    }
    if (models.has(model)) return model;
    if (models.size >= MAX_MODELS_PER_CLIENT_DAY) return OTHER_MODELS;
    models.add(model);
    return model;
  }

  /** Rows waiting for the next flush. */
  get pendingRows(): number {
    return this.batch.size;
  }

  /** Writes the batch (WriteBatch.flush). */
  flush(): void {
    this.batch.flush();
  }

  /** Final flush and timer stop. */
  close(): void {
    this.batch.close();
  }
}

function addRow(into: PendingRow, from: PendingRow): void {
  into.requests += from.requests;
  into.inputTokens += from.inputTokens;
  into.outputTokens += from.outputTokens;
  into.cacheReadTokens += from.cacheReadTokens;
  into.cacheWriteTokens += from.cacheWriteTokens;
}

function emptyRow(clientId: string, model: string, day: string): PendingRow {
  return {
    clientId,
    model,
    day,
    requests: 0,
    inputTokens: 0,
    outputTokens: 0,
    cacheReadTokens: 0,
    cacheWriteTokens: 0,
  };
}

/** A provider's count as a stored integer: never negative, fractional or NaN. */
function count(value: number): number {
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}
