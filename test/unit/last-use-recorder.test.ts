import test from "ava";
import type { UsageEntry } from "../../server/keystore/store/store.js";
import { createLogger } from "../../server/logger.js";
import { LastUseRecorder } from "../../server/usage/last-use-recorder.js";

function recorder() {
  const batches: UsageEntry[][] = [];
  let fail = false;
  const sink = {
    recordUsage(entries: readonly UsageEntry[]) {
      if (fail) throw new Error("disk full");
      batches.push([...entries]);
    },
  };
  const usage = new LastUseRecorder(sink, createLogger("silent"), 60_000);
  return { usage, batches, failNext: () => (fail = true), recover: () => (fail = false) };
}

test("uses are batched per client: one entry with the count and the latest time", (t) => {
  const { usage, batches } = recorder();
  usage.record("a", 1000);
  usage.record("b", 1500);
  usage.record("a", 2000);
  t.deepEqual(batches, [], "nothing is written on the hot path");
  usage.flush();
  t.deepEqual(batches, [
    [
      { clientId: "a", lastUsedAt: 2000, count: 2 },
      { clientId: "b", lastUsedAt: 1500, count: 1 },
    ],
  ]);
  usage.flush();
  t.is(batches.length, 1, "an empty batch is not written");
  usage.close();
});

test("close flushes what is pending", (t) => {
  const { usage, batches } = recorder();
  usage.record("a", 1);
  usage.close();
  t.deepEqual(batches, [[{ clientId: "a", lastUsedAt: 1, count: 1 }]]);
});

test("a failed write is not thrown into the Check path and is retried at the next flush", (t) => {
  const { usage, batches, failNext, recover } = recorder();
  usage.record("a", 1);
  failNext();
  t.notThrows(() => usage.flush());
  usage.record("a", 5);
  recover();
  usage.flush();
  t.deepEqual(batches, [[{ clientId: "a", lastUsedAt: 5, count: 2 }]]);
  usage.close();
});
