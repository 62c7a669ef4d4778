/**
 * The whole path as deployed: a client talks to the real Envoy running envoy/envoy.yaml
 * (addresses rewritten to 127.0.0.1), Envoy asks the real keygate process (built
 * dist/, configured by environment only), and allowed requests reach a stub upstream
 * that records what it saw. One Envoy, one keygate and one upstream serve every test in
 * this file; the tests are serial because the last one stops keygate.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import anyTest, { type ExecutionContext, type TestFn } from "ava";
import { parse } from "yaml";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { DENIAL_TYPES, type DenialType } from "../../server/errors.js";
import {
  accessLogLine,
  registerTopologyTeardown,
  startKeygateBehindEnvoy,
} from "../helpers/e2e-topology.js";
import { ENVOY_CONFIG_PATH, type EnvoyProcess, requireEnvoy } from "../helpers/envoy.js";
import type { KeygateProcess } from "../helpers/keygate-process.js";
import {
  type RecordedRequest,
  type StubUpstream,
  startStubUpstream,
} from "../helpers/stub-upstream.js";

/** The provider key keygate holds for `acme` (given to keygate as env:KG_TEST_UPSTREAM). */
const UPSTREAM_KEY = "sk-ant-upstream-held-by-keygate-0001";
/** A caller's own provider key, for the bring-your-own-key route. */
const BYO_KEY = "sk-ant-api03-callers-own-key-0002";
/** Marks each request so the upstream's record can be searched per test. */
const CASE_HEADER = "x-e2e-case";

interface Context {
  dir: string;
  acmeToken: string;
  keylessToken: string;
  upstream: StubUpstream;
  keygate: KeygateProcess;
  envoy: EnvoyProcess;
}

const test = anyTest as TestFn<Context>;

function keystoreYaml(acmeToken: string, keylessToken: string): string {
  return `version: 1
clients:
  - id: acme
    name: Acme (e2e)
    tokens:
      - sha256: ${hashToken(acmeToken)}
    upstream_key: env:KG_TEST_UPSTREAM
  # Its upstream key names a variable keygate is not given: keygate answers 503
  # KEY_UNAVAILABLE for it, which Envoy's local_reply_config must leave alone.
  - id: keyless
    tokens:
      - sha256: ${hashToken(keylessToken)}
    upstream_key: env:KG_TEST_UNSET_UPSTREAM
`;
}

test.before(async (t) => {
  requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-e2e-"));
  const acmeToken = mintToken();
  const keylessToken = mintToken();
  const keystore = path.join(dir, "keystore.yaml");
  writeFileSync(keystore, keystoreYaml(acmeToken, keylessToken), { mode: 0o600 });
  t.context.dir = dir;
  t.context.acmeToken = acmeToken;
  t.context.keylessToken = keylessToken;
  t.context.upstream = await startStubUpstream();
  // keygate first: Envoy health-checks it as soon as it starts.
  await startKeygateBehindEnvoy(t.context, {
    dir,
    keystore,
    upstreamPort: t.context.upstream.port,
    env: { KG_TEST_UPSTREAM: UPSTREAM_KEY },
  });
});

registerTopologyTeardown(test);

interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** The upstream's records of this request (none when Envoy or keygate refused it). */
  readonly upstreamSaw: () => RecordedRequest[];
}

async function send(
  t: ExecutionContext<Context>,
  urlPath: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  const marker = randomUUID();
  const response = await fetch(`${t.context.envoy.url}${urlPath}`, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers: { ...init.headers, [CASE_HEADER]: marker },
    body: init.body,
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    text,
    upstreamSaw: () => t.context.upstream.requests.filter((r) => r.headers[CASE_HEADER] === marker),
  };
}

function messagesBody(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    model: "claude-sonnet-4-5",
    max_tokens: 16,
    messages: [{ role: "user", content: "Hello" }],
    ...extra,
  });
}

/** The one request the upstream saw for this reply; fails the test when there is not exactly one. */
function forwarded(t: ExecutionContext<Context>, reply: Reply): RecordedRequest {
  t.is(reply.status, 200, reply.text);
  const seen = reply.upstreamSaw();
  t.is(seen.length, 1, "the upstream should have received the request exactly once");
  const first = seen[0];
  if (first === undefined) throw new Error("request did not reach the upstream");
  return first;
}

/** A JSON denial in keygate's format, with the catalogue's message and Envoy's request id. */
function assertDenial(t: ExecutionContext<Context>, reply: Reply, type: DenialType): void {
  const spec = DENIAL_TYPES[type];
  t.is(reply.status, spec.httpStatus, reply.text);
  t.regex(reply.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(reply.text) as Record<string, unknown>;
  t.is(body.type, type);
  t.is(body.message, spec.message);
  const requestId = reply.headers.get("x-request-id");
  t.truthy(requestId, "Envoy echoes x-request-id (always_set_request_id_in_response)");
  t.is(body.request_id, requestId);
  t.deepEqual(reply.upstreamSaw(), [], "a denied request must never reach the upstream");
}

/** The first numeric value of `key` anywhere in a parsed YAML tree. */
function findNumber(node: unknown, key: string): number | undefined {
  if (node === null || typeof node !== "object") return undefined;
  for (const [name, value] of Object.entries(node)) {
    if (name === key && typeof value === "number") return value;
    const found = findNumber(value, key);
    if (found !== undefined) return found;
  }
  return undefined;
}

// (a) Known client: credential swapped for the upstream key, identity added.

test.serial(
  "a known token in the JSON body reaches the upstream as the client's upstream key",
  async (t) => {
    const body = messagesBody({ api_key: t.context.acmeToken });
    const reply = await send(t, "/v1/messages", {
      headers: { "content-type": "application/json" },
      body,
    });
    const seen = forwarded(t, reply);
    t.is(seen.headers["x-api-key"], UPSTREAM_KEY);
    t.is(seen.headers["x-client-id"], "acme");
    t.is(seen.headers.authorization, undefined);
    // ext_authz cannot rewrite a body: it arrives as sent, and the upstream prefers the header.
    t.is(seen.body, body);
    t.is(seen.path, "/v1/messages");

    const line = await accessLogLine(t.context.envoy, reply.headers.get("x-request-id") ?? "");
    t.is(line.client_id, "acme", "access log carries client_id from ext_authz dynamic metadata");
    t.is(line.auth_mode, "known");
    t.is(line.status, 200);
  },
);

test.serial("a known Bearer token is removed and replaced by the upstream key", async (t) => {
  const reply = await send(t, "/v1/messages", {
    headers: { authorization: `Bearer ${t.context.acmeToken}`, "content-type": "application/json" },
    body: messagesBody(),
  });
  const seen = forwarded(t, reply);
  t.is(seen.headers.authorization, undefined);
  t.is(seen.headers["x-api-key"], UPSTREAM_KEY);
  t.is(seen.headers["x-client-id"], "acme");
  t.false(
    JSON.stringify(seen.headers).includes(t.context.acmeToken),
    "the token never reaches the upstream",
  );
});

test.serial("a known token in x-api-key is overwritten by the upstream key", async (t) => {
  const reply = await send(t, "/v1/messages", {
    headers: { "x-api-key": t.context.acmeToken, "content-type": "application/json" },
    body: messagesBody(),
  });
  const seen = forwarded(t, reply);
  t.is(seen.headers["x-api-key"], UPSTREAM_KEY);
  t.is(seen.headers["x-client-id"], "acme");
  t.false(
    JSON.stringify(seen.headers).includes(t.context.acmeToken),
    "the token never reaches the upstream",
  );
});

// (b) Identity headers cannot be spoofed.

test.serial("a spoofed x-client-id is overwritten on a key swap", async (t) => {
  const reply = await send(t, "/v1/messages", {
    headers: {
      authorization: `Bearer ${t.context.acmeToken}`,
      "x-client-id": "root",
      "content-type": "application/json",
    },
    body: messagesBody(),
  });
  const seen = forwarded(t, reply);
  t.is(seen.headers["x-client-id"], "acme");
});

test.serial("a spoofed x-client-id is removed on a bring-your-own-key allow", async (t) => {
  const reply = await send(t, "/byo/v1/messages", {
    headers: { "x-api-key": BYO_KEY, "x-client-id": "root", "content-type": "application/json" },
    body: messagesBody(),
  });
  const seen = forwarded(t, reply);
  t.is(seen.headers["x-client-id"], undefined);
  t.is(seen.headers["x-api-key"], BYO_KEY);
});

// (c) Unknown credentials are refused by keygate, in its JSON format, through Envoy.

test.serial(
  "an unknown token gets keygate's 401 JSON with www-authenticate, and the upstream is never called",
  async (t) => {
    const reply = await send(t, "/v1/messages", {
      headers: { authorization: `Bearer ${mintToken()}`, "content-type": "application/json" },
      body: messagesBody(),
    });
    assertDenial(t, reply, "UNAUTHORIZED");
    t.regex(reply.headers.get("www-authenticate") ?? "", /^Bearer/);
  },
);

test.serial(
  "on the enforce route, a provider key and a missing credential are both 401",
  async (t) => {
    for (const headers of [{ "x-api-key": BYO_KEY }, {}] as Record<string, string>[]) {
      const reply = await send(t, "/v1/messages", {
        headers: { ...headers, "content-type": "application/json" },
        body: messagesBody(),
      });
      assertDenial(t, reply, "UNAUTHORIZED");
    }
  },
);

// (d) The recognize route lets a caller's own provider key through untouched.

test.serial("the /byo/ recognize route forwards a caller's sk-ant- key as sent", async (t) => {
  const reply = await send(t, "/byo/v1/messages?beta=true", {
    headers: { "x-api-key": BYO_KEY, "content-type": "application/json" },
    body: messagesBody(),
  });
  const seen = forwarded(t, reply);
  t.is(seen.path, "/v1/messages?beta=true", "prefix_rewrite strips /byo");
  t.is(seen.headers["x-api-key"], BYO_KEY);
  t.is(seen.headers["x-client-id"], undefined);
});

test.serial("the /byo/ recognize route still swaps a keygate token", async (t) => {
  const reply = await send(t, "/byo/v1/messages", {
    headers: { authorization: `Bearer ${t.context.acmeToken}`, "content-type": "application/json" },
    body: messagesBody(),
  });
  const seen = forwarded(t, reply);
  t.is(seen.headers["x-api-key"], UPSTREAM_KEY);
  t.is(seen.headers["x-client-id"], "acme");
  t.is(seen.headers.authorization, undefined);
});

// (e) Envoy's own 413 speaks keygate's denial format.

test.serial(
  "a body over max_request_bytes gets Envoy's 413 as a PAYLOAD_TOO_LARGE JSON denial",
  async (t) => {
    const maxBytes = findNumber(
      parse(readFileSync(ENVOY_CONFIG_PATH, "utf8")),
      "max_request_bytes",
    );
    if (maxBytes === undefined)
      throw new Error("envoy.yaml sets no with_request_body.max_request_bytes");
    // The prompt alone fills the limit, so the JSON around it goes over.
    const prompt = "x".repeat(maxBytes);
    const reply = await send(t, "/v1/messages", {
      headers: {
        authorization: `Bearer ${t.context.acmeToken}`,
        "content-type": "application/json",
      },
      body: messagesBody({ messages: [{ role: "user", content: prompt }] }),
    });
    assertDenial(t, reply, "PAYLOAD_TOO_LARGE");
  },
);

// keygate's own denials are local replies too: the mappers must leave them alone.

test.serial(
  "keygate's 503 KEY_UNAVAILABLE passes through Envoy's local_reply_config unchanged",
  async (t) => {
    const reply = await send(t, "/v1/messages", {
      headers: {
        authorization: `Bearer ${t.context.keylessToken}`,
        "content-type": "application/json",
      },
      body: messagesBody(),
    });
    assertDenial(t, reply, "KEY_UNAVAILABLE");
  },
);

// (f) Last: with keygate gone, everything fails closed with Envoy's JSON 503.

test.serial(
  "with keygate stopped, every request fails closed with a 503 UNAVAILABLE JSON denial",
  async (t) => {
    const exit = await t.context.keygate.stop("SIGTERM");
    t.deepEqual(exit, { code: 0, signal: null }, "SIGTERM drains and exits 0");

    const attempts: { urlPath: string; headers: Record<string, string> }[] = [
      { urlPath: "/v1/messages", headers: { authorization: `Bearer ${t.context.acmeToken}` } },
      { urlPath: "/v1/messages", headers: {} },
      { urlPath: "/byo/v1/messages", headers: { "x-api-key": BYO_KEY } },
      { urlPath: "/byo/v1/messages", headers: {} },
    ];
    for (const { urlPath, headers } of attempts) {
      const reply = await send(t, urlPath, {
        headers: { ...headers, "content-type": "application/json" },
        body: messagesBody(),
      });
      assertDenial(t, reply, "UNAVAILABLE");
      const line = await accessLogLine(t.context.envoy, reply.headers.get("x-request-id") ?? "");
      t.is(line.response_flags, "UAEX");
      t.is(line.response_code_details, "ext_authz_error");
    }
  },
);
