import { Ajv } from "ajv";
import test from "ava";
import fc from "fast-check";
import type { CheckResponse } from "../../server/auth/build-response.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { readSchema } from "../../server/paths.js";
import { checkServiceOn } from "../helpers/check-service.js";
import { deserializeCheckResponse, serializeCheckRequest } from "../helpers/envoy-protos.js";

const VALID = "kg-property-valid-token";
const UPSTREAM = "sk-ant-held-upstream";
const validateDenial = new Ajv().compile(readSchema("denial.schema.json"));

async function checkHandler() {
  const { service } = await checkServiceOn(
    `version: 1\nclients:\n  - id: only\n    tokens:\n      - sha256: ${hashToken(VALID)}\n    upstream_key: env:PROP_UPSTREAM\n`,
    { PROP_UPSTREAM: UPSTREAM },
  );
  // Bytes in and out as on the wire; the reference protos encode and decode.
  return (request: unknown): CheckResponse => {
    const framed = service(serializeCheckRequest(request));
    if (framed instanceof Promise) throw new Error("a small body is answered synchronously");
    if (framed.readUInt32BE(1) !== framed.length - 5) throw new Error("bad gRPC framing");
    return deserializeCheckResponse(framed.subarray(5)) as unknown as CheckResponse;
  };
}

const check = await checkHandler();

/** Values that are sometimes the valid token, in the forms a client might send it. */
const credentialish = fc.oneof(
  fc.string(),
  fc.constant(VALID),
  fc.constant(` ${VALID} `),
  fc.constant(`Bearer ${VALID}`),
  fc.constant(`Basic ${Buffer.from(`u:${VALID}`).toString("base64")}`),
  fc.string().map((s) => `Basic ${s}`),
  fc.string().map((s) => `Bearer ${s}`),
  fc.constant("sk-ant-api03-byo"),
  fc.constant(`kg_${"A".repeat(49)}`),
);
const headerName = fc.oneof(
  fc.constantFrom(
    "authorization",
    "x-api-key",
    "content-type",
    "x-client-id",
    "x-envoy-auth-partial-body",
    "x-request-id",
    ":path",
  ),
  fc.string({ minLength: 1, maxLength: 12 }),
);
const headers = fc.dictionary(
  headerName,
  fc.oneof(credentialish, fc.constantFrom("application/json", "true", "text/plain")),
  {
    maxKeys: 5,
  },
);
const jsonBody = fc
  .record(
    {
      api_key: fc.oneof(credentialish, fc.integer(), fc.constant(null), fc.object()),
      model: fc.string(),
      extra: fc.jsonValue(),
    },
    { requiredKeys: [] },
  )
  .map((value) => Buffer.from(JSON.stringify(value)));
const body = fc.oneof(
  fc.constant(undefined),
  jsonBody,
  fc.string().map((s) => Buffer.from(s)),
  fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
);
const request = fc.record({
  headers,
  body,
  rawHeaders: fc.boolean(),
  path: fc.oneof(fc.constant("/v1/messages"), fc.string()),
  extensions: fc.dictionary(
    fc.constantFrom("keygate_credential", "other"),
    fc.constantFrom("any", "body", "header", "bogus"),
  ),
});

type Generated = typeof request extends fc.Arbitrary<infer T> ? T : never;

function toCheckRequest(g: Generated): unknown {
  const http: Record<string, unknown> = { method: "POST", path: g.path };
  if (g.rawHeaders)
    http.header_map = {
      headers: Object.entries(g.headers).map(([key, value]) => ({
        key,
        raw_value: Buffer.from(value),
      })),
    };
  else http.headers = g.headers;
  if (g.body) http.raw_body = g.body;
  return { attributes: { request: { http }, context_extensions: g.extensions } };
}

/** Whether the valid token appears anywhere a credential could be read from. */
function carriesValidToken(g: Generated): boolean {
  return (
    Object.values(g.headers).some((v) => v.includes(VALID) || v.startsWith("Basic ")) ||
    (g.body?.toString().includes(VALID) ?? false)
  );
}

test("arbitrary requests: never a crash, never an unjustified allow, denials always typed", (t) => {
  fc.assert(
    fc.property(request, (g) => {
      const response = check(toCheckRequest(g));
      if (response.status.code === 0) {
        if (!carriesValidToken(g)) return false;
        const set = Object.fromEntries(
          (response.ok_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
        );
        return set["x-api-key"] === UPSTREAM && set["x-client-id"] === "only";
      }
      if (![7, 16].includes(response.status.code)) return false;
      const denial = JSON.parse(response.denied_response?.body ?? "null") as unknown;
      return validateDenial(denial) && response.ok_response === undefined;
    }),
    { numRuns: 5000 },
  );
  t.pass();
});

test("the valid token in any single place is allowed with the swap", (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom("bearer", "x-api-key", "basic", "body"),
      fc.string(),
      (where, user) => {
        const headers: Record<string, string> = {};
        let body: Generated["body"];
        if (where === "bearer") headers.authorization = `Bearer ${VALID}`;
        if (where === "x-api-key") headers["x-api-key"] = VALID;
        if (where === "basic")
          headers.authorization = `Basic ${Buffer.from(`${user.replace(/:/g, "")}:${VALID}`).toString("base64")}`;
        if (where === "body") body = Buffer.from(JSON.stringify({ api_key: VALID, model: "m" }));
        const response = check(
          toCheckRequest({
            headers,
            body,
            rawHeaders: false,
            path: "/v1/messages",
            extensions: {},
          }),
        );
        return response.status.code === 0;
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});
