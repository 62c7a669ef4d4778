/**
 * Each client's last use, recorded off the Check path: a Check only bumps an in-memory
 * count; the batch goes to SQLite in one transaction every few seconds and at shutdown
 * (write-batch.ts), so a Check never costs a disk write.
 */
import type { UsageEntry } from "../keystore/store/store.js";
import type { Logger } from "../logger.js";
import { WriteBatch } from "./write-batch.js";

/** Bounds what a database that stays unwritable can make keygate hold in memory. */
const MAX_PENDING_CLIENTS = 200_000;

/** Where a batch goes: one transaction (KeystoreStore.recordUsage). */
export interface LastUseSink {
  recordUsage(entries: readonly UsageEntry[]): void;
}

interface PendingUse {
  readonly clientId: string;
  lastUsedAt: number;
  count: number;
}

export class LastUseRecorder {
  private readonly batch: WriteBatch<PendingUse>;

  constructor(sink: LastUseSink, logger: Logger, flushIntervalMs: number) {
    this.batch = new WriteBatch<PendingUse>({
      what: "client last use",
      flushIntervalMs,
      maxPending: MAX_PENDING_CLIENTS,
      write: (rows) => sink.recordUsage(rows),
      merge: (into, from) => {
        into.count += from.count;
        into.lastUsedAt = Math.max(into.lastUsedAt, from.lastUsedAt);
      },
      weight: (row) => row.count,
      logger,
    });
  }

  /** Notes one use; O(1), no I/O. */
  record(clientId: string, now: number): void {
    const use = this.batch.row(clientId, () => ({ clientId, lastUsedAt: now, count: 0 }));
    if (use === undefined) return;
    use.count++;
    use.lastUsedAt = now;
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
