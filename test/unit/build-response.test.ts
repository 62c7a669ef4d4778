import { Ajv } from "ajv";
import test from "ava";
import { buildResponse, type CheckResponse } from "../../server/auth/build-response.js";
import { DENIAL_REASONS, DENIAL_TYPES, type DenialReason } from "../../server/errors.js";
import { readSchema } from "../../server/paths.js";
import { allowDecision } from "../helpers/check-service.js";

const OPTIONS = {
  upstreamHeader: "x-api-key",
  clientIdHeader: "x-client-id",
  metadataUpstreamKey: false,
};
const CONTEXT = { requestId: "req-1", generation: 7 };
const validateDenial = new Ajv().compile(readSchema("denial.schema.json"));

const allow = allowDecision;

function headersOf(response: CheckResponse): Record<string, string> {
  return Object.fromEntries(
    (response.ok_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
  );
}

test("swap: sets the upstream key and client id, removes every other credential header", (t) => {
  const response = buildResponse(allow({}), OPTIONS, CONTEXT);
  t.is(response.status.code, 0);
  t.deepEqual(headersOf(response), { "x-api-key": "sk-up", "x-client-id": "c1" });
  t.deepEqual(response.ok_response?.headers_to_remove, ["authorization"]);
  t.true(
    response.ok_response?.headers.every((h) => h.append_action === "OVERWRITE_IF_EXISTS_OR_ADD"),
  );
});

test("swap over x-api-key overwrites it instead of removing it", (t) => {
  const response = buildResponse(allow({}), OPTIONS, CONTEXT);
  t.is(headersOf(response)["x-api-key"], "sk-up");
  t.false(response.ok_response?.headers_to_remove.includes("x-api-key"));
});

test("no upstream key: the credential headers are removed so the upstream uses its own key", (t) => {
  const response = buildResponse(allow({ upstreamKey: null }), OPTIONS, CONTEXT);
  t.deepEqual(headersOf(response), { "x-client-id": "c1" });
  t.deepEqual(response.ok_response?.headers_to_remove?.sort(), ["authorization", "x-api-key"]);
});

test("anonymous and byo passes remove a client-supplied client id and upstream header", (t) => {
  for (const authMode of ["anonymous", "byo"] as const) {
    const response = buildResponse(
      allow({ authMode, clientId: null, upstreamKey: null }),
      { ...OPTIONS, upstreamHeader: "x-provider-key" },
      CONTEXT,
    );
    t.deepEqual(headersOf(response), {});
    t.deepEqual(response.ok_response?.headers_to_remove?.sort(), [
      "authorization",
      "x-api-key",
      "x-client-id",
      "x-provider-key",
    ]);
  }
});

test("a provider key the caller brought in the upstream header is forwarded, not removed", (t) => {
  const response = buildResponse(
    allow({ authMode: "byo", clientId: null, upstreamKey: null, forward: ["x-api-key"] }),
    OPTIONS,
    CONTEXT,
  );
  t.deepEqual(headersOf(response), {});
  t.deepEqual(response.ok_response?.headers_to_remove?.sort(), ["authorization", "x-client-id"]);
});

test("a provider key brought as a Bearer token is forwarded in authorization", (t) => {
  const response = buildResponse(
    allow({ authMode: "byo", clientId: null, upstreamKey: null, forward: ["bearer"] }),
    OPTIONS,
    CONTEXT,
  );
  t.deepEqual(response.ok_response?.headers_to_remove?.sort(), ["x-api-key", "x-client-id"]);
});

test("an internal client's request reaches the upstream without the upstream header", (t) => {
  const response = buildResponse(
    allow({ authMode: "internal", upstreamKey: null }),
    { ...OPTIONS, upstreamHeader: "x-provider-key" },
    CONTEXT,
  );
  t.deepEqual(headersOf(response), { "x-client-id": "c1" });
  t.deepEqual(response.ok_response?.headers_to_remove?.sort(), [
    "authorization",
    "x-api-key",
    "x-provider-key",
  ]);
});

test("configured header names are used", (t) => {
  const response = buildResponse(
    allow({}),
    { ...OPTIONS, upstreamHeader: "x-llm-key", clientIdHeader: "x-caller" },
    CONTEXT,
  );
  t.deepEqual(headersOf(response), { "x-llm-key": "sk-up", "x-caller": "c1" });
});

test("dynamic metadata carries client id, auth mode and generation, and the key only when asked", (t) => {
  const plain = buildResponse(allow({}), OPTIONS, CONTEXT).dynamic_metadata?.fields;
  t.deepEqual(plain, {
    client_id: { stringValue: "c1" },
    auth_mode: { stringValue: "known" },
    keystore_generation: { numberValue: 7 },
  });
  const withKey = buildResponse(allow({}), { ...OPTIONS, metadataUpstreamKey: true }, CONTEXT)
    .dynamic_metadata?.fields;
  t.deepEqual(withKey?.upstream_key, { stringValue: "sk-up" });
});

test("dry-run would-deny is visible in metadata", (t) => {
  const response = buildResponse(
    allow({
      authMode: "anonymous",
      clientId: null,
      upstreamKey: null,
      wouldDeny: "credential_unknown",
    }),
    OPTIONS,
    CONTEXT,
  );
  t.deepEqual(response.dynamic_metadata?.fields.would_deny, { stringValue: "UNAUTHORIZED" });
});

for (const reason of Object.keys(DENIAL_REASONS) as DenialReason[]) {
  test(`deny ${reason}: catalogue status, gRPC code and a schema-valid JSON body`, (t) => {
    const response = buildResponse({ outcome: "deny", reason, clientId: null }, OPTIONS, CONTEXT);
    const type = DENIAL_REASONS[reason];
    const spec = DENIAL_TYPES[type];
    t.is(response.denied_response?.status.code, spec.httpStatus);
    t.is(response.status.code, spec.httpStatus === 401 ? 16 : 7);
    const body = JSON.parse(response.denied_response?.body ?? "") as unknown;
    t.true(validateDenial(body), JSON.stringify(validateDenial.errors));
    t.deepEqual(body, { type, message: spec.message, request_id: "req-1" });
    const headers = Object.fromEntries(
      (response.denied_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
    );
    t.is(headers["content-type"], "application/json");
    t.is("www-authenticate" in headers, spec.httpStatus === 401);
    t.is(response.ok_response, undefined);
  });
}

test("unknown and revoked tokens get the same public answer", (t) => {
  const bodies = (
    ["credential_unknown", "credential_expired", "client_disabled", "credential_checksum"] as const
  ).map(
    (reason) =>
      buildResponse({ outcome: "deny", reason, clientId: null }, OPTIONS, CONTEXT).denied_response
        ?.body,
  );
  t.is(new Set(bodies).size, 1);
});
