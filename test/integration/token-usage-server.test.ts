/**
 * Token usage through the running server: what the response path hands its sink shows in
 * /metrics at once, lands in SQLite by shutdown, and is what `keygate usage` and
 * `keygate keystore list` then report.
 */
import test from "ava";
import type { ListedClient } from "../../server/cli/list-output.js";
import type { UsageReport } from "../../server/cli/usage-report-output.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { runKeygate } from "../cli/run-keygate.js";
import { startTestKeygate } from "../helpers/keygate-in-process.js";

const KEYSTORE = `version: 1
clients:
  - id: alpha
    tokens: [{ sha256: ${hashToken("t-alpha")} }]
  - id: idle
    tokens: [{ sha256: ${hashToken("t-idle")} }]
`;

test("usage recorded by the server reaches /metrics, SQLite at stop, keygate usage and keystore list", async (t) => {
  const kg = await startTestKeygate({ keystore: KEYSTORE });
  t.teardown(() => kg.stop());
  const now = Date.now();
  for (let i = 0; i < 3; i++) {
    kg.running.usageSink.record(
      "alpha",
      {
        model: "claude-sonnet-4",
        inputTokens: 100,
        outputTokens: 40,
        cacheReadTokens: 10,
        cacheWriteTokens: 0,
      },
      now,
    );
  }
  const metrics = await (await fetch(`${kg.adminUrl}/metrics`)).text();
  t.regex(metrics, /keygate_usage_responses_total\{client="alpha",model="claude-sonnet-4"\} 3/);
  t.regex(
    metrics,
    /keygate_usage_tokens_total\{client="alpha",model="claude-sonnet-4",kind="output"\} 120/,
  );
  await kg.stop();

  const env = { KEYGATE_KEYSTORE: kg.keystorePath, KEYGATE_DB: kg.dbPath };
  const usage = await runKeygate(["usage", "--json"], { env });
  t.is(usage.code, 0, usage.stderr);
  const report = JSON.parse(usage.stdout) as UsageReport;
  t.deepEqual(report.usage, [
    {
      client: "alpha",
      model: "claude-sonnet-4",
      requests: 3,
      input_tokens: 300,
      output_tokens: 120,
      cache_read_tokens: 30,
      cache_write_tokens: 0,
      total_tokens: 450,
    },
  ]);

  const list = await runKeygate(["keystore", "list", "--json"], { env });
  t.is(list.code, 0, list.stderr);
  const clients = (JSON.parse(list.stdout) as { clients: ListedClient[] }).clients;
  t.like(
    clients.find((client) => client.id === "alpha"),
    {
      tokens_today: 450,
      tokens_this_month: 450,
    },
  );
  t.like(
    clients.find((client) => client.id === "idle"),
    {
      tokens_today: 0,
      tokens_this_month: 0,
    },
  );
});
