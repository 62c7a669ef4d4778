/**
 * Last use per client, recorded off the hot path: a Check only bumps an in-memory
 * counter; a timer flushes the batch to SQLite in one transaction every few seconds
 * (and once more at shutdown), so usage never costs a Check a disk write.
 */
import type { Logger } from "../../logger.js";
import type { UsageEntry } from "./store.js";

/** Bounds what a database that stays unwritable can make us hold in memory. */
const MAX_PENDING_CLIENTS = 200_000;

export interface UsageSink {
  recordUsage(entries: readonly UsageEntry[]): void;
}

export class UsageRecorder {
  private pending = new Map<string, { lastUsedAt: number; count: number }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly sink: UsageSink,
    private readonly logger: Logger,
    flushIntervalMs: number,
  ) {
    this.timer = setInterval(() => this.flush(), flushIntervalMs);
    this.timer.unref();
  }

  /** Notes one use; O(1), no I/O. */
  record(clientId: string, now: number): void {
    const entry = this.pending.get(clientId);
    if (entry) {
      entry.count++;
      entry.lastUsedAt = now;
    } else this.pending.set(clientId, { lastUsedAt: now, count: 1 });
  }

  /**
   * Writes the batch. A failed write (the database busy with a reload, never waited for)
   * keeps its counts for the next flush, up to MAX_PENDING_CLIENTS clients.
   */
  flush(): void {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    try {
      this.sink.recordUsage([...batch].map(([clientId, entry]) => ({ clientId, ...entry })));
    } catch (error) {
      this.logger.debug(
        { err: error, clients: batch.size },
        "client usage not written; retrying at the next flush",
      );
      for (const [clientId, entry] of batch) {
        const newer = this.pending.get(clientId);
        if (newer) newer.count += entry.count;
        else if (this.pending.size < MAX_PENDING_CLIENTS) this.pending.set(clientId, entry);
      }
    }
  }

  /** Final flush and timer stop. */
  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
