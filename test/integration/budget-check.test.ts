/**
 * Budgets through the real server over gRPC, with real SQLite and a real redis-server:
 * usage fed through the server's UsageSink (what the response path calls) spends the
 * budget, and the next Check is a 429 QUOTA_EXCEEDED with retry-after; a restart
 * recovers the window from the usage ledger; two keygate instances sharing one Redis
 * enforce one budget; Redis killed leaves keygate serving on local counts, degraded on
 * /readyz and in metrics; Redis back gets the queued increments.
 *
 * Every Check is what Envoy sends for
 *   curl -H 'authorization: Bearer t-metered' -d '{"model":"m"}' http://envoy/v1/messages
 */
import test from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import type { TokenUsage } from "../../server/usage/token-usage.js";
import { checkRequest } from "../helpers/check-request.js";
import { denialOf, setHeaders } from "../helpers/grpc-client.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";
import { startRedis } from "../helpers/redis-server.js";

const KEYSTORE = `version: 1
clients:
  - id: metered
    tokens: [{ sha256: ${hashToken("t-metered")} }]
    budget: {tokens: 1000, per: day}
  - id: free
    tokens: [{ sha256: ${hashToken("t-free")} }]
`;
const METERED = checkRequest({
  json: { model: "m" },
  headers: { authorization: "Bearer t-metered" },
});
const FREE = checkRequest({ json: { model: "m" }, headers: { authorization: "Bearer t-free" } });

function usage(inputTokens: number, outputTokens: number): TokenUsage {
  return { model: "m", inputTokens, outputTokens, cacheReadTokens: 0, cacheWriteTokens: 0 };
}

async function start(
  t: { teardown(fn: () => Promise<void>): void },
  options: { env?: Record<string, string>; dir?: string } = {},
): Promise<TestKeygate> {
  const kg = await startTestKeygate({ keystore: KEYSTORE, ...options });
  t.teardown(() => kg.stop());
  return kg;
}

async function status(kg: TestKeygate, check = METERED): Promise<number> {
  const response = await kg.client.check(check);
  return response.denied_response?.status.code ?? 200;
}

async function getJson(url: string): Promise<Record<string, unknown>> {
  return (await (await fetch(url)).json()) as Record<string, unknown>;
}

async function metric(kg: TestKeygate, name: string): Promise<number> {
  const text = await (await fetch(`${kg.adminUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return Number(line?.split(" ")[1]);
}

/** Polls (the shared totals arrive within about a second) until `predicate` holds. */
async function eventually(predicate: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("usage that crosses the budget lets that request complete and refuses the next, until the window resets", async (t) => {
  const kg = await start(t);
  t.is(await status(kg), 200);
  kg.running.usageSink.record("metered", usage(600, 300), Date.now());
  t.is(await status(kg), 200, "900 of 1000: still allowed");
  // Post-paid: this response crosses the budget; it was allowed, the next is not.
  kg.running.usageSink.record("metered", usage(100, 150), Date.now());
  const refused = await kg.client.check(METERED);
  const denial = denialOf(refused);
  t.is(denial.status, 429);
  t.is(denial.type, "QUOTA_EXCEEDED");
  const retryAfter = (JSON.parse(refused.denied_response?.body ?? "{}") as { retry_after: number })
    .retry_after;
  const header = refused.denied_response?.headers.find((h) => h.header.key === "retry-after");
  t.is(header?.header.value, String(retryAfter));
  const untilMidnight = (Math.floor(Date.now() / 86_400_000) + 1) * 86_400_000 - Date.now();
  t.true(Math.abs(retryAfter - untilMidnight / 1000) <= 2, `${retryAfter}s to 00:00 UTC`);
  t.is(await status(kg, FREE), 200, "a client without a budget is not affected");

  const keystore = await getJson(`${kg.adminUrl}/keystore`);
  t.like(keystore.budgets, { store: "local", degraded: false, tracked: 1, exhausted: 1 });
  t.like((keystore.budgets as { clients: unknown[] }).clients[0], {
    id: "metered",
    budget: { tokens: 1000, per: "day" },
    spent: 1150,
    exhausted: true,
  });
  t.is(await metric(kg, "keygate_budget_exhausted_clients"), 1);
});

test("a restart recovers the day's spent tokens from the usage ledger", async (t) => {
  const first = await startTestKeygate({ keystore: KEYSTORE });
  first.running.usageSink.record("metered", usage(1000, 0), Date.now());
  t.is(await status(first), 429);
  await first.stop();
  const second = await start(t, { dir: first.dir });
  t.is(await status(second), 429, "still spent after the restart");
});

test("two keygate instances sharing one Redis enforce one budget", async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const env = { KEYGATE_USAGE_REDIS_URL: redis.url };
  const a = await start(t, { env });
  const b = await start(t, { env });
  t.is(await status(a), 200);
  t.is(await status(b), 200);
  // Each instance sees only part of the usage; together it is over the budget.
  a.running.usageSink.record("metered", usage(600, 0), Date.now());
  b.running.usageSink.record("metered", usage(500, 0), Date.now());
  await eventually(async () => (await status(a)) === 429, "instance a refuses");
  await eventually(async () => (await status(b)) === 429, "instance b refuses");
  t.like(await getJson(`${a.adminUrl}/readyz`), {
    ready: true,
    budgets: { store: "redis", degraded: false },
  });
  t.is(await metric(a, "keygate_usage_redis_up"), 1);
});

test("Redis killed: keygate keeps serving on local counts, degraded; Redis back: increments reconciled", async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const env = { KEYGATE_USAGE_REDIS_URL: redis.url };
  const a = await start(t, { env });
  const b = await start(t, { env });
  t.is(await status(a), 200);
  t.is(await status(b), 200);
  await eventually(async () => (await metric(b, "keygate_usage_redis_up")) === 1, "b syncs");

  await redis.kill();
  await eventually(async () => (await metric(a, "keygate_budget_degraded")) === 1, "a degrades");
  const readyz = await fetch(`${a.adminUrl}/readyz`);
  t.is(readyz.status, 200, "degraded budgets do not make keygate unready");
  const details = (await readyz.json()) as { budgets: { degraded: boolean; reason: string } };
  t.true(details.budgets.degraded);
  t.truthy(details.budgets.reason);
  t.is(await metric(a, "keygate_usage_redis_up"), 0);

  // a enforces on its own count while Redis is away; b cannot see a's usage yet.
  a.running.usageSink.record("metered", usage(1200, 0), Date.now());
  t.is(await status(a), 429);
  t.is(await status(b), 200);
  t.is(await status(a, FREE), 200, "every other client is served as usual");
  t.true((await metric(a, "keygate_budget_pending_increments")) >= 2);

  await redis.restart();
  await eventually(async () => (await status(b)) === 429, "b sees a's reconciled usage");
  await eventually(
    async () => (await metric(a, "keygate_budget_pending_increments")) === 0,
    "a's queue is empty",
  );
  t.like(await getJson(`${a.adminUrl}/readyz`), { budgets: { degraded: false } });
});

test("dry-run counts a spent budget as would_deny and lets the client through with its key", async (t) => {
  const kg = await start(t, { env: { KEYGATE_MODE: "dry-run" } });
  kg.running.usageSink.record("metered", usage(5000, 0), Date.now());
  const response = await kg.client.check(METERED);
  t.is(response.status.code, 0);
  const wouldDeny = response.dynamic_metadata?.fields.would_deny as { stringValue?: string };
  t.is(wouldDeny?.stringValue, "QUOTA_EXCEEDED");
  t.is(setHeaders(response)["x-client-id"], "metered", "passed as the client it is");
});

test("a Redis password never reaches keygate's log, /readyz or /keystore", async (t) => {
  const password = "redis-pass-never-logged-7";
  const redis = await startRedis({ password });
  t.teardown(() => redis.stop());
  const kg = await start(t, { env: { KEYGATE_USAGE_REDIS_URL: redis.url } });
  t.is(await status(kg), 200);
  await eventually(async () => (await metric(kg, "keygate_usage_redis_up")) === 1, "Redis is up");
  await redis.kill();
  await eventually(async () => (await metric(kg, "keygate_budget_degraded")) === 1, "degraded");
  const readyz = await (await fetch(`${kg.adminUrl}/readyz`)).text();
  const keystore = await (await fetch(`${kg.adminUrl}/keystore`)).text();
  t.regex(keystore, new RegExp(`"target":"redis://127.0.0.1:${redis.port}/0"`));
  for (const [where, text] of [
    ["log", kg.logs.join("\n")],
    ["/readyz", readyz],
    ["/keystore", keystore],
  ] as const)
    t.false(text.includes(password), where);
});
