/** KEYGATE_USAGE_REDIS_URL: optional, checked once at start-up, never echoed (it may hold a password). */
import test from "ava";
import { ConfigError, loadConfig } from "../../server/config.js";

test("without KEYGATE_USAGE_REDIS_URL budgets count locally", (t) => {
  t.is(loadConfig({}).usageRedisUrl, null);
});

test("a redis:// or rediss:// URL is taken as given", (t) => {
  for (const url of [
    "redis://redis:6379/0",
    "rediss://:pw@cache.internal:6380",
    "redis://127.0.0.1",
  ])
    t.is(loadConfig({ KEYGATE_USAGE_REDIS_URL: url }).usageRedisUrl, url);
});

for (const bad of [
  "http://:hunter2-pass@redis:6379",
  "redis://",
  "hunter2-pass@redis",
  "redis:// :hunter2-pass@x",
]) {
  test(`a bad URL names the variable and never echoes it: ${bad.replace("hunter2-pass", "…")}`, (t) => {
    const error = t.throws(() => loadConfig({ KEYGATE_USAGE_REDIS_URL: bad }), {
      instanceOf: ConfigError,
    });
    t.regex(
      error?.message ?? "",
      /^KEYGATE_USAGE_REDIS_URL: must be a redis:\/\/ or rediss:\/\/ URL/,
    );
    t.false(error?.message.includes("hunter2-pass"));
  });
}
