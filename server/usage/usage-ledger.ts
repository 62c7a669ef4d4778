/**
 * Per-client token usage, recorded off the hot path: record() adds a response's tokens to
 * an in-memory batch keyed by client, model and UTC day; a timer writes the batch to
 * SQLite in one transaction every few seconds (and once more at close), so the response
 * path never waits on a disk write. The pattern of keystore/store/usage-recorder.ts,
 * for token counts.
 */
import type { Logger } from "../logger.js";
import { WindowClock } from "./budget-window.js";
import { normalizeModel } from "./model-name.js";
import type { TokenUsage, UsageSink } from "./token-usage.js";
import type { DailyUsage } from "./usage-table.js";

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
/** Consecutive failed flushes (at the 5 s interval, about a minute) before a warning. */
const FAILURES_BEFORE_WARNING = 12;

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
  private pending = new Map<string, PendingRow>();
  private readonly clock = new WindowClock();
  private readonly timer: NodeJS.Timeout;
  private readonly maxPendingRows: number;
  private failures = 0;
  private dropped = 0;
  /** Each client's distinct models on `modelsDay` (only today's are kept). */
  private modelsToday = new Map<string, Set<string>>();
  private modelsDay = "";

  constructor(
    private readonly writer: UsageBatchWriter,
    private readonly logger: Logger,
    private readonly options: UsageLedgerOptions,
  ) {
    this.maxPendingRows = options.maxPendingRows ?? MAX_PENDING_ROWS;
    this.timer = setInterval(() => this.flush(), options.flushIntervalMs);
    this.timer.unref();
  }

  /** Adds one response's usage to the batch; O(1), no I/O. */
  record(clientId: string, usage: TokenUsage, now: number): void {
    const day = this.clock.windowOf("day", now).startDay;
    const model = this.boundedModel(clientId, normalizeModel(usage.model), day);
    const key = `${clientId}\0${model}\0${day}`;
    let row = this.pending.get(key);
    if (row === undefined) {
      if (this.pending.size >= this.maxPendingRows) {
        this.dropped++;
        return;
      }
      row = emptyRow(clientId, model, day);
      this.pending.set(key, row);
    }
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
    return this.pending.size;
  }

  /**
   * Writes the batch. A failed write (the database busy with a reload, never waited for,
   * or unwritable) keeps its rows for the next flush, up to the pending bound.
   */
  flush(): void {
    this.reportDropped();
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    try {
      this.writer.add([...batch.values()]);
      if (this.failures >= FAILURES_BEFORE_WARNING) this.logger.info("token usage written again");
      this.failures = 0;
    } catch (error) {
      this.failures++;
      const level = this.failures === FAILURES_BEFORE_WARNING ? "warn" : "debug";
      this.logger[level](
        { err: error, rows: batch.size, failures: this.failures },
        "token usage not written; retrying at the next flush",
      );
      this.keep(batch);
    }
  }

  /** Final flush and timer stop. */
  close(): void {
    clearInterval(this.timer);
    this.flush();
  }

  /** Puts a batch that was not written back under what arrived since, within the bound. */
  private keep(batch: Map<string, PendingRow>): void {
    for (const [key, row] of batch) {
      const newer = this.pending.get(key);
      if (newer !== undefined) {
        newer.requests += row.requests;
        newer.inputTokens += row.inputTokens;
        newer.outputTokens += row.outputTokens;
        newer.cacheReadTokens += row.cacheReadTokens;
        newer.cacheWriteTokens += row.cacheWriteTokens;
      } else if (this.pending.size < this.maxPendingRows) this.pending.set(key, row);
      else this.dropped += row.requests;
    }
  }

  private reportDropped(): void {
    if (this.dropped === 0) return;
    this.options.onDropped?.(this.dropped);
    this.logger.warn(
      { responses: this.dropped, maxPendingRows: this.maxPendingRows },
      "token usage dropped: too many rows waiting for an unwritable database",
    );
    this.dropped = 0;
  }
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
