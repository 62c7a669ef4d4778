/**
 * The one way keygate records what its hot paths see without writing on them: rows add up
 * in memory by key, and a timer writes them in one all-or-nothing call every few seconds
 * (and once more at close). A write that fails (the database busy with a reload, never
 * waited for, or unwritable) keeps its rows for the next flush, merged with what arrived
 * since; while it keeps failing at most maxPending rows are held, and what does not fit
 * is dropped and reported. Used for clients' last use (last-use-recorder.ts) and for
 * token usage (usage-ledger.ts).
 */
import type { Logger } from "../logger.js";

/** Consecutive failed flushes (about a minute at a 5 s interval) before a warning. */
const FAILURES_BEFORE_WARNING = 12;

export interface WriteBatchOptions<Row> {
  /** What the rows are, for the log: "token usage", "client last use". */
  readonly what: string;
  readonly flushIntervalMs: number;
  readonly maxPending: number;
  /** One all-or-nothing write of the batch; throws when nothing was written. */
  readonly write: (rows: readonly Row[]) => void;
  /** Adds `from` into `into`, a row of the same key. */
  readonly merge: (into: Row, from: Row) => void;
  /** How many records a dropped row stood for (its request count); 1 when absent. */
  readonly weight?: (row: Row) => number;
  /** Told at each flush how many records were dropped since the last (the batch was full). */
  readonly onDropped?: (records: number) => void;
  readonly logger: Logger;
}

export class WriteBatch<Row> {
  private pending = new Map<string, Row>();
  private readonly timer: NodeJS.Timeout;
  private failures = 0;
  private dropped = 0;

  constructor(private readonly options: WriteBatchOptions<Row>) {
    this.timer = setInterval(() => this.flush(), options.flushIntervalMs);
    this.timer.unref();
  }

  /**
   * The pending row for `key`, created by `create` when there is none; undefined (and the
   * record counted as dropped) when the batch is full. O(1), no I/O.
   */
  row(key: string, create: () => Row): Row | undefined {
    let row = this.pending.get(key);
    if (row === undefined) {
      if (this.pending.size >= this.options.maxPending) {
        this.dropped++;
        return undefined;
      }
      row = create();
      this.pending.set(key, row);
    }
    return row;
  }

  /** Rows waiting for the next flush. */
  get size(): number {
    return this.pending.size;
  }

  /** Writes the batch; a failure keeps it for the next flush, within the bound. */
  flush(): void {
    this.reportDropped();
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    const { logger, what } = this.options;
    try {
      this.options.write([...batch.values()]);
      if (this.failures >= FAILURES_BEFORE_WARNING) logger.info(`${what} written again`);
      this.failures = 0;
    } catch (error) {
      this.failures++;
      const level = this.failures === FAILURES_BEFORE_WARNING ? "warn" : "debug";
      logger[level](
        { err: error, rows: batch.size, failures: this.failures },
        `${what} not written; retrying at the next flush`,
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
  private keep(batch: Map<string, Row>): void {
    const { merge, maxPending, weight } = this.options;
    for (const [key, row] of batch) {
      const newer = this.pending.get(key);
      if (newer !== undefined) merge(newer, row);
      else if (this.pending.size < maxPending) this.pending.set(key, row);
      else this.dropped += weight?.(row) ?? 1;
    }
  }

  private reportDropped(): void {
    if (this.dropped === 0) return;
    const { what, maxPending, logger } = this.options;
    this.options.onDropped?.(this.dropped);
    logger.warn(
      { records: this.dropped, maxPending },
      `${what} dropped: too many rows waiting for an unwritable database`,
    );
    this.dropped = 0;
  }
}
