/** What /keystore and /metrics say about budgets: bounded, most spent first, counts over all. */
import test from "ava";
import { Registry } from "prom-client";
import { createLogger } from "../../server/logger.js";
import { MAX_LISTED_BUDGETS, startBudgets } from "../../server/usage/budgets.js";

const NOW = Date.parse("2026-11-23T12:00:00Z");

function usage(inputTokens: number) {
  return { model: "m", inputTokens, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0 };
}

test("status lists at most 100 budgeted clients, the most spent first, and counts them all", async (t) => {
  const registry = new Registry();
  const budgets = await startBudgets({ redisUrl: null, logger: createLogger("silent"), registry });
  t.teardown(() => budgets.close());
  const { counters } = budgets;
  for (let i = 0; i < 150; i++) {
    const id = `c${String(i).padStart(3, "0")}`;
    counters.record(id, usage(i), NOW);
    counters.spent(id, { tokens: 100, per: "day" }, NOW);
  }
  counters.record("unbudgeted", usage(1e6), NOW);
  const status = budgets.status(NOW);
  t.like(status, { store: "local", degraded: false, redis: null, tracked: 150, exhausted: 50 });
  t.is(status.clients.length, MAX_LISTED_BUDGETS);
  t.deepEqual(status.clients[0], {
    id: "c149",
    budget: { tokens: 100, per: "day" },
    spent: 149,
    exhausted: true,
    resets_at: "2026-11-24T00:00:00.000Z",
  });
  t.false(status.clients.some((client) => client.id === "unbudgeted"));
});

test("the budget gauges read the status at scrape time", async (t) => {
  const registry = new Registry();
  const budgets = await startBudgets({ redisUrl: null, logger: createLogger("silent"), registry });
  t.teardown(() => budgets.close());
  budgets.counters.record("a", usage(10), Date.now());
  budgets.counters.spent("a", { tokens: 5, per: "month" }, Date.now());
  const text = await registry.metrics();
  t.regex(text, /^keygate_budget_exhausted_clients 1$/m);
  t.regex(text, /^keygate_budget_degraded 0$/m);
  t.regex(text, /^keygate_usage_redis_up 0$/m);
  t.regex(text, /^keygate_budget_pending_increments 0$/m);
});
