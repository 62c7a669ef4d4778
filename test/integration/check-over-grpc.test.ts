/**
 * The real server on free ports with a temp keystore.yaml and temp SQLite, driven by
 * CheckRequest fixtures over real gRPC. Each fixture notes the curl that Envoy would
 * turn into it.
 */
import test from "ava";
import { encryptSecret, generateMasterKey, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { basic, checkRequest } from "../helpers/check-request.js";
import { denialOf, setHeaders } from "../helpers/grpc-client.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";

const MASTER = generateMasterKey("k1");
const OTHER_MASTER = generateMasterKey("k2");
const KEY = parseMasterKeys(MASTER).get("k1") as Buffer;
const UNLOADED = parseMasterKeys(OTHER_MASTER).get("k2") as Buffer;

const TOKENS = {
  prod: "kg-test-prod-token",
  vault: "kg-test-vault-token",
  scoped: "kg-test-scoped-token",
  internal: "kg-test-internal-token",
  disabled: "kg-test-disabled-token",
  expired: "kg-test-expired-token",
  noKey: "kg-test-nokey-token",
  lostKey: "kg-test-lostkey-token",
};
const UPSTREAM = "sk-ant-upstream-held-for-prod";
const VAULTED = "sk-ant-upstream-encrypted";

const KEYSTORE = `version: 1
defaults:
  upstream_key: env:KG_IT_DEFAULT_KEY
clients:
  - id: lightning-prod
    name: Lightning production
    tokens:
      - sha256: ${hashToken(TOKENS.prod)}
    upstream_key: env:KG_IT_UPSTREAM
  - id: vault
    tokens:
      - sha256: ${hashToken(TOKENS.vault).toUpperCase()}
    upstream_key: ${encryptSecret(VAULTED, "vault", "k1", KEY)}
  - id: scoped
    tokens:
      - sha256: ${hashToken(TOKENS.scoped)}
    routes: [/services/]
    models: [claude-sonnet-*]
  - id: batch-worker
    kind: internal
    tokens:
      - sha256: ${hashToken(TOKENS.internal)}
  - id: retired
    disabled: true
    tokens:
      - sha256: ${hashToken(TOKENS.disabled)}
  - id: lapsed
    tokens:
      - sha256: ${hashToken(TOKENS.expired)}
        expires: 2020-01-01T00:00:00Z
  - id: lost-key
    tokens:
      - sha256: ${hashToken(TOKENS.lostKey)}
    upstream_key: ${encryptSecret("sk-ant-unreachable", "lost-key", "k2", UNLOADED)}
`;

let kg: TestKeygate;

test.before(async () => {
  kg = await startTestKeygate({
    keystore: KEYSTORE,
    env: {
      KEYGATE_MASTER_KEY: MASTER,
      KG_IT_UPSTREAM: UPSTREAM,
      KG_IT_DEFAULT_KEY: "sk-ant-default-key",
    },
  });
});
test.after.always(async () => {
  await kg?.stop();
});

const chat = {
  model: "claude-sonnet-4",
  max_tokens: 64,
  messages: [{ role: "user", content: "hi" }],
};

test("curl -H 'Authorization: Bearer <prod>' -d '{...}' → swap: upstream key and client id set, credential removed", async (t) => {
  const response = await kg.client.check(
    checkRequest({ json: chat, headers: { authorization: `Bearer ${TOKENS.prod}` } }),
  );
  t.is(response.status.code, 0);
  t.deepEqual(setHeaders(response), { "x-api-key": UPSTREAM, "x-client-id": "lightning-prod" });
  t.deepEqual(response.ok_response?.headers_to_remove, ["authorization"]);
  t.like(response.dynamic_metadata?.fields, {
    client_id: { stringValue: "lightning-prod" },
    auth_mode: { stringValue: "known" },
    keystore_generation: { numberValue: kg.running.keystore.generationId ?? -1 },
  });
});

test('curl -d \'{"api_key":"<prod>",...}\' → the body credential is swapped the same way', async (t) => {
  const response = await kg.client.check(checkRequest({ json: { ...chat, api_key: TOKENS.prod } }));
  t.deepEqual(setHeaders(response), { "x-api-key": UPSTREAM, "x-client-id": "lightning-prod" });
});

test("curl -H 'x-api-key: <prod>' → x-api-key is overwritten with the upstream key", async (t) => {
  const response = await kg.client.check(
    checkRequest({ json: chat, headers: { "x-api-key": TOKENS.prod }, rawHeaders: true }),
  );
  t.deepEqual(setHeaders(response), { "x-api-key": UPSTREAM, "x-client-id": "lightning-prod" });
  // Only the other credential header is removed; x-api-key is overwritten, not removed.
  t.deepEqual(response.ok_response?.headers_to_remove ?? [], ["authorization"]);
});

test("curl -u 'lightning:<prod>' → Basic works, the password is the token", async (t) => {
  const response = await kg.client.check(
    checkRequest({ json: chat, headers: { authorization: basic("lightning", TOKENS.prod) } }),
  );
  t.is(setHeaders(response)["x-client-id"], "lightning-prod");
});

test("an enc: upstream key is decrypted with the master key and the client id", async (t) => {
  const response = await kg.client.check(
    checkRequest({ json: chat, headers: { authorization: `Bearer ${TOKENS.vault}` } }),
  );
  t.deepEqual(setHeaders(response), { "x-api-key": VAULTED, "x-client-id": "vault" });
});

test("a client without its own key gets defaults.upstream_key", async (t) => {
  const response = await kg.client.check(
    checkRequest({
      path: "/services/chat",
      json: chat,
      headers: { authorization: `Bearer ${TOKENS.scoped}` },
    }),
  );
  t.deepEqual(setHeaders(response), { "x-api-key": "sk-ant-default-key", "x-client-id": "scoped" });
});

test("an internal client is allowed without a swap, its credential removed", async (t) => {
  const response = await kg.client.check(
    checkRequest({ json: chat, headers: { "x-api-key": TOKENS.internal } }),
  );
  t.deepEqual(setHeaders(response), { "x-client-id": "batch-worker" });
  t.deepEqual(response.ok_response?.headers_to_remove?.sort(), ["authorization", "x-api-key"]);
  t.like(response.dynamic_metadata?.fields, { auth_mode: { stringValue: "internal" } });
});

test("a spoofed x-client-id is overwritten on a swap", async (t) => {
  const response = await kg.client.check(
    checkRequest({
      json: chat,
      headers: { authorization: `Bearer ${TOKENS.prod}`, "x-client-id": "admin" },
    }),
  );
  t.is(setHeaders(response)["x-client-id"], "lightning-prod");
});

const denials: Array<[string, Parameters<typeof checkRequest>[0], string, number, number]> = [
  ["curl -d '{...}' (no credential)", { json: chat }, "UNAUTHORIZED", 401, 16],
  [
    "curl -H 'Authorization: Bearer kg-unknown'",
    { json: chat, headers: { authorization: "Bearer kg-unknown" } },
    "UNAUTHORIZED",
    401,
    16,
  ],
  [
    "a minted-looking token with a bad checksum",
    { json: chat, headers: { authorization: `Bearer kg_${"A".repeat(49)}` } },
    "UNAUTHORIZED",
    401,
    16,
  ],
  [
    "a disabled client",
    { json: chat, headers: { authorization: `Bearer ${TOKENS.disabled}` } },
    "UNAUTHORIZED",
    401,
    16,
  ],
  [
    "an expired token",
    { json: chat, headers: { authorization: `Bearer ${TOKENS.expired}` } },
    "UNAUTHORIZED",
    401,
    16,
  ],
  [
    "curl -H 'Authorization: Basic bm9jb2xvbg=='",
    { json: chat, headers: { authorization: "Basic bm9jb2xvbg==" } },
    "UNAUTHORIZED",
    401,
    16,
  ],
  [
    "a path outside the client's routes",
    { path: "/admin", json: chat, headers: { authorization: `Bearer ${TOKENS.scoped}` } },
    "FORBIDDEN",
    403,
    7,
  ],
  [
    "a model outside the client's models",
    {
      path: "/services/chat",
      json: { ...chat, model: "claude-opus-4" },
      headers: { authorization: `Bearer ${TOKENS.scoped}` },
    },
    "FORBIDDEN",
    403,
    7,
  ],
  [
    "two different credentials",
    {
      json: { ...chat, api_key: TOKENS.prod },
      headers: { authorization: `Bearer ${TOKENS.vault}` },
    },
    "BAD_REQUEST",
    400,
    7,
  ],
  [
    "curl -H 'content-type: application/json' -d '{oops'",
    { body: "{oops", headers: { "content-type": "application/json" } },
    "BAD_REQUEST",
    400,
    7,
  ],
  [
    "a truncated body with no credential in it",
    {
      body: '{"model":"claude-sonnet-4","messages":[',
      headers: { "content-type": "application/json", "x-envoy-auth-partial-body": "true" },
    },
    "PAYLOAD_TOO_LARGE",
    413,
    7,
  ],
  [
    "an enc: key whose master key is not loaded",
    { json: chat, headers: { authorization: `Bearer ${TOKENS.lostKey}` } },
    "KEY_UNAVAILABLE",
    503,
    7,
  ],
];

for (const [name, spec, type, httpStatus, grpcCode] of denials) {
  test(`deny: ${name} → ${httpStatus} ${type}`, async (t) => {
    const response = await kg.client.check(checkRequest(spec));
    t.is(response.status.code, grpcCode);
    t.like(denialOf(response), { type, status: httpStatus, request_id: "req-test-1" });
    t.is(response.ok_response, undefined);
  });
}

test("recognize route (context_extensions) lets a provider key through untouched", async (t) => {
  const response = await kg.client.check(
    checkRequest({
      json: { ...chat, api_key: "sk-ant-api03-own" },
      contextExtensions: { keygate_mode: "recognize" },
      headers: { "x-client-id": "spoof" },
    }),
  );
  t.is(response.status.code, 0);
  t.deepEqual(setHeaders(response), {});
  // Credential headers are keygate's alone: removed unless one held the provider key.
  t.deepEqual(response.ok_response?.headers_to_remove?.sort(), [
    "authorization",
    "x-api-key",
    "x-client-id",
  ]);
  t.like(response.dynamic_metadata?.fields, { auth_mode: { stringValue: "byo" } });
});

test("recognize route still swaps a known token and still denies an unknown non-provider token", async (t) => {
  const recognize = { keygate_mode: "recognize" };
  const known = await kg.client.check(
    checkRequest({
      json: chat,
      contextExtensions: recognize,
      headers: { authorization: `Bearer ${TOKENS.prod}` },
    }),
  );
  t.is(setHeaders(known)["x-api-key"], UPSTREAM);
  const unknown = await kg.client.check(
    checkRequest({
      json: chat,
      contextExtensions: recognize,
      headers: { authorization: "Bearer kg-nope" },
    }),
  );
  t.like(denialOf(unknown), { type: "UNAUTHORIZED" });
});

test("dry-run route allows a would-be denial unchanged and says so in metadata", async (t) => {
  const response = await kg.client.check(
    checkRequest({
      json: chat,
      contextExtensions: { keygate_mode: "dry-run" },
      headers: { authorization: "Bearer kg-nope" },
    }),
  );
  t.is(response.status.code, 0);
  t.like(response.dynamic_metadata?.fields, { would_deny: { stringValue: "UNAUTHORIZED" } });
  t.true(kg.logs.some((line) => line.includes('"dry-run: would deny"')));
});

test("a body above envoy.yaml's 4 MiB max_request_bytes still fits keygate's receive limit", async (t) => {
  const big = {
    ...chat,
    api_key: TOKENS.prod,
    messages: [{ role: "user", content: "x".repeat(4 * 1024 * 1024 + 10) }],
  };
  const response = await kg.client.check(checkRequest({ json: big }));
  t.is(setHeaders(response)["x-client-id"], "lightning-prod");
});

test("gRPC health reports SERVING for the server and the Authorization service", async (t) => {
  t.is(await kg.client.health(""), "SERVING");
  t.is(await kg.client.health("envoy.service.auth.v3.Authorization"), "SERVING");
});

test("admin endpoints answer", async (t) => {
  t.is((await fetch(`${kg.adminUrl}/healthz`)).status, 200);
  t.is((await fetch(`${kg.adminUrl}/readyz`)).status, 200);
  const status = (await (await fetch(`${kg.adminUrl}/keystore`)).json()) as {
    generation: { clientCount: number };
    stale: boolean;
  };
  t.is(status.generation.clientCount, 7);
  t.false(status.stale);
  const metrics = await (await fetch(`${kg.adminUrl}/metrics`)).text();
  t.regex(metrics, /keygate_check_decisions_total\{/);
  t.regex(metrics, /keygate_keystore_generation \d+/);
});
