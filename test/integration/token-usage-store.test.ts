/**
 * Token usage in real SQLite: the v4 migration from a v3 database, batches landing whole,
 * no write before a flush however much is recorded, and the reads that `keygate usage`,
 * `keystore list` and the budget counters make.
 */
import { statSync } from "node:fs";
import test from "ava";
import Database from "better-sqlite3";
import { Registry } from "prom-client";
import { hashToken } from "../../server/crypto/token-hash.js";
import { createLogger } from "../../server/logger.js";
import type { TokenUsage } from "../../server/usage/token-usage.js";
import { UsageLedger } from "../../server/usage/usage-ledger.js";
import { fanOut, startUsageRecording } from "../../server/usage/usage-recording.js";
import { TokenUsageTable } from "../../server/usage/usage-table.js";
import { inspect, openStore, tempDb, writeV3Database } from "../helpers/store-db.js";

const DAY_MS = 86_400_000;
const DEC_3 = Date.parse("2026-12-03T12:00:00Z");

function usage(
  model: string,
  input: number,
  output = 0,
  cacheRead = 0,
  cacheWrite = 0,
): TokenUsage {
  return {
    model,
    inputTokens: input,
    outputTokens: output,
    cacheReadTokens: cacheRead,
    cacheWriteTokens: cacheWrite,
  };
}

function writer(t: { teardown(fn: () => void): void }, dbPath: string): TokenUsageTable {
  const table = TokenUsageTable.openForWriting(dbPath);
  t.teardown(() => table.close());
  return table;
}

function ledgerOn(t: { teardown(fn: () => void): void }, table: TokenUsageTable): UsageLedger {
  const ledger = new UsageLedger(table, createLogger("silent"), { flushIntervalMs: 3_600_000 });
  t.teardown(() => ledger.close());
  return ledger;
}

const rowCount = (dbPath: string) =>
  inspect(dbPath, (db) => db.prepare("SELECT count(*) FROM token_usage").pluck().get());

test("a v3 database gains token_usage (v4) and keeps its clients, tokens and last use", (t) => {
  const dbPath = tempDb(t);
  writeV3Database(dbPath, [["alpha", hashToken("t-alpha")]], [["alpha", 1234, 7]]);
  const store = openStore(t, dbPath);
  t.like(store.lookup(hashToken("t-alpha")), { clientId: "alpha" });
  t.deepEqual(store.listClients(), [{ id: "alpha", lastUsedAt: 1234, useCount: 7 }]);
  t.deepEqual(
    inspect(dbPath, (db) => ({
      version: db.pragma("user_version", { simple: true }),
      columns: db.prepare("SELECT name FROM pragma_table_info('token_usage')").pluck().all(),
    })),
    {
      version: 4,
      columns: [
        "client_id",
        "day",
        "model",
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
      ],
    },
  );
  const table = writer(t, dbPath);
  table.add([
    {
      clientId: "alpha",
      model: "m",
      day: "2026-12-03",
      requests: 1,
      inputTokens: 1,
      outputTokens: 2,
      cacheReadTokens: 3,
      cacheWriteTokens: 4,
    },
  ]);
  t.is(table.tokensSince("alpha", "2026-12-01"), 10);
});

test("reading a v3 database read-only reports no usage and changes nothing", (t) => {
  const dbPath = tempDb(t);
  writeV3Database(dbPath, [["alpha", hashToken("t-alpha")]]);
  t.is(TokenUsageTable.openForReading(dbPath), "no-usage");
  t.is(
    inspect(dbPath, (db) => db.pragma("user_version", { simple: true })),
    3,
  );
  t.is(TokenUsageTable.openForReading(`${dbPath}.absent`), "missing");
});

test("100 000 recorded responses write nothing until the flush, then land in one batch", (t) => {
  const dbPath = tempDb(t);
  const table = writer(t, dbPath);
  const ledger = ledgerOn(t, table);
  const files = () => [dbPath, `${dbPath}-wal`].map((file) => statSync(file).size).join();
  const before = files();
  for (let i = 0; i < 100_000; i++) {
    ledger.record(`client-${i % 10}`, usage(`m-${i % 3}`, 1, 2, 3, 4), DEC_3);
  }
  t.is(rowCount(dbPath), 0, "record() did no I/O");
  t.is(files(), before, "neither the database nor its WAL grew");
  ledger.flush();
  t.is(rowCount(dbPath), 30, "10 clients × 3 models, one day");
  t.is(table.tokensSince("client-3", "2026-12-03"), 10_000 * 10);
  const totals = table.totals("2026-12-01");
  t.is(
    totals.reduce((sum, row) => sum + row.requests, 0),
    100_000,
  );
});

test("flushes add to the stored rows; day and month reads follow UTC days", (t) => {
  const dbPath = tempDb(t);
  const table = writer(t, dbPath);
  const ledger = ledgerOn(t, table);
  const nov30Late = Date.parse("2026-11-30T23:59:59Z");
  ledger.record("alpha", usage("m", 1000), nov30Late);
  ledger.record("alpha", usage("m", 100), DEC_3 - DAY_MS);
  ledger.flush();
  ledger.record("alpha", usage("m", 10, 0, 0, 1), DEC_3);
  ledger.record("alpha", usage("other-model", 5), DEC_3);
  ledger.record("beta", usage("m", 7), DEC_3);
  ledger.flush();

  t.is(table.tokensSince("alpha", "2026-12-03"), 16, "today");
  t.is(table.tokensSince("alpha", "2026-12-01"), 116, "this month: not November 30th");
  t.is(table.tokensSince("alpha", "2026-11-01"), 1116);
  t.is(table.tokensSince("nobody", "2026-11-01"), 0);
  t.deepEqual(
    table.tokensSinceByClient("2026-12-01"),
    new Map([
      ["alpha", 116],
      ["beta", 7],
    ]),
  );
  t.deepEqual(
    table.recentTokens("2026-12-03", "2026-12-01"),
    new Map([
      ["alpha", { today: 16, month: 116 }],
      ["beta", { today: 7, month: 7 }],
    ]),
  );
  t.deepEqual(
    table.totals("2026-12-01", "alpha").map((row) => [row.model, row.requests, row.inputTokens]),
    [
      ["m", 2, 110],
      ["other-model", 1, 5],
    ],
  );
});

test("a busy database fails the flush at once; the batch lands at the next one", (t) => {
  const dbPath = tempDb(t);
  const table = writer(t, dbPath);
  const ledger = ledgerOn(t, table);
  ledger.record("alpha", usage("m", 3), DEC_3);
  const other = new Database(dbPath);
  other.exec("BEGIN IMMEDIATE");
  const started = performance.now();
  ledger.flush();
  t.true(performance.now() - started < 1000, "did not wait for the other writer");
  other.exec("ROLLBACK");
  other.close();
  t.is(rowCount(dbPath), 0);
  ledger.flush();
  t.is(table.tokensSince("alpha", "2026-12-03"), 3);
});

test("the server's recording: one sink counts into the metrics at once and into SQLite at close", async (t) => {
  const dbPath = tempDb(t);
  const registry = new Registry();
  const recording = startUsageRecording({
    dbPath,
    registry,
    logger: createLogger("silent"),
    flushIntervalMs: 3_600_000,
  });
  const seen: string[] = [];
  const sink = fanOut(recording.sink, { record: (clientId) => seen.push(clientId) });
  sink.record("alpha", usage("claude-sonnet-4", 100, 20, 5, 1), DEC_3);
  sink.record("beta", usage("gpt-4o", 7), DEC_3);
  t.deepEqual(seen, ["alpha", "beta"], "every sink hears every response");
  t.regex(
    await registry.metrics(),
    /keygate_usage_tokens_total\{client="alpha",model="claude-sonnet-4",kind="input"\} 100/,
  );
  t.is(rowCount(dbPath), 0);
  recording.close();
  const reader = TokenUsageTable.openForReading(dbPath);
  if (typeof reader === "string") return t.fail(reader);
  t.teardown(() => reader.close());
  t.is(reader.tokensSince("alpha", "2026-12-03"), 126);
  t.is(reader.tokensSince("beta", "2026-12-01"), 7);
});
