/**
 * Composition of token usage recording for the server: the SQLite ledger and the
 * Prometheus counters behind one UsageSink, which the response path (ext_proc) calls
 * once per response that reported usage. Budget counters join through fanOut.
 */
import type { Registry } from "prom-client";
import type { Logger } from "../logger.js";
import type { UsageSink } from "./token-usage.js";
import { UsageLedger } from "./usage-ledger.js";
import { createUsageMetrics } from "./usage-metrics.js";
import { TokenUsageTable } from "./usage-table.js";

export interface UsageRecordingOptions {
  readonly dbPath: string;
  readonly registry: Registry;
  readonly logger: Logger;
  readonly flushIntervalMs: number;
}

export interface UsageRecording {
  /** Hand this to the response path. record() does no I/O. */
  readonly sink: UsageSink;
  /** The stored usage, for reads such as a budget's spent tokens at start-up. */
  readonly table: TokenUsageTable;
  /** Writes what is pending and closes the database connection. */
  close(): void;
}

/**
 * Opens the usage table on its own connection and starts the ledger's flush timer.
 * @throws Error when the database cannot be opened.
 */
export function startUsageRecording(options: UsageRecordingOptions): UsageRecording {
  const table = TokenUsageTable.openForWriting(options.dbPath);
  const metrics = createUsageMetrics(options.registry);
  const ledger = new UsageLedger(table, options.logger, {
    flushIntervalMs: options.flushIntervalMs,
    onDropped: (responses) => metrics.dropped.inc(responses),
  });
  return {
    sink: fanOut(ledger, metrics),
    table,
    close() {
      ledger.close();
      table.close();
    },
  };
}

/** One sink that records into each of `sinks` in turn; each must not throw or do I/O. */
export function fanOut(...sinks: readonly UsageSink[]): UsageSink {
  return {
    record(clientId, usage, now) {
      for (const sink of sinks) sink.record(clientId, usage, now);
    },
  };
}
