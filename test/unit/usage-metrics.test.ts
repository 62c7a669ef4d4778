/**
 * Prometheus usage counters: tokens by kind and responses per client and model, and the
 * bound on their series whatever client ids and model names arrive.
 */
import { readFileSync } from "node:fs";
import test from "ava";
import { Registry } from "prom-client";
import type { TokenUsage } from "../../server/usage/token-usage.js";
import {
  createUsageMetrics,
  MAX_CLIENT_LABELS,
  MAX_LABEL_PAIRS,
  MAX_MODEL_LABELS,
  OVERFLOW_LABEL,
} from "../../server/usage/usage-metrics.js";

const NOW = Date.parse("2026-12-03T12:00:00Z");

function usage(model: string, input = 10, output = 5, cacheRead = 2, cacheWrite = 1): TokenUsage {
  return {
    model,
    inputTokens: input,
    outputTokens: output,
    cacheReadTokens: cacheRead,
    cacheWriteTokens: cacheWrite,
  };
}

async function values(registry: Registry, name: string) {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (metric?.values ?? []).map((v) => ({ labels: v.labels, value: v.value }));
}

test("tokens are counted by client, model and kind; responses by client and model", async (t) => {
  const registry = new Registry();
  const metrics = createUsageMetrics(registry);
  metrics.record("alpha", usage("claude-sonnet-4"), NOW);
  metrics.record("alpha", usage("claude-sonnet-4", 1, 1, 0, 0), NOW);
  t.deepEqual(await values(registry, "keygate_usage_responses_total"), [
    { labels: { client: "alpha", model: "claude-sonnet-4" }, value: 2 },
  ]);
  t.deepEqual(
    (await values(registry, "keygate_usage_tokens_total")).map((v) => [v.labels.kind, v.value]),
    [
      ["input", 11],
      ["output", 6],
      ["cache_read", 2],
      ["cache_write", 1],
    ],
  );
});

test("client and model label values are bounded; the rest count under (other)", async (t) => {
  const registry = new Registry();
  const metrics = createUsageMetrics(registry, { clients: 3, models: 2, pairs: 100 });
  for (let i = 0; i < 10; i++) metrics.record(`client-${i}`, usage("m1"), NOW);
  for (let i = 0; i < 10; i++) metrics.record("client-0", usage(`model-${i}`), NOW);
  const responses = await values(registry, "keygate_usage_responses_total");
  const clients = new Set(responses.map((v) => v.labels.client));
  const models = new Set(responses.map((v) => v.labels.model));
  t.deepEqual([...clients].sort(), ["(other)", "client-0", "client-1", "client-2"]);
  t.deepEqual([...models].sort(), ["(other)", "m1", "model-0"].sort());
  const total = responses.reduce((sum, v) => sum + v.value, 0);
  t.is(total, 20, "every response is counted somewhere");
  t.true(responses.some((v) => v.labels.client === OVERFLOW_LABEL && v.value === 7));
});

test("label pairs are bounded: series never exceed (pairs + 1) × 5 whatever arrives", async (t) => {
  const registry = new Registry();
  const pairs = 20;
  const metrics = createUsageMetrics(registry, { clients: 1000, models: 1000, pairs });
  for (let i = 0; i < 300; i++) metrics.record(`c${i % 50}`, usage(`m${i}`), NOW);
  const responses = await values(registry, "keygate_usage_responses_total");
  const tokens = await values(registry, "keygate_usage_tokens_total");
  t.is(responses.length, pairs + 1);
  t.is(tokens.length, (pairs + 1) * 4);
  t.is(
    responses.reduce((sum, v) => sum + v.value, 0),
    300,
  );
});

test("odd model names become bounded label values; odd counts never throw", async (t) => {
  const registry = new Registry();
  const metrics = createUsageMetrics(registry);
  metrics.record("alpha", usage(`we"ird\n{model}${"y".repeat(300)}`, -1, Number.NaN), NOW);
  const [only] = await values(registry, "keygate_usage_responses_total");
  t.is(only?.labels.model?.toString().length, 100);
  t.regex(String(only?.labels.model), /^[A-Za-z0-9._:/@+-]+$/);
});

test("every usage metric is in the README's metrics table, and so is the bound", (t) => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const registry = new Registry();
  createUsageMetrics(registry);
  const names = registry.getMetricsAsArray().map((metric) => metric.name);
  t.true(names.length >= 3);
  for (const name of names) t.true(readme.includes(`| \`${name}\` |`), `${name} is documented`);
  const spaced = (n: number) => String(n).replace(/\B(?=(\d{3})+$)/g, " ");
  t.true(
    new RegExp(
      `first ${spaced(MAX_CLIENT_LABELS)} distinct\\s+\`client\` values and the first ${spaced(MAX_MODEL_LABELS)} distinct`,
    ).test(readme),
  );
  t.true(readme.includes(`${spaced(MAX_LABEL_PAIRS)} distinct (client, model) pairs`));
});
