/**
 * Property test against the real in-process server (real gRPC, real SQLite): over
 * generated content-types (odd and doubled ones too), body encodings Python's
 * json.loads(bytes) reads, repeated credential headers, credential placements (alone or
 * several at once), tokens and every mode, no allowed Check leaves a keygate token where
 * the upstream reads a credential:
 *  (a) a credential header (authorization, x-api-key, the upstream header) that carried a
 *      kg_ token is removed or overwritten by keygate;
 *  (b) a top-level body `api_key` holding a kg_ token, which ext_authz cannot strip, is
 *      forwarded only with the client id set and the upstream header set or removed, so
 *      Apollo ignores the body's key (README "How Apollo reads the key");
 *  (c) a body keygate cannot read as JSON (form, text) holding a kg_ token is forwarded
 *      only on the same terms.
 * A kg_ token nested deeper in the JSON (a prompt) is content, not a credential.
 */
import anyTest, { type TestFn } from "ava";
import fc from "fast-check";
import type { CheckResponse } from "../../server/auth/build-response.js";
import { MODES } from "../../server/config.js";
import {
  BYO_KEY,
  describe,
  ENCODINGS,
  encodeText,
  HOSTILE_ENV,
  headersRemoved,
  headersSet,
  hostileKeystore,
  hostileRequest,
  mintHostileTokens,
} from "../helpers/hostile-fixtures.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";

const TOKENS = mintHostileTokens();
const MARK = "kg_";
const CLIENT_ID_HEADER = "x-client-id";
const NUM_RUNS = 200;

interface Context {
  servers: { upstreamHeader: string; kg: TestKeygate }[];
}
const test = anyTest as TestFn<Context>;

test.before(async (t) => {
  t.context.servers = [
    {
      upstreamHeader: "x-api-key",
      kg: await startTestKeygate({ keystore: hostileKeystore(TOKENS), env: HOSTILE_ENV }),
    },
    {
      upstreamHeader: "x-provider-key",
      kg: await startTestKeygate({
        keystore: hostileKeystore(TOKENS),
        env: { ...HOSTILE_ENV, KEYGATE_UPSTREAM_HEADER: "x-provider-key" },
      }),
    },
  ];
});
test.after.always(async (t) => {
  for (const server of t.context.servers ?? []) await server.kg.stop();
});

const token = fc.oneof(
  { weight: 4, arbitrary: fc.constant(TOKENS.alpha) },
  { weight: 3, arbitrary: fc.constant(TOKENS.unknown) },
  fc.constant(TOKENS.disabled),
  fc.constant(TOKENS.expired),
  fc.constant(TOKENS.gamma),
  { weight: 2, arbitrary: fc.constant(BYO_KEY) },
  fc.constant(`sk-ant-abc${TOKENS.unknown}`),
  fc.stringMatching(/^[!-~]{1,24}$/),
  fc.stringMatching(/^[!-~]{0,6}$/).map((s) => `${MARK}${s}`),
);

/** Where one credential goes; the upstream header is the server's own (x-api-key or renamed). */
const PLACEMENTS = [
  "body-json",
  "body-form",
  "body-text",
  "bearer",
  "basic",
  "basic-user",
  "x-api-key",
  "token-scheme",
  "bare-authorization",
  "upstream-header",
] as const;
type Placement = (typeof PLACEMENTS)[number];

const credential = fc.record({ where: fc.constantFrom(...PLACEMENTS), token });

const contentType: fc.Arbitrary<string[]> = fc.oneof(
  fc.constant<string[]>([]),
  fc
    .constantFrom(
      "application/json",
      "APPLICATION/JSON; charset=utf-8",
      "text/plain;charset=UTF-8",
      "application/x-www-form-urlencoded",
      "text/json",
      "multipart/form-data; boundary=x",
      "application/json,text/plain",
      "application/octet-stream",
      "",
      " application/json ",
      "application/vnd.api+json",
    )
    .map((value) => [value]),
  fc.tuple(
    fc.constantFrom("application/json", "text/plain"),
    fc.constantFrom("text/plain", "application/json", "application/x-www-form-urlencoded"),
  ),
);

const generated = fc.record({
  credentials: fc.array(credential, { minLength: 0, maxLength: 3 }),
  /** A second api_key in the JSON body (Python keeps the last). */
  bodyDuplicate: fc.option(token, { nil: undefined }),
  /** Repeat one credential header with this token (Envoy joins; header_map keeps two entries). */
  headerDuplicate: fc.option(
    fc.record({
      header: fc.constantFrom("authorization", "x-api-key", "upstream"),
      token,
    }),
    { nil: undefined },
  ),
  contentTypes: contentType,
  encoding: fc.constantFrom(...ENCODINGS),
  rawHeaders: fc.boolean(),
  mode: fc.constantFrom(...MODES),
  source: fc.constantFrom(undefined, "any", "body", "header"),
  path: fc.constantFrom("/v1/messages", "/services/chat"),
});
type Generated = typeof generated extends fc.Arbitrary<infer G> ? G : never;

interface Built {
  readonly request: unknown;
  /** Every value sent per credential header name. */
  readonly headerValues: ReadonlyMap<string, string[]>;
  /** The top-level api_key Python reads from the JSON body, if it is a string. */
  readonly bodyApiKey: string | undefined;
  /** Whether a body that is not JSON carries a kg_ token. */
  readonly opaqueBodyMark: boolean;
}

function headerFor(where: Placement, upstreamHeader: string): string | undefined {
  switch (where) {
    case "bearer":
    case "basic":
    case "basic-user":
    case "token-scheme":
    case "bare-authorization":
      return "authorization";
    case "x-api-key":
      return "x-api-key";
    case "upstream-header":
      return upstreamHeader;
    default:
      return undefined;
  }
}

function headerValue(where: Placement, value: string): string {
  switch (where) {
    case "bearer":
      return `Bearer ${value}`;
    case "basic":
      return `Basic ${Buffer.from(`user:${value}`, "latin1").toString("base64")}`;
    case "basic-user":
      return `Basic ${Buffer.from(`${value}:${BYO_KEY}`, "latin1").toString("base64")}`;
    case "token-scheme":
      return `Token ${value}`;
    default:
      return value;
  }
}

function build(g: Generated, upstreamHeader: string): Built {
  const headers: [string, string][] = g.contentTypes.map((v) => ["content-type", v]);
  const headerValues = new Map<string, string[]>();
  const addHeader = (name: string, value: string): void => {
    headers.push([name, value]);
    headerValues.set(name, [...(headerValues.get(name) ?? []), value]);
  };
  const jsonKeys: string[] = [];
  const formKeys: string[] = [];
  const textParts: string[] = [];
  for (const { where, token: value } of g.credentials) {
    const name = headerFor(where, upstreamHeader);
    if (name !== undefined) addHeader(name, headerValue(where, value));
    else if (where === "body-json") jsonKeys.push(value);
    else if (where === "body-form") formKeys.push(value);
    else textParts.push(value);
  }
  if (g.headerDuplicate !== undefined) {
    const { header, token: value } = g.headerDuplicate;
    const name = header === "upstream" ? upstreamHeader : header;
    addHeader(name, name === "authorization" ? `Bearer ${value}` : value);
  }
  if (g.bodyDuplicate !== undefined && jsonKeys.length > 0) jsonKeys.push(g.bodyDuplicate);

  let body: Buffer | undefined;
  let bodyApiKey: string | undefined;
  let opaqueBodyMark = false;
  if (jsonKeys.length > 0 || (formKeys.length === 0 && textParts.length === 0)) {
    // JSON, written by hand so that api_key may repeat; Python keeps the last one.
    const fields = [`"model":"claude-sonnet-4"`, `"messages":[{"role":"user","content":"hi"}]`];
    for (const key of jsonKeys) fields.push(`"api_key":${JSON.stringify(key)}`);
    body = encodeText(`{${fields.join(",")}}`, g.encoding);
    bodyApiKey = jsonKeys[jsonKeys.length - 1];
  } else if (formKeys.length > 0) {
    const text = ["model=claude", ...formKeys.map((k) => `api_key=${encodeURIComponent(k)}`)];
    body = Buffer.from(text.join("&"), "utf8");
    opaqueBodyMark = formKeys.some((k) => k.includes(MARK));
  } else {
    body = Buffer.from(`my key is ${textParts.join(" and ")}`, "utf8");
    opaqueBodyMark = textParts.some((k) => k.includes(MARK));
  }
  return {
    request: hostileRequest({
      path: g.path,
      headers,
      body,
      rawHeaders: g.rawHeaders,
      mode: g.mode,
      ...(g.source === undefined ? {} : { credential: g.source as "any" | "body" | "header" }),
    }),
    headerValues,
    bodyApiKey,
    opaqueBodyMark,
  };
}

/** Why an allowed response leaves a keygate token where the upstream reads a credential, or undefined. */
function leak(built: Built, response: CheckResponse, upstreamHeader: string): string | undefined {
  if (response.status.code !== 0) return undefined;
  const set = headersSet(response);
  const removed = new Set(headersRemoved(response));
  for (const [name, value] of Object.entries(set))
    if (value.includes(MARK)) return `keygate set ${name} to a value holding a kg_ token`;
  for (const name of new Set(["authorization", "x-api-key", upstreamHeader])) {
    const sent = built.headerValues.get(name) ?? [];
    if (sent.some((v) => v.includes(MARK) || decodedBasic(v).includes(MARK)))
      if (!removed.has(name) && set[name] === undefined)
        return `${name} carried a kg_ token and is neither removed nor overwritten`;
  }
  const bodyMark = built.bodyApiKey?.includes(MARK) === true || built.opaqueBodyMark;
  if (bodyMark) {
    if (set[CLIENT_ID_HEADER] === undefined)
      return "a kg_ token in the body is forwarded without the client id header";
    if (set[upstreamHeader] === undefined && !removed.has(upstreamHeader))
      return "a kg_ token in the body is forwarded with the upstream header neither set nor removed";
  }
  return undefined;
}

function decodedBasic(value: string): string {
  const match = /^\s*basic\s+(\S+)/i.exec(value);
  return match?.[1] === undefined ? "" : Buffer.from(match[1], "base64").toString("latin1");
}

for (const upstreamHeader of ["x-api-key", "x-provider-key"]) {
  test(`upstream header ${upstreamHeader}: no allowed Check leaves a kg_ token where the upstream reads a credential`, async (t) => {
    const server = t.context.servers.find((s) => s.upstreamHeader === upstreamHeader);
    if (server === undefined) throw new Error("server not started");
    await fc.assert(
      fc.asyncProperty(generated, async (g) => {
        const built = build(g, upstreamHeader);
        const response = await server.kg.client.check(built.request);
        const problem = leak(built, response, upstreamHeader);
        if (problem !== undefined) throw new Error(`${problem}: ${describe(response)}`);
        if (g.mode === "enforce" && response.status.code === 0)
          if (headersSet(response)[CLIENT_ID_HEADER] === undefined)
            throw new Error(`enforce allowed without a client: ${describe(response)}`);
      }),
      { numRuns: NUM_RUNS, includeErrorInReport: true },
    );
    t.pass();
  });
}

// curl -H 'x-api-key: sk-ant-abc' -H 'x-api-key: <T>' … and friends, exhaustively: every
// pair of one provider key and one kg_ token in the same header, in both orders, both framings.
test("a provider key and a kg_ token in one header, in either order, are never allowed together", async (t) => {
  const server = t.context.servers[0];
  if (server === undefined) throw new Error("server not started");
  for (const kg of [TOKENS.alpha, TOKENS.unknown])
    for (const mode of MODES.filter((m) => m !== "off"))
      for (const rawHeaders of [false, true])
        for (const pair of [
          [BYO_KEY, kg],
          [kg, BYO_KEY],
        ]) {
          const response = await server.kg.client.check(
            hostileRequest({
              headers: pair.map((value) => ["x-api-key", value] as const),
              body: '{"model":"m"}',
              rawHeaders,
              mode,
            }),
          );
          const removed = headersRemoved(response).includes("x-api-key");
          const overwritten = headersSet(response)["x-api-key"] !== undefined;
          t.true(
            response.status.code !== 0 || removed || overwritten,
            `${mode} ${rawHeaders ? "header_map" : "joined"} ${pair.map((v) => v.slice(0, 8)).join("+")}: ${describe(response)}`,
          );
        }
});
