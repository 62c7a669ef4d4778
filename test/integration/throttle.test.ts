/**
 * Brute-force throttling through the real server over gRPC: after KEYGATE_THROTTLE_FAILURES
 * failed credentials from one source, that source's next credential (even a valid one) is
 * answered 429 RATE_LIMITED without a lookup, other sources are unaffected, the metric and
 * one warning say so, and the source recovers when its window closes.
 */
import test from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import { checkRequest } from "../helpers/check-request.js";
import { denialOf, setHeaders } from "../helpers/grpc-client.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";

const VALID = "kg-test-throttle-valid-token";
const SCOPED = "kg-test-throttle-scoped-token";
const UPSTREAM = "sk-ant-upstream-for-throttle";
const KEYSTORE = `version: 1
clients:
  - id: lightning-prod
    tokens:
      - sha256: ${hashToken(VALID)}
    upstream_key: env:KG_THROTTLE_UPSTREAM
  - id: scoped
    tokens:
      - sha256: ${hashToken(SCOPED)}
    routes: [/services/]
`;
const FAILURES = 3;
const WINDOW_MS = 1000;

let kg: TestKeygate;
let behindProxy: TestKeygate;

test.before(async () => {
  const env = {
    KG_THROTTLE_UPSTREAM: UPSTREAM,
    KEYGATE_THROTTLE_FAILURES: String(FAILURES),
    KEYGATE_THROTTLE_WINDOW_S: String(WINDOW_MS / 1000),
  };
  [kg, behindProxy] = await Promise.all([
    startTestKeygate({ keystore: KEYSTORE, env }),
    startTestKeygate({ keystore: KEYSTORE, env: { ...env, KEYGATE_XFF_TRUSTED_HOPS: "1" } }),
  ]);
});
test.after.always(async () => {
  await Promise.all([kg?.stop(), behindProxy?.stop()]);
});

/**
 * curl -H 'Authorization: Bearer <token>' https://apollo/v1/messages, arriving at Envoy
 * from `peer` (attributes.source), optionally through proxies that set x-forwarded-for.
 */
function fromPeer(
  peer: string,
  token: string,
  options: { mode?: string; xff?: string; requestId?: string } = {},
): Record<string, unknown> {
  const request = checkRequest({
    json: { model: "claude-sonnet-4", messages: [] },
    headers: {
      authorization: `Bearer ${token}`,
      "x-request-id": options.requestId ?? `req-${peer}-${Math.random()}`,
      ...(options.xff === undefined ? {} : { "x-forwarded-for": options.xff }),
    },
    contextExtensions: options.mode === undefined ? {} : { keygate_mode: options.mode },
  });
  (request.attributes as Record<string, unknown>).source = {
    address: { socket_address: { address: peer, port_value: 51_000 } },
  };
  return request;
}

async function metric(target: TestKeygate, name: string): Promise<number> {
  const text = await (await fetch(`${target.adminUrl}/metrics`)).text();
  const match = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return match?.[1] === undefined ? Number.NaN : Number(match[1]);
}

function logLines(target: TestKeygate): Record<string, unknown>[] {
  return target.logs.map((line) => JSON.parse(line) as Record<string, unknown>);
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test.serial(
  "after 3 unknown tokens from one address, even a valid token from it gets 429 until the window closes",
  async (t) => {
    const attacker = "203.0.113.9";
    const before = await metric(kg, "keygate_throttled_checks_total");
    // The window opens at the first failure: on the server, no later than its answer here.
    let firstFailureAnswered = 0;
    for (let i = 0; i < FAILURES; i++) {
      const response = await kg.client.check(fromPeer(attacker, `kg-guess-${i}`));
      t.is(denialOf(response).type, "UNAUTHORIZED", `guess ${i}`);
      if (i === 0) firstFailureAnswered = Date.now();
    }

    const refused = await kg.client.check(
      fromPeer(attacker, VALID, { requestId: "req-throttled" }),
    );
    t.like(denialOf(refused), { type: "RATE_LIMITED", status: 429, request_id: "req-throttled" });
    t.is(
      refused.denied_response?.headers.find((h) => h.header.key === "content-type")?.header.value,
      "application/json",
    );
    t.is(await metric(kg, "keygate_throttled_checks_total"), before + 1);
    t.true((await metric(kg, "keygate_throttle_tracked_sources")) >= 1);

    // Refused without a lookup: the decision's log line carries no digest prefix.
    const decisionLine = logLines(kg).find((line) => line.request_id === "req-throttled");
    t.like(decisionLine, { reason: "too_many_failures", type: "RATE_LIMITED" });
    t.false(decisionLine !== undefined && "digest_prefix" in decisionLine);

    // One warning names the source, never a credential.
    const warnings = logLines(kg).filter((line) => line.source === attacker);
    t.is(warnings.length, 1);
    t.like(warnings[0], { level: "warn", failures: FAILURES, window_s: 1 });
    t.false(kg.logs.some((line) => line.includes("kg-guess-") || line.includes(VALID)));

    // Another address is unaffected.
    const bystander = await kg.client.check(fromPeer("203.0.113.10", VALID));
    t.is(setHeaders(bystander)["x-client-id"], "lightning-prod");

    // After the window, the valid token works again.
    await delay(Math.max(0, firstFailureAnswered + WINDOW_MS + 10 - Date.now()));
    const recovered = await kg.client.check(fromPeer(attacker, VALID));
    t.is(recovered.status.code, 0);
    t.deepEqual(setHeaders(recovered), { "x-api-key": UPSTREAM, "x-client-id": "lightning-prod" });
  },
);

test.serial("a missing credential or a refused route never counts as a failure", async (t) => {
  const peer = "203.0.113.20";
  for (let i = 0; i < FAILURES + 2; i++) {
    const request = checkRequest({ json: {} });
    (request.attributes as Record<string, unknown>).source = {
      address: { socket_address: { address: peer, port_value: 51_000 } },
    };
    t.is(denialOf(await kg.client.check(request)).type, "UNAUTHORIZED");
    // A working token on a path outside its routes: 403, not a guess.
    t.is(denialOf(await kg.client.check(fromPeer(peer, SCOPED))).type, "FORBIDDEN");
  }
  t.is(setHeaders(await kg.client.check(fromPeer(peer, VALID)))["x-client-id"], "lightning-prod");
});

test.serial(
  "dry-run: would-deny failures count, and the throttled source's token is passed unchanged, never swapped",
  async (t) => {
    const peer = "203.0.113.30";
    for (let i = 0; i < FAILURES; i++) {
      const response = await kg.client.check(
        fromPeer(peer, `kg-guess-dry-${i}`, { mode: "dry-run" }),
      );
      t.is(response.status.code, 0);
    }
    const response = await kg.client.check(
      fromPeer(peer, VALID, { mode: "dry-run", requestId: "req-dry-throttled" }),
    );
    t.is(response.status.code, 0);
    t.is(setHeaders(response)["x-api-key"], undefined);
    t.like(
      logLines(kg).find((line) => line.request_id === "req-dry-throttled"),
      { result: "would_deny", reason: "too_many_failures" },
    );
  },
);

test.serial(
  "behind one trusted proxy: the client is the x-forwarded-for entry left of the proxy's, spoofed entries change nothing",
  async (t) => {
    const proxy = "10.0.0.5";
    // The load balancer appended the client (198.51.100.7); Envoy appended the balancer.
    const client = "198.51.100.7";
    for (let i = 0; i < FAILURES; i++) {
      // Each guess claims a fresh leftmost address: it must not buy a fresh count.
      const xff = `192.0.2.${i}, ${client}, ${proxy}`;
      await behindProxy.client.check(fromPeer(proxy, `kg-guess-xff-${i}`, { xff }));
    }
    const refused = await behindProxy.client.check(
      fromPeer(proxy, VALID, { xff: `192.0.2.99, ${client}, ${proxy}` }),
    );
    t.is(denialOf(refused).type, "RATE_LIMITED");
    // Another client behind the same balancer is unaffected.
    const other = await behindProxy.client.check(
      fromPeer(proxy, VALID, { xff: `198.51.100.8, ${proxy}` }),
    );
    t.is(setHeaders(other)["x-client-id"], "lightning-prod");
  },
);
