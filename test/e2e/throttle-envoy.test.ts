/**
 * Brute-force throttling through the real Envoy running envoy/envoy.yaml: pins what Envoy
 * reports as the request's source and which x-forwarded-for entry a trust depth picks, and
 * that the 429 RATE_LIMITED JSON body reaches the client. Envoy reports its TCP peer in
 * attributes.source (use_remote_address only changes x-forwarded-for, to which it appends
 * the peer, or its own address for a loopback peer), so at trust depth 0 a client-sent
 * x-forwarded-for changes nothing, and at depth 1 the entry left of Envoy's names the client.
 *
 * What is under test is Envoy's side, so keygate runs in-process from the sources (as in the
 * integration tests) rather than from a build: two of them, one per trust depth, each
 * behind an Envoy of its own.
 */
import { randomUUID } from "node:crypto";
import anyTest, { type ExecutionContext, type TestFn } from "ava";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import {
  type EnvoyProcess,
  renderEnvoyConfig,
  requireEnvoy,
  startEnvoy,
} from "../helpers/envoy.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";
import { type StubUpstream, startStubUpstream } from "../helpers/stub-upstream.js";

const FAILURES = 3;
const UPSTREAM_KEY = "sk-ant-upstream-behind-throttle-0001";
const CASE_HEADER = "x-e2e-case";

interface Topology {
  readonly keygate: TestKeygate;
  readonly envoy: EnvoyProcess;
}

interface Context {
  token: string;
  upstream: StubUpstream;
  /** KEYGATE_XFF_TRUSTED_HOPS=0: the source is Envoy's peer. */
  direct: Topology;
  /** KEYGATE_XFF_TRUSTED_HOPS=1: one load balancer in front of Envoy. */
  behindProxy: Topology;
  envoys: EnvoyProcess[];
  keygates: TestKeygate[];
}

const test = anyTest as TestFn<Context>;

test.before(async (t) => {
  requireEnvoy(t);
  t.context.envoys = [];
  t.context.keygates = [];
  t.context.token = mintToken();
  t.context.upstream = await startStubUpstream();
  const keystore = `version: 1
clients:
  - id: throttled-e2e
    tokens:
      - sha256: ${hashToken(t.context.token)}
    upstream_key: env:KG_THROTTLE_E2E_UPSTREAM
`;
  const start = async (trustedHops: number): Promise<Topology> => {
    const keygate = await startTestKeygate({
      keystore,
      env: {
        KG_THROTTLE_E2E_UPSTREAM: UPSTREAM_KEY,
        KEYGATE_THROTTLE_FAILURES: String(FAILURES),
        KEYGATE_XFF_TRUSTED_HOPS: String(trustedHops),
      },
    });
    t.context.keygates.push(keygate);
    const envoy = await startEnvoy({
      config: renderEnvoyConfig({
        listenPort: 0,
        adminPort: 0,
        keygatePort: keygate.running.grpcPort,
        upstreamPort: t.context.upstream.port,
      }),
    });
    t.context.envoys.push(envoy);
    return { keygate, envoy };
  };
  t.context.direct = await start(0);
  t.context.behindProxy = await start(1);
});

test.afterEach.always((t) => {
  if (t.passed) return;
  for (const envoy of t.context.envoys ?? []) t.log(envoy.output().slice(-10_000));
  for (const keygate of t.context.keygates ?? []) t.log(keygate.logs.slice(-40).join("\n"));
});

test.after.always(async (t) => {
  await Promise.all((t.context.envoys ?? []).map((envoy) => envoy.stop()));
  await Promise.all((t.context.keygates ?? []).map((keygate) => keygate.stop()));
  await t.context.upstream?.close();
});

interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly reachedUpstream: boolean;
}

/** curl -X POST -H 'Authorization: Bearer <token>' [-H 'X-Forwarded-For: <xff>'] <envoy>/v1/messages */
async function send(
  t: ExecutionContext<Context>,
  topology: Topology,
  token: string,
  xff?: string,
): Promise<Reply> {
  const marker = randomUUID();
  const response = await fetch(`${topology.envoy.url}/v1/messages`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      [CASE_HEADER]: marker,
      ...(xff === undefined ? {} : { "x-forwarded-for": xff }),
    },
    body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [] }),
  });
  return {
    status: response.status,
    headers: response.headers,
    text: await response.text(),
    reachedUpstream: t.context.upstream.requests.some((r) => r.headers[CASE_HEADER] === marker),
  };
}

function assertThrottled(t: ExecutionContext<Context>, reply: Reply): void {
  t.is(reply.status, 429, reply.text);
  t.regex(reply.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(reply.text) as Record<string, unknown>;
  t.is(body.type, "RATE_LIMITED");
  t.is(body.request_id, reply.headers.get("x-request-id"));
  t.false(reply.reachedUpstream, "a throttled request never reaches the upstream");
}

/** The sources keygate warned about, in order. */
function throttledSources(keygate: TestKeygate): unknown[] {
  return keygate.logs
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.level === "warn" && "source" in line)
    .map((line) => line.source);
}

test.serial(
  "trust depth 0: the source is Envoy's TCP peer, whatever x-forwarded-for the client sends",
  async (t) => {
    const { direct } = t.context;
    for (let i = 0; i < FAILURES; i++) {
      // Each guess claims another origin; none of them is believed.
      const reply = await send(t, direct, mintToken(), `198.51.100.${i}`);
      t.is(reply.status, 401, reply.text);
    }
    assertThrottled(t, await send(t, direct, t.context.token, "198.51.100.200"));
    t.deepEqual(throttledSources(direct.keygate), ["127.0.0.1"]);
  },
);

test.serial(
  "trust depth 1: the entry the load balancer appended names the client; Envoy's own entry is skipped, spoofed ones ignored",
  async (t) => {
    const { behindProxy } = t.context;
    const client = "203.0.113.9";
    for (let i = 0; i < FAILURES; i++) {
      // What a load balancer sends on: whatever the client wrote, then the client's address.
      const reply = await send(t, behindProxy, mintToken(), `6.6.6.${i}, ${client}`);
      t.is(reply.status, 401, reply.text);
    }
    assertThrottled(t, await send(t, behindProxy, t.context.token, client));
    t.deepEqual(throttledSources(behindProxy.keygate), [client]);

    // Another client behind the same balancer (and the same Envoy peer) is unaffected.
    const other = await send(t, behindProxy, t.context.token, "203.0.113.10");
    t.is(other.status, 200, other.text);
    t.true(other.reachedUpstream);
    const seen = t.context.upstream.requests.at(-1);
    t.is(seen?.headers["x-api-key"], UPSTREAM_KEY);
  },
);
