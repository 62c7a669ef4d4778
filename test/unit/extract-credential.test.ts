import test from "ava";
import { decodeCheckRequest } from "../../server/auth/check-attributes.js";
import {
  type CredentialSource,
  type Extraction,
  extractCredential,
} from "../../server/auth/extract-credential.js";
import { WireError } from "../../server/grpc/protobuf-wire.js";
import { basic, checkRequest, type RequestSpec } from "../helpers/check-request.js";
import { serializeCheckRequest } from "../helpers/envoy-protos.js";

/** A CheckRequest for the spec as Envoy sends it: protobuf bytes. */
const wire = (spec: RequestSpec) => serializeCheckRequest(checkRequest(spec));

type Expected =
  | { kind: "none" }
  | { kind: "token"; token: string; locations: string[] }
  | { kind: "invalid"; reason: string };

interface Case {
  name: string;
  request: RequestSpec;
  source?: CredentialSource;
  expected: Expected;
}

const TOKEN = "kg_example-token";

const cases: Case[] = [
  { name: "no credential anywhere", request: { json: { model: "m" } }, expected: { kind: "none" } },
  {
    name: "body api_key from raw_body",
    request: { json: { api_key: TOKEN } },
    expected: { kind: "token", token: TOKEN, locations: ["body"] },
  },
  {
    name: "body api_key from the body string (pack_as_bytes off)",
    request: { json: { api_key: TOKEN }, bodyAsString: true },
    expected: { kind: "token", token: TOKEN, locations: ["body"] },
  },
  {
    name: "body api_key with surrounding whitespace is trimmed",
    request: { json: { api_key: `  ${TOKEN}\n` } },
    expected: { kind: "token", token: TOKEN, locations: ["body"] },
  },
  {
    name: "bearer",
    request: { headers: { authorization: `Bearer ${TOKEN}` } },
    expected: { kind: "token", token: TOKEN, locations: ["bearer"] },
  },
  {
    name: "bearer scheme is case-insensitive",
    request: { headers: { authorization: `bEaReR   ${TOKEN}` } },
    expected: { kind: "token", token: TOKEN, locations: ["bearer"] },
  },
  {
    name: "bearer without a token is malformed",
    request: { headers: { authorization: "Bearer " } },
    expected: { kind: "invalid", reason: "credential_malformed" },
  },
  {
    name: "x-api-key",
    request: { headers: { "x-api-key": TOKEN } },
    expected: { kind: "token", token: TOKEN, locations: ["x-api-key"] },
  },
  {
    name: "basic: the password is the token",
    request: { headers: { authorization: basic("lightning", TOKEN) } },
    expected: { kind: "token", token: TOKEN, locations: ["basic"] },
  },
  {
    name: "basic: colons in the password are kept (split at the first)",
    request: { headers: { authorization: basic("user", "pa:ss:word") } },
    expected: { kind: "token", token: "pa:ss:word", locations: ["basic"] },
  },
  {
    name: "basic: empty user name is fine",
    request: { headers: { authorization: basic("", TOKEN) } },
    expected: { kind: "token", token: TOKEN, locations: ["basic"] },
  },
  {
    name: "basic without a colon is malformed",
    request: { headers: { authorization: `Basic ${Buffer.from("nocolon").toString("base64")}` } },
    expected: { kind: "invalid", reason: "credential_malformed" },
  },
  {
    name: "basic with bad base64 is malformed",
    request: { headers: { authorization: "Basic !!!not-base64" } },
    expected: { kind: "invalid", reason: "credential_malformed" },
  },
  {
    name: "basic with an empty password is malformed",
    request: { headers: { authorization: basic("user", "") } },
    expected: { kind: "invalid", reason: "credential_malformed" },
  },
  {
    name: "basic with nothing after the scheme is malformed",
    request: { headers: { authorization: "Basic" } },
    expected: { kind: "invalid", reason: "credential_malformed" },
  },
  {
    name: "another authorization scheme is not a credential",
    request: { headers: { authorization: "Digest abc" } },
    expected: { kind: "none" },
  },
  {
    name: "the same token in body and bearer is fine",
    request: { json: { api_key: TOKEN }, headers: { authorization: `Bearer ${TOKEN}` } },
    expected: { kind: "token", token: TOKEN, locations: ["body", "bearer"] },
  },
  {
    name: "two different credentials are a conflict",
    request: { json: { api_key: TOKEN }, headers: { "x-api-key": "kg_other" } },
    expected: { kind: "invalid", reason: "conflicting_credentials" },
  },
  {
    name: "bearer and x-api-key that differ are a conflict",
    request: { headers: { authorization: `Bearer ${TOKEN}`, "x-api-key": "sk-ant-x" } },
    expected: { kind: "invalid", reason: "conflicting_credentials" },
  },
  {
    name: "numeric api_key is a bad field",
    request: { json: { api_key: 42 } },
    expected: { kind: "invalid", reason: "invalid_api_key_field" },
  },
  {
    name: "object api_key is a bad field",
    request: { json: { api_key: { k: TOKEN } } },
    expected: { kind: "invalid", reason: "invalid_api_key_field" },
  },
  {
    name: "array api_key is a bad field",
    request: { json: { api_key: [TOKEN] } },
    expected: { kind: "invalid", reason: "invalid_api_key_field" },
  },
  {
    name: "null api_key means none",
    request: { json: { api_key: null } },
    expected: { kind: "none" },
  },
  {
    name: "empty api_key means none",
    request: { json: { api_key: "  " } },
    expected: { kind: "none" },
  },
  {
    name: "a JSON array body has no credential",
    request: { json: [TOKEN] },
    expected: { kind: "none" },
  },
  {
    name: "unparsable JSON where the body is a source is a bad request",
    request: { body: '{"api_key": ', headers: { "content-type": "application/json" } },
    expected: { kind: "invalid", reason: "invalid_json_body" },
  },
  {
    name: "unparsable JSON is ignored for header-only routes",
    request: {
      body: "{oops",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    },
    source: "header",
    expected: { kind: "token", token: TOKEN, locations: ["bearer"] },
  },
  {
    name: "a JSON body without content-type is still read",
    request: { body: JSON.stringify({ api_key: TOKEN }) },
    expected: { kind: "token", token: TOKEN, locations: ["body"] },
  },
  {
    name: "a form body is not JSON",
    request: {
      body: `api_key=${TOKEN}`,
      headers: { "content-type": "application/x-www-form-urlencoded" },
    },
    expected: { kind: "none" },
  },
  {
    name: "vendor JSON content types count",
    request: {
      body: JSON.stringify({ api_key: TOKEN }),
      headers: { "content-type": "application/vnd.api+json; charset=utf-8" },
    },
    expected: { kind: "token", token: TOKEN, locations: ["body"] },
  },
  {
    name: "a truncated body that cannot parse is not a bad request",
    request: {
      body: '{"messages": [',
      headers: { "content-type": "application/json", "x-envoy-auth-partial-body": "true" },
    },
    expected: { kind: "none" },
  },
  {
    name: "body-only routes ignore headers",
    request: { headers: { authorization: `Bearer ${TOKEN}` } },
    source: "body",
    expected: { kind: "none" },
  },
  {
    name: "header-only routes ignore the body",
    request: { json: { api_key: TOKEN } },
    source: "header",
    expected: { kind: "none" },
  },
  {
    name: "header_map with raw values (encode_raw_headers) works",
    request: { headers: { authorization: `Bearer ${TOKEN}` }, rawHeaders: true },
    expected: { kind: "token", token: TOKEN, locations: ["bearer"] },
  },
  {
    name: "header names are case-insensitive",
    request: { headers: { "X-Api-Key": TOKEN }, rawHeaders: true },
    expected: { kind: "token", token: TOKEN, locations: ["x-api-key"] },
  },
];

function summarise(extraction: Extraction): Expected {
  switch (extraction.kind) {
    case "none":
      return { kind: "none" };
    case "token":
      return { kind: "token", token: extraction.token, locations: [...extraction.locations] };
    case "invalid":
      return { kind: "invalid", reason: extraction.reason };
  }
}

for (const c of cases) {
  test(`extract: ${c.name}`, (t) => {
    const attributes = decodeCheckRequest(wire(c.request));
    t.deepEqual(summarise(extractCredential(attributes, c.source ?? "any")), c.expected);
  });
}

test("decode: empty or partial messages become empty attributes", (t) => {
  for (const input of [{}, { attributes: {} }, { attributes: { request: {} } }]) {
    const attributes = decodeCheckRequest(serializeCheckRequest(input));
    t.is(attributes.path, "");
    t.is(extractCredential(attributes, "any").kind, "none");
  }
});

test("decode: bytes that are not protobuf throw WireError, nothing else", (t) => {
  for (const bytes of [
    [0x0a, 0x05, 0x01], // attributes: length beyond the message
    [0x0a], // a key with no length
    [0x0b], // a group start (wire type 3)
    [0x00], // field number 0
    [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // 11-byte varint
    [0x0a, 0x03, 0x22, 0x05, 0x12], // a nested length beyond its parent
  ])
    t.throws(() => decodeCheckRequest(Buffer.from(bytes)), { instanceOf: WireError });
});

test("decode: query strings are not part of the path", (t) => {
  t.is(decodeCheckRequest(wire({ path: "/services/chat?x=/admin" })).path, "/services/chat");
});

test("decode: the partial-body header marks the body truncated", (t) => {
  t.true(
    decodeCheckRequest(wire({ headers: { "x-envoy-auth-partial-body": "true" } })).bodyTruncated,
  );
  t.false(
    decodeCheckRequest(wire({ headers: { "x-envoy-auth-partial-body": "false" } })).bodyTruncated,
  );
});

test("extract: a keygate token in the query string, a cookie or another header is out of place", (t) => {
  const elsewhere = (spec: RequestSpec) =>
    extractCredential(decodeCheckRequest(wire(spec)), "any").tokenElsewhere;
  t.true(elsewhere({ path: `/v1/messages?api_key=${TOKEN}` }));
  t.true(elsewhere({ headers: { cookie: `session=${TOKEN}` } }));
  t.true(elsewhere({ headers: { "proxy-authorization": `Bearer ${TOKEN}` } }));
  t.false(elsewhere({ headers: { authorization: `Bearer ${TOKEN}`, "x-api-key": TOKEN } }));
  t.false(elsewhere({ path: "/v1/messages?stream=true" }));
});

test("extract: a body in a charset keygate does not decode, or content-encoded, may hold a credential", (t) => {
  const view = (headers: Record<string, string>) =>
    extractCredential(decodeCheckRequest(wire({ body: '{"api+AF8-key":"x"}', headers })), "any")
      .body;
  t.deepEqual(view({ "content-type": "application/json; charset=utf-7" }), {
    kind: "other",
    mayHoldCredential: true,
  });
  t.deepEqual(view({ "content-type": "application/json", "content-encoding": "gzip" }), {
    kind: "other",
    mayHoldCredential: true,
  });
  t.is(view({ "content-type": 'application/json; charset="UTF-8"' }).kind, "object");
});
