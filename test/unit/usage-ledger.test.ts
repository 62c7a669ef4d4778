/**
 * The token usage ledger: record() only adds to a batch keyed by client, model and UTC
 * day; flush() writes it whole; a failed write is kept for the next flush, within a bound.
 */
import { Writable } from "node:stream";
import test from "ava";
import { createLogger } from "../../server/logger.js";
import type { TokenUsage } from "../../server/usage/token-usage.js";
import {
  MAX_MODELS_PER_CLIENT_DAY,
  OTHER_MODELS,
  type UsageBatchWriter,
  UsageLedger,
} from "../../server/usage/usage-ledger.js";
import type { DailyUsage } from "../../server/usage/usage-table.js";

const NOON = Date.parse("2026-12-03T12:00:00Z");
const JUST_BEFORE_MIDNIGHT = Date.parse("2026-12-03T23:59:59.999Z");
const MIDNIGHT = Date.parse("2026-12-04T00:00:00Z");

function usage(model: string, input = 10, output = 5, cacheRead = 0, cacheWrite = 0): TokenUsage {
  return {
    model,
    inputTokens: input,
    outputTokens: output,
    cacheReadTokens: cacheRead,
    cacheWriteTokens: cacheWrite,
  };
}

/** A writer that keeps what it was handed, and fails while `failing` is set. */
class ListWriter implements UsageBatchWriter {
  readonly batches: DailyUsage[][] = [];
  failing = false;
  add(rows: readonly DailyUsage[]): void {
    if (this.failing) throw Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" });
    this.batches.push([...rows]);
  }
}

function ledger(t: { teardown(fn: () => void): void }, writer: UsageBatchWriter, options = {}) {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const made = new UsageLedger(writer, createLogger("debug", sink), {
    flushIntervalMs: 60_000,
    ...options,
  });
  t.teardown(() => made.close());
  return { ledger: made, lines };
}

test("responses of one client, model and day add up to one row", (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer);
  l.record("alpha", usage("claude-sonnet-4", 100, 20, 3, 4), NOON);
  l.record("alpha", usage("claude-sonnet-4", 1, 2, 0, 0), NOON + 1000);
  l.flush();
  t.deepEqual(writer.batches, [
    [
      {
        clientId: "alpha",
        model: "claude-sonnet-4",
        day: "2026-12-03",
        requests: 2,
        inputTokens: 101,
        outputTokens: 22,
        cacheReadTokens: 3,
        cacheWriteTokens: 4,
      },
    ],
  ]);
});

test("another client, model or UTC day is another row", (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer);
  l.record("alpha", usage("m1"), JUST_BEFORE_MIDNIGHT);
  l.record("alpha", usage("m1"), MIDNIGHT);
  l.record("alpha", usage("m2"), MIDNIGHT);
  l.record("beta", usage("m1"), MIDNIGHT);
  l.flush();
  t.deepEqual(
    writer.batches[0]?.map((row) => `${row.clientId} ${row.model} ${row.day} ${row.requests}`),
    [
      "alpha m1 2026-12-03 1",
      "alpha m1 2026-12-04 1",
      "alpha m2 2026-12-04 1",
      "beta m1 2026-12-04 1",
    ],
  );
});

test("nothing is written until a flush, and an empty flush writes nothing", (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer);
  l.flush();
  for (let i = 0; i < 1000; i++) l.record(`c${i % 7}`, usage("m"), NOON);
  t.deepEqual(writer.batches, []);
  t.is(l.pendingRows, 7);
  l.flush();
  t.is(writer.batches.length, 1);
  t.is(l.pendingRows, 0);
  l.flush();
  t.is(writer.batches.length, 1);
});

test("close writes what is pending", (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer);
  l.record("alpha", usage("m"), NOON);
  l.close();
  t.is(writer.batches.length, 1);
});

test("the timer flushes on its own", async (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer, { flushIntervalMs: 10 });
  l.record("alpha", usage("m"), NOON);
  for (let waited = 0; writer.batches.length === 0 && waited < 5000; waited += 10) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  t.is(writer.batches.length, 1);
});

test("a failed write keeps the batch, merged with what arrived since, for the next flush", (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer);
  l.record("alpha", usage("m", 10, 1), NOON);
  writer.failing = true;
  l.flush();
  l.record("alpha", usage("m", 5, 1), NOON);
  l.flush();
  writer.failing = false;
  l.flush();
  t.is(writer.batches.length, 1);
  t.like(writer.batches[0]?.[0], { requests: 2, inputTokens: 15, outputTokens: 2 });
});

test("an unwritable database holds at most maxPendingRows rows; the rest are dropped and counted", (t) => {
  const writer = new ListWriter();
  writer.failing = true;
  const dropped: number[] = [];
  const { ledger: l, lines } = ledger(t, writer, {
    maxPendingRows: 3,
    onDropped: (responses: number) => dropped.push(responses),
  });
  for (let i = 0; i < 10; i++) l.record(`c${i}`, usage("m"), NOON);
  l.record("c0", usage("m"), NOON); // a held row keeps adding up
  t.is(l.pendingRows, 3);
  l.flush();
  t.deepEqual(dropped, [7]);
  t.true(lines.some((line) => line.includes("token usage dropped")));
  writer.failing = false;
  l.flush();
  t.deepEqual(
    writer.batches[0]?.map((row) => [row.clientId, row.requests]),
    [
      ["c0", 2],
      ["c1", 1],
      ["c2", 1],
    ],
  );
});

test("a write failing for a minute of flushes is a warning, once", (t) => {
  const writer = new ListWriter();
  writer.failing = true;
  const { ledger: l, lines } = ledger(t, writer);
  l.record("alpha", usage("m"), NOON);
  for (let i = 0; i < 30; i++) l.flush();
  const warnings = lines.filter((line) => line.includes('"level":"warn"'));
  t.is(warnings.length, 1);
  t.true(warnings[0]?.includes("token usage not written"));
  writer.failing = false;
  l.flush();
  t.true(lines.at(-1)?.includes("token usage written again"));
});

test("odd counts and model names from a provider are stored bounded", (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer);
  l.record("alpha", usage(` bad "model"\n${"x".repeat(500)}`, Number.NaN, -5, 2.7, 1), NOON);
  l.record("alpha", usage("", 1, 1), NOON);
  l.flush();
  const [odd, empty] = writer.batches[0] ?? [];
  t.is(odd?.model.length, 100);
  t.regex(odd?.model ?? "", /^bad__model__x+$/);
  t.like(odd, { inputTokens: 0, outputTokens: 0, cacheReadTokens: 2, cacheWriteTokens: 1 });
  t.is(empty?.model, "unknown");
});

test("a client's models past the daily bound add up under (other); others and the next day are unaffected", (t) => {
  const writer = new ListWriter();
  const { ledger: l } = ledger(t, writer);
  const extra = 7;
  for (let index = 0; index < MAX_MODELS_PER_CLIENT_DAY + extra; index++) {
    l.record("echo", usage(`model-${index}`, 1, 1), NOON);
  }
  l.record("echo", usage("model-0", 1, 1), NOON + 1);
  l.record("other-client", usage("model-99", 1, 1), NOON + 2);
  l.record("echo", usage("model-99", 1, 1), MIDNIGHT);
  l.flush();
  const rows = writer.batches.flat();
  const echoToday = rows.filter((row) => row.clientId === "echo" && row.day === "2026-12-03");
  t.is(echoToday.length, MAX_MODELS_PER_CLIENT_DAY + 1);
  t.like(
    echoToday.find((row) => row.model === OTHER_MODELS),
    { requests: extra, inputTokens: extra },
  );
  t.like(
    echoToday.find((row) => row.model === "model-0"),
    { requests: 2 },
  );
  t.truthy(rows.find((row) => row.clientId === "other-client" && row.model === "model-99"));
  t.truthy(
    rows.find(
      (row) => row.clientId === "echo" && row.day === "2026-12-04" && row.model === "model-99",
    ),
  );
});
