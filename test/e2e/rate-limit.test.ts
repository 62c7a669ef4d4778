/**
 * The per-client rate limit of envoy/envoy.yaml, through the real Envoy and keygate: the
 * shipped config rendered with a tight bucket (3 requests, refilled hourly, so nothing
 * refills during the test) instead of the generous default. Each test uses clients of
 * its own, so the buckets one test drains never decide another; the tests are serial
 * anyway, since they share one Envoy.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import anyTest, { type ExecutionContext, type TestFn } from "ava";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { DENIAL_TYPES } from "../../server/errors.js";
import {
  accessLogLine,
  registerTopologyTeardown,
  startKeygateBehindEnvoy,
} from "../helpers/e2e-topology.js";
import { type EnvoyProcess, requireEnvoy, type TokenBucket } from "../helpers/envoy.js";
import type { KeygateProcess } from "../helpers/keygate-process.js";
import { type StubUpstream, startStubUpstream } from "../helpers/stub-upstream.js";

const BUCKET: TokenBucket = { maxTokens: 3, tokensPerFill: 3, fillInterval: "3600s" };
const CLIENTS = ["drained", "first", "second", "spoofer", "denied-first"] as const;
type ClientId = (typeof CLIENTS)[number];
/** Allowed only under /v1/, so a request elsewhere is keygate's 403 for a known client. */
const ROUTE_LIMITED: ClientId = "denied-first";
const BYO_KEY = "sk-ant-api03-callers-own-key-0003";
const CASE_HEADER = "x-e2e-case";

interface Context {
  dir: string;
  tokens: Record<ClientId, string>;
  upstream: StubUpstream;
  keygate: KeygateProcess;
  envoy: EnvoyProcess;
}

const test = anyTest as TestFn<Context>;

test.before(async (t) => {
  requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-rate-limit-"));
  const tokens = Object.fromEntries(CLIENTS.map((id) => [id, mintToken()])) as Record<
    ClientId,
    string
  >;
  const keystore = path.join(dir, "keystore.yaml");
  const entries = CLIENTS.map(
    (id) =>
      `  - id: ${id}\n    tokens:\n      - sha256: ${hashToken(tokens[id])}\n` +
      (id === ROUTE_LIMITED ? "    routes: [/v1/]\n" : ""),
  );
  writeFileSync(keystore, `version: 1\nclients:\n${entries.join("")}`, { mode: 0o600 });
  t.context.dir = dir;
  t.context.tokens = tokens;
  t.context.upstream = await startStubUpstream();
  await startKeygateBehindEnvoy(t.context, {
    dir,
    keystore,
    upstreamPort: t.context.upstream.port,
    envoy: { perClientRateLimit: BUCKET },
  });
});

registerTopologyTeardown(test);

interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly reachedUpstream: boolean;
}

async function send(
  t: ExecutionContext<Context>,
  urlPath: string,
  headers: Record<string, string>,
): Promise<Reply> {
  const marker = randomUUID();
  const response = await fetch(`${t.context.envoy.url}${urlPath}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json", [CASE_HEADER]: marker },
    body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [] }),
  });
  return {
    status: response.status,
    headers: response.headers,
    text: await response.text(),
    reachedUpstream: t.context.upstream.requests.some((r) => r.headers[CASE_HEADER] === marker),
  };
}

function asClient(t: ExecutionContext<Context>, id: ClientId, extra: Record<string, string> = {}) {
  return send(t, "/v1/messages", { authorization: `Bearer ${t.context.tokens[id]}`, ...extra });
}

/** Sends until the bucket is empty, asserting that each of those requests got through. */
async function drain(t: ExecutionContext<Context>, id: ClientId): Promise<void> {
  for (let i = 1; i <= BUCKET.maxTokens; i++) {
    const reply = await asClient(t, id);
    t.is(reply.status, 200, `request ${i} of ${BUCKET.maxTokens} for ${id}: ${reply.text}`);
  }
}

function assertRateLimited(t: ExecutionContext<Context>, reply: Reply): void {
  t.is(reply.status, 429, reply.text);
  t.regex(reply.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(reply.text) as Record<string, unknown>;
  t.deepEqual(Object.keys(body).sort(), ["message", "request_id", "type"]);
  t.is(body.type, "RATE_LIMITED");
  t.is(body.request_id, reply.headers.get("x-request-id"));
  t.is(reply.headers.get("x-ratelimit-remaining"), "0");
  t.false(reply.reachedUpstream, "a limited request never reaches the upstream");
}

test.serial(
  "a client is refused with a RATE_LIMITED JSON 429 once its bucket is empty",
  async (t) => {
    await drain(t, "drained");
    const reply = await asClient(t, "drained");
    assertRateLimited(t, reply);

    const line = await accessLogLine(t.context.envoy, reply.headers.get("x-request-id") ?? "");
    t.is(line.status, 429);
    t.is(line.response_flags, "RL");
    t.is(line.client_id, "drained", "the access log names the limited client");
  },
);

test.serial("another client keeps a bucket of its own", async (t) => {
  await drain(t, "first");
  assertRateLimited(t, await asClient(t, "first"));
  // "second" has sent nothing yet: its whole bucket is still there.
  await drain(t, "second");
  assertRateLimited(t, await asClient(t, "second"));
});

test.serial(
  "a client-sent x-client-id neither escapes a drained bucket nor spends another's",
  async (t) => {
    await drain(t, "spoofer");
    // keygate overwrites the header with the authenticated id before the limit runs.
    assertRateLimited(t, await asClient(t, "spoofer", { "x-client-id": "someone-else" }));
    // Without a keygate client the header is removed: no descriptor, no limit.
    for (let i = 0; i <= BUCKET.maxTokens; i++) {
      const reply = await send(t, "/byo/v1/messages", {
        "x-api-key": BYO_KEY,
        "x-client-id": "spoofer",
      });
      t.is(reply.status, 200, reply.text);
      t.true(reply.reachedUpstream);
    }
  },
);

test.serial("requests without a client id are not rate limited", async (t) => {
  for (let i = 0; i <= BUCKET.maxTokens * 2; i++) {
    const reply = await send(t, "/byo/v1/messages", { "x-api-key": BYO_KEY });
    t.is(reply.status, 200, `bring-your-own request ${i + 1}: ${reply.text}`);
  }
});

test.serial("requests keygate denies are refused first and spend no tokens", async (t) => {
  for (let i = 0; i <= BUCKET.maxTokens; i++) {
    const outsideRoutes = await send(t, "/v2/messages", {
      authorization: `Bearer ${t.context.tokens[ROUTE_LIMITED]}`,
    });
    t.is(outsideRoutes.status, DENIAL_TYPES.FORBIDDEN.httpStatus, outsideRoutes.text);
    t.is((JSON.parse(outsideRoutes.text) as { type: string }).type, "FORBIDDEN");
    const unknown = await send(t, "/v1/messages", { authorization: `Bearer ${mintToken()}` });
    t.is(unknown.status, DENIAL_TYPES.UNAUTHORIZED.httpStatus, unknown.text);
  }
  // More 403s than the bucket holds, yet the client's bucket is still full.
  await drain(t, ROUTE_LIMITED);
  assertRateLimited(t, await asClient(t, ROUTE_LIMITED));
});
