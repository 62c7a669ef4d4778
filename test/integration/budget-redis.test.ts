/**
 * The shared budget counters against a real redis-server: two replicas (two counters,
 * each with its own Redis connection) see one total; keys expire at the window's end
 * (plus slack); Redis killed leaves each replica counting locally and degraded, with
 * its increments queued; Redis back (even empty) gets the totals reconciled; and a
 * password in the URL never reaches a log line or a status.
 */
import { PassThrough } from "node:stream";
import test from "ava";
import { Redis } from "ioredis";
import type { Budget } from "../../server/keystore/format/model.js";
import { createLogger } from "../../server/logger.js";
import { BudgetCounters } from "../../server/usage/budget-counters.js";
import { budgetWindow } from "../../server/usage/budget-window.js";
import { EPOCH_KEY, RedisBudgetStore } from "../../server/usage/redis-budget-store.js";
import type { TokenUsage } from "../../server/usage/token-usage.js";
import { type RunningRedis, startRedis } from "../helpers/redis-server.js";

const DAILY: Budget = { tokens: 100, per: "day" };
const MONTHLY: Budget = { tokens: 1000, per: "month" };

function usage(tokens: number): TokenUsage {
  return {
    model: "m",
    inputTokens: tokens,
    outputTokens: 0,
    cacheReadTokens: 0,
    cacheWriteTokens: 0,
  };
}

interface Replica {
  readonly counters: BudgetCounters;
  readonly store: RedisBudgetStore;
  readonly logs: () => string;
}

function replica(t: { teardown(fn: () => Promise<void>): void }, url: string): Replica {
  const counters = new BudgetCounters();
  const stream = new PassThrough();
  let logs = "";
  stream.on("data", (chunk: Buffer) => {
    logs += chunk.toString();
  });
  const store = new RedisBudgetStore({
    url,
    logger: createLogger("debug", stream),
    ownTotals: (now) => counters.ownTotals(now),
    // Tests drive sync() themselves; the timer only backs them up.
    syncIntervalMs: 60_000,
  });
  counters.share(store);
  store.start();
  t.teardown(() => store.close());
  return { counters, store, logs: () => logs };
}

/** Syncs until the store reports the wanted state (connecting takes a moment). */
async function syncUntil(store: RedisBudgetStore, state: "up" | "degraded"): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await store.sync();
    if (store.status().state === state) return;
    if (Date.now() > deadline)
      throw new Error(`store never became ${state}: ${JSON.stringify(store.status())}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function withRedis(
  t: { teardown(fn: () => Promise<void>): void },
  options: { password?: string } = {},
): Promise<RunningRedis> {
  const redis = await startRedis(options);
  t.teardown(() => redis.stop());
  return redis;
}

test("two replicas sharing one Redis see one total", async (t) => {
  const redis = await withRedis(t);
  const a = replica(t, redis.url);
  const b = replica(t, redis.url);
  const now = Date.now();
  // Check asks about the client on both replicas (which is what makes them fetch its total).
  t.is(a.counters.spent("c", DAILY, now), 0);
  t.is(b.counters.spent("c", DAILY, now), 0);
  t.is(b.counters.spent("c", MONTHLY, now), 0);
  a.counters.record("c", usage(60), now);
  b.counters.record("c", usage(50), now);
  await syncUntil(a.store, "up");
  await syncUntil(b.store, "up");
  // "up" may come from the connection, before a sync pushed anything: one more round on
  // each, so that each has fetched after both pushed.
  await a.store.sync();
  await b.store.sync();
  await a.store.sync();
  t.is(a.counters.spent("c", DAILY, now), 110);
  t.is(b.counters.spent("c", DAILY, now), 110);
  t.is(b.counters.spent("c", MONTHLY, now), 110, "the month is shared too");
  t.is(a.store.status().pendingIncrements, 0);
});

test("keys expire at the end of their window, plus slack", async (t) => {
  const redis = await withRedis(t);
  const a = replica(t, redis.url);
  const now = Date.now();
  a.counters.record("c", usage(5), now);
  await syncUntil(a.store, "up");
  const client = new Redis(redis.url);
  t.teardown(async () => void client.disconnect());
  const day = budgetWindow("day", now);
  const month = budgetWindow("month", now);
  const dayExpiry = await client.pexpiretime(`keygate:budget:day:${day.startDay}:c`);
  const monthExpiry = await client.pexpiretime(`keygate:budget:month:${month.startDay}:c`);
  t.is(dayExpiry, day.resetsAt + 3_600_000);
  t.is(monthExpiry, month.resetsAt + 3_600_000);
  t.is(await client.get(`keygate:budget:day:${day.startDay}:c`), "5");
});

test("Redis killed: local counts, degraded, increments queued; restarted empty: totals reconciled", async (t) => {
  const redis = await withRedis(t);
  const a = replica(t, redis.url);
  const b = replica(t, redis.url);
  const now = Date.now();
  a.counters.spent("c", DAILY, now);
  b.counters.spent("c", DAILY, now);
  a.counters.record("c", usage(30), now);
  b.counters.record("c", usage(20), now);
  await syncUntil(a.store, "up");
  await syncUntil(b.store, "up");
  await a.store.sync();
  t.is(a.counters.spent("c", DAILY, now), 50);

  await redis.kill();
  a.counters.record("c", usage(40), now);
  await syncUntil(a.store, "degraded");
  const degraded = a.store.status();
  t.is(degraded.state, "degraded");
  t.truthy(degraded.reason);
  t.is(degraded.pendingIncrements, 2, "the day and the month, queued");
  t.is(a.counters.spent("c", DAILY, now), 90, "the last shared total plus what is queued");
  t.regex(a.logs(), /Redis unreachable; counting locally/);

  // A restart without persistence: Redis comes back empty, and both replicas re-send their own totals.
  await redis.restart();
  await syncUntil(a.store, "up");
  await syncUntil(b.store, "up");
  // Each replica re-sends its own totals in the sync that finds Redis empty; the other's
  // arrive by the next fetch (a replica's own timer may have synced before the other
  // re-sent), so both fetch once more.
  await a.store.sync();
  await b.store.sync();
  t.is(a.counters.spent("c", DAILY, now), 90);
  t.is(b.counters.spent("c", DAILY, now), 90);
  t.is(a.store.status().pendingIncrements, 0);
  t.regex(a.logs(), /Redis lost its counters/);
  const client = new Redis(redis.url);
  t.teardown(async () => void client.disconnect());
  t.truthy(await client.get(EPOCH_KEY));
});

test("Redis that was never there: degraded from the start, local counts enforced", async (t) => {
  const redis = await withRedis(t);
  await redis.kill();
  const a = replica(t, redis.url);
  const now = Date.now();
  a.counters.record("c", usage(120), now);
  await syncUntil(a.store, "degraded");
  t.is(a.counters.spent("c", DAILY, now), 120);
});

test("a password in the URL never reaches a log line or the status", async (t) => {
  const password = "s3cret-redis-pass";
  const redis = await withRedis(t, { password });
  const wrong = replica(t, redis.url.replace(password, "wrong-pass-x"));
  const right = replica(t, redis.url);
  right.counters.record("c", usage(1), Date.now());
  await syncUntil(right.store, "up");
  await syncUntil(wrong.store, "degraded");
  t.regex(wrong.store.status().reason ?? "", /WRONGPASS|NOAUTH|auth/i);
  await redis.kill();
  await syncUntil(right.store, "degraded");
  for (const r of [wrong, right]) {
    t.false(r.logs().includes(password));
    t.false(r.logs().includes("wrong-pass-x"));
    t.false(JSON.stringify(r.store.status()).includes(password));
    t.is(r.store.status().target, `redis://127.0.0.1:${redis.port}/0`);
  }
});
