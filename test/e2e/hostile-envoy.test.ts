/**
 * Hostile requests through the real Envoy running envoy/envoy.yaml (addresses rewritten
 * to 127.0.0.1), the real keygate process (built dist/) and a stub upstream that records
 * what it received. What the upstream saw is the verdict: it must never see a keygate
 * token in a header, and for a known client it must see the swapped key, whatever the
 * content-type, the Authorization scheme or the repeated header lines. envoy.yaml has no
 * dry-run route, so dry-run is covered by the integration suites only.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import anyTest, { type ExecutionContext, type TestFn } from "ava";
import { registerTopologyTeardown, startKeygateBehindEnvoy } from "../helpers/e2e-topology.js";
import { type EnvoyProcess, requireEnvoy } from "../helpers/envoy.js";
import {
  ALPHA_UPSTREAM,
  encodeText,
  HOSTILE_ENV,
  type HostileTokens,
  hostileKeystore,
  mintHostileTokens,
} from "../helpers/hostile-fixtures.js";
import type { KeygateProcess } from "../helpers/keygate-process.js";
import { rawHttpRequest } from "../helpers/raw-http.js";
import {
  type RecordedRequest,
  type StubUpstream,
  startStubUpstream,
} from "../helpers/stub-upstream.js";

/** Marks each request so the upstream's record can be searched per case. */
const CASE_HEADER = "x-e2e-case";

interface Context {
  dir: string;
  tokens: HostileTokens;
  upstream: StubUpstream;
  keygate: KeygateProcess;
  envoy: EnvoyProcess;
}
const test = anyTest as TestFn<Context>;
type T = ExecutionContext<Context>;

test.before(async (t) => {
  requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-e2e-hostile-"));
  const tokens = mintHostileTokens();
  const keystore = path.join(dir, "keystore.yaml");
  writeFileSync(keystore, hostileKeystore(tokens), { mode: 0o600 });
  t.context.dir = dir;
  t.context.tokens = tokens;
  t.context.upstream = await startStubUpstream();
  // keygate first: Envoy health-checks it as soon as it starts.
  await startKeygateBehindEnvoy(t.context, {
    dir,
    keystore,
    upstreamPort: t.context.upstream.port,
    env: HOSTILE_ENV,
  });
});

registerTopologyTeardown(test);

interface Reply {
  readonly status: number;
  readonly text: string;
  /** The upstream's records of this request (none when Envoy or keygate refused it). */
  readonly upstreamSaw: RecordedRequest[];
}

function recorded(t: T, marker: string): RecordedRequest[] {
  return t.context.upstream.requests.filter((r) => r.headers[CASE_HEADER] === marker);
}

/** A request sent with fetch(), a real HTTP client. */
async function send(
  t: T,
  urlPath: string,
  headers: Record<string, string>,
  body: string | Buffer,
): Promise<Reply> {
  const marker = randomUUID();
  const response = await fetch(`${t.context.envoy.url}${urlPath}`, {
    method: "POST",
    headers: { ...headers, [CASE_HEADER]: marker },
    body,
  });
  const text = await response.text();
  return { status: response.status, text, upstreamSaw: recorded(t, marker) };
}

/** A request written on the socket, header lines exactly as given (repeats kept). */
async function sendRaw(
  t: T,
  urlPath: string,
  headers: ReadonlyArray<readonly [string, string]>,
  body: string,
): Promise<Reply> {
  const marker = randomUUID();
  const reply = await rawHttpRequest(
    t.context.envoy.listenPort,
    "POST",
    urlPath,
    [...headers, [CASE_HEADER, marker]],
    Buffer.from(body, "utf8"),
  );
  return { status: reply.status, text: reply.body, upstreamSaw: recorded(t, marker) };
}

const CHAT = {
  model: "claude-sonnet-4-5",
  max_tokens: 16,
  messages: [{ role: "user", content: "Hello" }],
};

/** Whether any header the upstream received holds a keygate token. */
function headerHoldsToken(seen: RecordedRequest): boolean {
  return JSON.stringify(seen.headers).includes("kg_");
}

/** Forwarded once, as the known client alpha: the swapped key, the client id, no token in a header. */
function assertSwappedToAlpha(t: T, reply: Reply, what: string): void {
  t.is(reply.status, 200, `${what}: ${reply.text}`);
  t.is(reply.upstreamSaw.length, 1, `${what}: the upstream should see it exactly once`);
  const seen = reply.upstreamSaw[0];
  if (seen === undefined) return;
  t.is(seen.headers["x-api-key"], ALPHA_UPSTREAM, what);
  t.is(seen.headers["x-client-id"], "alpha", what);
  t.is(seen.headers.authorization, undefined, what);
  t.false(headerHoldsToken(seen), `${what}: a keygate token reached the upstream in a header`);
}

function assertRefused(t: T, reply: Reply, statuses: readonly number[], what: string): void {
  t.true(statuses.includes(reply.status), `${what}: HTTP ${reply.status} ${reply.text}`);
  t.deepEqual(reply.upstreamSaw, [], `${what}: a refused request must never reach the upstream`);
}

// ── 1. Bodies are read whatever the content-type ─────────────────────────────────────────

for (const contentType of ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded"]) {
  // curl -H 'content-type: text/plain;charset=UTF-8' -d '{"api_key":"<T>",…}' http://envoy/v1/messages
  test.serial(
    `a known token in a JSON body sent as ${contentType} reaches the upstream as alpha's upstream key, on both routes`,
    async (t) => {
      const body = JSON.stringify({ ...CHAT, api_key: t.context.tokens.alpha });
      for (const route of ["/v1/messages", "/byo/v1/messages"]) {
        const reply = await send(t, route, { "content-type": contentType }, body);
        assertSwappedToAlpha(t, reply, `${route} ${contentType}`);
      }
    },
  );

  // curl -H 'content-type: text/plain;charset=UTF-8' -d '{"api_key":"kg_<unknown>",…}' http://envoy/byo/v1/messages
  test.serial(
    `an unknown kg_ token in a JSON body sent as ${contentType} is 401 on both routes, never forwarded`,
    async (t) => {
      const body = JSON.stringify({ ...CHAT, api_key: t.context.tokens.unknown });
      for (const route of ["/v1/messages", "/byo/v1/messages"]) {
        const reply = await send(t, route, { "content-type": contentType }, body);
        assertRefused(t, reply, [401], `${route} ${contentType}`);
      }
    },
  );
}

// curl -H 'content-type: text/plain' --data-binary @alpha.utf16le.json http://envoy/byo/v1/messages
test.serial(
  "a known token in a UTF-16LE text/plain body reaches the upstream swapped",
  async (t) => {
    const body = encodeText(
      JSON.stringify({ ...CHAT, api_key: t.context.tokens.alpha }),
      "utf16le",
    );
    const reply = await send(t, "/byo/v1/messages", { "content-type": "text/plain" }, body);
    assertSwappedToAlpha(t, reply, "utf16le");
  },
);

// curl -H 'content-type: application/x-www-form-urlencoded' -d 'api_key=kg_<unknown>' http://envoy/byo/v1/messages
test.serial(
  "a form body api_key=kg_… keygate cannot read is 400 on the recognize route, never forwarded",
  async (t) => {
    const reply = await send(
      t,
      "/byo/v1/messages",
      { "content-type": "application/x-www-form-urlencoded" },
      `model=claude&api_key=${t.context.tokens.unknown}`,
    );
    assertRefused(t, reply, [400], "form body");
  },
);

// ── 2. Any Authorization scheme carrying a kg_ token is a credential ─────────────────────

for (const [label, value] of [
  ["Authorization: Token <T>", (token: string) => `Token ${token}`],
  ["Authorization: <T>", (token: string) => token],
] as const) {
  // curl -H 'Authorization: Token <T>' -d '{…}' http://envoy/byo/v1/messages
  test.serial(
    `${label}: swapped and removed on both routes; an unknown kg_ token is 401`,
    async (t) => {
      for (const route of ["/v1/messages", "/byo/v1/messages"]) {
        const known = await send(
          t,
          route,
          { authorization: value(t.context.tokens.alpha), "content-type": "application/json" },
          JSON.stringify(CHAT),
        );
        assertSwappedToAlpha(t, known, `${route} known`);
        const unknown = await send(
          t,
          route,
          { authorization: value(t.context.tokens.unknown), "content-type": "application/json" },
          JSON.stringify(CHAT),
        );
        assertRefused(t, unknown, [401], `${route} unknown`);
      }
    },
  );
}

// curl -H 'Authorization: kg_<token> sk-ant-abc' http://envoy/byo/v1/messages
test.serial(
  "Authorization: '<kg_ token> sk-ant-abc' never reaches the upstream with the token",
  async (t) => {
    for (const token of [t.context.tokens.alpha, t.context.tokens.unknown]) {
      const reply = await send(
        t,
        "/byo/v1/messages",
        { authorization: `${token} sk-ant-abc`, "content-type": "application/json" },
        JSON.stringify(CHAT),
      );
      // Refused, or forwarded without the token: either way no header of it reaches the upstream.
      const leaked = reply.upstreamSaw.filter(headerHoldsToken);
      t.deepEqual(leaked, [], `HTTP ${reply.status}: the token reached the upstream`);
    }
  },
);

// ── 4. Two real credential header lines on the wire ────────────────────────────────────────

function doubled(tokens: HostileTokens): ReadonlyArray<readonly [string, [string, string][]]> {
  return [
    [
      "x-api-key: sk-ant-abc, then x-api-key: <T>",
      [
        ["x-api-key", "sk-ant-abc"],
        ["x-api-key", tokens.alpha],
      ],
    ],
    [
      "x-api-key: <T>, then x-api-key: sk-ant-abc",
      [
        ["x-api-key", tokens.alpha],
        ["x-api-key", "sk-ant-abc"],
      ],
    ],
    [
      "x-api-key: sk-ant-abc, then x-api-key: <unknown kg_>",
      [
        ["x-api-key", "sk-ant-abc"],
        ["x-api-key", tokens.unknown],
      ],
    ],
    [
      "Authorization: Bearer sk-ant-abc, then Authorization: Bearer <T>",
      [
        ["authorization", "Bearer sk-ant-abc"],
        ["authorization", `Bearer ${tokens.alpha}`],
      ],
    ],
  ];
}

// printf 'POST /byo/v1/messages HTTP/1.1\r\nx-api-key: sk-ant-abc\r\nx-api-key: <T>\r\n…' | nc envoy 8080
test.serial(
  "two credential header lines (a provider key and a kg_ token) are refused on both routes, never forwarded",
  async (t) => {
    for (const [label, headers] of doubled(t.context.tokens))
      for (const route of ["/v1/messages", "/byo/v1/messages"]) {
        const reply = await sendRaw(
          t,
          route,
          [...headers, ["content-type", "application/json"]],
          JSON.stringify(CHAT),
        );
        assertRefused(t, reply, [400, 401], `${label} on ${route}`);
      }
  },
);

// ── Header names with underscores ────────────────────────────────────────────────────────

// printf 'POST /byo/v1/messages HTTP/1.1\r\nx_api_key: kg_…\r\nx_client_id: alpha\r\n…' | nc envoy 8080
// CGI/WSGI-style servers read x_api_key as HTTP_X_API_KEY, the same variable as x-api-key,
// and x_client_id as x-client-id: neither may reach the upstream as the caller wrote it.
test.serial("x_api_key: kg_… and x_client_id never reach the upstream", async (t) => {
  for (const route of ["/v1/messages", "/byo/v1/messages"]) {
    const reply = await sendRaw(
      t,
      route,
      [
        ["authorization", `Bearer ${t.context.tokens.alpha}`],
        ["x_api_key", t.context.tokens.unknown],
        ["x_client_id", "root"],
        ["content-type", "application/json"],
      ],
      JSON.stringify(CHAT),
    );
    // Refused outright (Envoy: headers_with_underscores_action), or forwarded without them.
    const leaked = reply.upstreamSaw.filter(
      (seen) => seen.headers.x_api_key !== undefined || seen.headers.x_client_id !== undefined,
    );
    t.deepEqual(leaked, [], `${route}: HTTP ${reply.status}`);
  }
});
