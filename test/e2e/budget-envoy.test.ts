/**
 * A budget spent by a streamed response, through the real Envoy running envoy/envoy.yaml:
 * the provider stub streams an Anthropic SSE completion (50 tokens of usage), keygate's
 * ext_proc reads the usage as it streams by, and the next request from that client is
 * refused by Check with 429 QUOTA_EXCEEDED (retry-after, the JSON denial body), while
 * the streamed request itself completed (post-paid). keygate runs as `keygate serve`
 * with KEYGATE_USAGE_REDIS_URL on a real redis-server, and a second `keygate serve`
 * sharing that Redis refuses the client too: one budget across replicas.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { Ajv } from "ajv";
import anyTest, { type TestFn } from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import { readSchema } from "../../server/paths.js";
import { checkRequest } from "../helpers/check-request.js";
import { registerTopologyTeardown, type TopologyContext } from "../helpers/e2e-topology.js";
import { renderEnvoyConfig, requireEnvoy, startEnvoy } from "../helpers/envoy.js";
import { createCheckClient } from "../helpers/grpc-client.js";
import { type KeygateProcess, startKeygate } from "../helpers/keygate-process.js";
import {
  ANTHROPIC_SSE_EVENTS,
  type ProviderStub,
  startProviderStub,
} from "../helpers/provider-stub.js";
import { type RunningRedis, startRedis } from "../helpers/redis-server.js";

const TOKEN = "kg-e2e-budget-metered-token";
const UPSTREAM_KEY = "sk-ant-upstream-held-for-metered-0011";

interface Context extends TopologyContext {
  provider: ProviderStub;
  redis: RunningRedis;
  replica: KeygateProcess;
}

const test = anyTest as TestFn<Context>;
const validateBody = new Ajv().compile(readSchema("denial.schema.json"));

test.before(async (t) => {
  requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-budget-e2e-"));
  t.context.dir = dir;
  const keystore = path.join(dir, "keystore.yaml");
  // 40 tokens a day: the streamed completion reports 25 + 15 + 3 + 7 = 50.
  writeFileSync(
    keystore,
    `version: 1
clients:
  - id: metered
    tokens:
      - sha256: ${hashToken(TOKEN)}
    upstream_key: env:KG_TEST_UPSTREAM
    budget: {tokens: 40, per: day}
`,
  );
  t.context.redis = await startRedis();
  t.context.provider = await startProviderStub();
  const env = { KG_TEST_UPSTREAM: UPSTREAM_KEY, KEYGATE_USAGE_REDIS_URL: t.context.redis.url };
  t.context.keygate = await startKeygate({ keystore, db: path.join(dir, "a.db"), env });
  t.context.replica = await startKeygate({ keystore, db: path.join(dir, "b.db"), env });
  t.context.envoy = await startEnvoy({
    config: renderEnvoyConfig({
      listenPort: 0,
      adminPort: 0,
      keygatePort: t.context.keygate.grpcPort,
      upstreamPort: t.context.provider.port,
    }),
  });
});

registerTopologyTeardown(test);
test.after.always(async (t) => {
  await t.context.replica?.stop();
  await t.context.provider?.close();
  await t.context.redis?.stop();
});

interface Received {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(url: string, play: string): Promise<Received> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/v1/messages`,
      {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "text/event-stream",
          "x-play": play,
          authorization: `Bearer ${TOKEN}`,
        },
      },
      (res) => {
        let body = "";
        res.on("data", (chunk: Buffer) => {
          body += chunk.toString("utf8");
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 16, stream: true }));
  });
}

async function until(predicate: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test.serial(
  "a budget spent by a streamed response refuses the next request with 429 QUOTA_EXCEEDED",
  async (t) => {
    const { envoy, keygate, replica } = t.context;
    if (envoy === undefined || keygate === undefined) throw new Error("topology not started");
    // The replica has seen a Check for the client, so it fetches the client's shared total.
    const replicaClient = createCheckClient(`127.0.0.1:${replica.grpcPort}`);
    t.teardown(() => replicaClient.close());
    const check = checkRequest({
      json: { model: "m" },
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    t.is((await replicaClient.check(check)).status.code, 0);

    // Under budget (nothing spent): the completion streams through whole, crossing the budget.
    const streamed = await send(envoy.url, "anthropic-sse");
    t.is(streamed.status, 200);
    t.is(
      streamed.body,
      ANTHROPIC_SSE_EVENTS.join(""),
      "the request that crosses the budget completes",
    );
    await until(async () => {
      const admin = `http://127.0.0.1:${keygate.adminPort}/keystore`;
      const status = (await (await fetch(admin)).json()) as {
        budgets: { clients: { id: string; spent: number }[] };
      };
      return status.budgets.clients.some((client) => client.id === "metered" && client.spent >= 50);
    }, "keygate counted the stream's 50 tokens");

    const refused = await send(envoy.url, "anthropic-sse");
    t.is(refused.status, 429);
    t.true(String(refused.headers["content-type"]).startsWith("application/json"));
    const body = JSON.parse(refused.body) as Record<string, unknown>;
    t.true(validateBody(body), JSON.stringify(validateBody.errors));
    t.like(body, { type: "QUOTA_EXCEEDED", request_id: refused.headers["x-request-id"] });
    const untilMidnight =
      ((Math.floor(Date.now() / 86_400_000) + 1) * 86_400_000 - Date.now()) / 1000;
    t.true(
      Math.abs(Number(body.retry_after) - untilMidnight) <= 5,
      `retry_after ${body.retry_after}`,
    );
    t.is(refused.headers["retry-after"], String(body.retry_after));
    t.false(refused.body.includes(UPSTREAM_KEY));
    t.is(
      t.context.provider.played.filter((p) => p.script === "anthropic-sse").length,
      1,
      "the refused request never reached the provider",
    );

    // The second replica shares the count through Redis and refuses the client too.
    await until(
      async () => (await replicaClient.check(check)).denied_response?.status.code === 429,
      "the replica sees the shared total",
    );
    t.pass();
  },
);
