/**
 * The provider error mapping as a table of recorded responses (Anthropic and OpenAI
 * formats, fixtures written here): status, headers and body in, the typed failure out;
 * then the retry hints in each format, and the typed body itself (schema-valid, never the
 * provider's text).
 */

import { Ajv } from "ajv";
import test from "ava";
import fc from "fast-check";
import { PROVIDER_ERROR_TYPES } from "../../server/errors.js";
import {
  classifyProviderError,
  type ErrorDisposition,
  errorDisposition,
  type ProviderFailure,
  providerErrorResponse,
  retryAfterSeconds,
} from "../../server/extproc/provider-errors.js";
import { readSchema } from "../../server/paths.js";

const NOW = Date.parse("2026-03-01T12:00:00Z");
const ENVOY_ID = "5f0c7c1e-envoy-request-id";
const validateBody = new Ajv().compile(readSchema("denial.schema.json"));

const anthropic = (type: string, message: string) =>
  JSON.stringify({ type: "error", error: { type, message }, request_id: "req_in_body" });
const openai = (type: string, code: string | null, message = "m") =>
  JSON.stringify({ error: { message, type, param: null, code } });

interface Case {
  readonly name: string;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body?: string;
  readonly expected: ProviderFailure | undefined;
}

const CASES: Case[] = [
  {
    name: "Anthropic 401 authentication_error",
    status: 401,
    headers: { "request-id": "req_011A" },
    body: anthropic("authentication_error", "invalid x-api-key"),
    expected: { type: "AUTH_ERROR", providerRequestId: "req_011A" },
  },
  {
    name: "Anthropic 403 permission_error",
    status: 403,
    headers: { "request-id": "req_011B" },
    body: anthropic("permission_error", "Your API key does not have permission"),
    expected: { type: "AUTH_ERROR", providerRequestId: "req_011B" },
  },
  {
    name: "Anthropic 402 billing_error",
    status: 402,
    headers: { "request-id": "req_011C" },
    body: anthropic("billing_error", "There is an issue with your billing"),
    expected: { type: "BILLING", providerRequestId: "req_011C" },
  },
  {
    name: "Anthropic 400 credit balance too low",
    status: 400,
    headers: { "request-id": "req_011D", "anthropic-organization-id": "org" },
    body: anthropic(
      "invalid_request_error",
      "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    expected: { type: "BILLING", providerRequestId: "req_011D" },
  },
  {
    name: "Anthropic 400 ordinary invalid_request_error passes",
    status: 400,
    headers: { "request-id": "req_011E" },
    body: anthropic("invalid_request_error", "messages: field required"),
    expected: undefined,
  },
  {
    name: "Anthropic 429 with retry-after seconds",
    status: 429,
    headers: { "request-id": "req_011F", "retry-after": "12" },
    body: anthropic("rate_limit_error", "rate limited"),
    expected: { type: "RATE_LIMIT", retryAfter: 12, providerRequestId: "req_011F" },
  },
  {
    name: "Anthropic 429 without retry-after: the exhausted limit's reset time",
    status: 429,
    headers: {
      "request-id": "req_011G",
      "anthropic-ratelimit-requests-remaining": "40",
      "anthropic-ratelimit-requests-reset": "2026-03-01T12:00:05Z",
      "anthropic-ratelimit-tokens-remaining": "0",
      "anthropic-ratelimit-tokens-reset": "2026-03-01T12:00:42.300Z",
    },
    body: anthropic("rate_limit_error", "rate limited"),
    expected: { type: "RATE_LIMIT", retryAfter: 43, providerRequestId: "req_011G" },
  },
  {
    name: "Anthropic 529 overloaded passes",
    status: 529,
    headers: { "request-id": "req_011H" },
    body: anthropic("overloaded_error", "Overloaded"),
    expected: undefined,
  },
  {
    name: "OpenAI 401 invalid_api_key",
    status: 401,
    headers: { "x-request-id": "req_abc1", "openai-processing-ms": "3" },
    body: openai(
      "invalid_request_error",
      "invalid_api_key",
      "Incorrect API key provided: sk-...abcd",
    ),
    expected: { type: "AUTH_ERROR", providerRequestId: "req_abc1" },
  },
  {
    name: "OpenAI 429 insufficient_quota",
    status: 429,
    headers: { "x-request-id": "req_abc2" },
    body: openai("insufficient_quota", "insufficient_quota", "You exceeded your current quota"),
    expected: { type: "BILLING", providerRequestId: "req_abc2" },
  },
  {
    name: "OpenAI 429 spend limit (type insufficient_quota, a finer code)",
    status: 429,
    headers: { "x-request-id": "req_abc3" },
    body: openai("insufficient_quota", "project_spend_limit_exceeded"),
    expected: { type: "BILLING", providerRequestId: "req_abc3" },
  },
  {
    name: "OpenAI 429 rate_limit_exceeded: the exhausted limit's reset duration",
    status: 429,
    headers: {
      "x-request-id": "req_abc4",
      "x-ratelimit-remaining-requests": "0",
      "x-ratelimit-reset-requests": "1m30.5s",
      "x-ratelimit-remaining-tokens": "9000",
      "x-ratelimit-reset-tokens": "20ms",
    },
    body: openai("requests", "rate_limit_exceeded", "Rate limit reached for requests"),
    expected: { type: "RATE_LIMIT", retryAfter: 91, providerRequestId: "req_abc4" },
  },
  {
    name: "OpenAI 429 with an HTTP-date retry-after",
    status: 429,
    headers: { "x-request-id": "req_abc5", "retry-after": "Sun, 01 Mar 2026 12:01:00 GMT" },
    body: openai("requests", "rate_limit_exceeded"),
    expected: { type: "RATE_LIMIT", retryAfter: 60, providerRequestId: "req_abc5" },
  },
  {
    name: "OpenAI 400 passes",
    status: 400,
    headers: { "x-request-id": "req_abc6" },
    body: openai("invalid_request_error", null, "bad"),
    expected: undefined,
  },
  {
    name: "a 429 whose body was not read (gzip) is a RATE_LIMIT without a hint",
    status: 429,
    headers: {},
    expected: { type: "RATE_LIMIT" },
  },
  {
    name: "an upstream echoing Envoy's request id has no provider id",
    status: 401,
    headers: { "x-request-id": ENVOY_ID },
    expected: { type: "AUTH_ERROR" },
  },
  {
    name: "a request id with control characters or spaces is dropped",
    status: 403,
    headers: { "request-id": "req 1\u0007" },
    expected: { type: "AUTH_ERROR" },
  },
  {
    name: "a request id shaped like a key or token is never passed on",
    status: 401,
    headers: { "request-id": "sk-ant-api03-echoed", "x-request-id": "kg_echoed" },
    expected: { type: "AUTH_ERROR" },
  },
  {
    name: "500 passes",
    status: 500,
    headers: { "request-id": "req_x" },
    body: anthropic("api_error", "Internal server error"),
    expected: undefined,
  },
];

for (const c of CASES) {
  test(`classify: ${c.name}`, (t) => {
    const body = c.body === undefined ? undefined : Buffer.from(c.body);
    const failure = classifyProviderError(
      c.status,
      new Map(Object.entries(c.headers)),
      body,
      NOW,
      ENVOY_ID,
    );
    t.deepEqual(failure, c.expected);
  });
}

test("disposition: only 400 and 429 need the body, and only when there is one", (t) => {
  const table: [number, boolean, ErrorDisposition][] = [
    [401, true, "decide-now"],
    [402, true, "decide-now"],
    [403, false, "decide-now"],
    [429, true, "needs-body"],
    [429, false, "decide-now"],
    [400, true, "needs-body"],
    [400, false, "pass"],
    [404, true, "pass"],
    [500, true, "pass"],
    [529, true, "pass"],
  ];
  for (const [status, hasBody, expected] of table)
    t.is(errorDisposition(status, hasBody), expected, `${status} ${hasBody}`);
});

test("retry-after: seconds, HTTP dates, and nothing believed from nonsense", (t) => {
  t.is(retryAfterSeconds("0", NOW), 0);
  t.is(retryAfterSeconds(" 120 ", NOW), 120);
  t.is(retryAfterSeconds("Sun, 01 Mar 2026 11:00:00 GMT", NOW), 0, "a past date: retry now");
  t.is(retryAfterSeconds("Sun, 01 Mar 2026 12:00:01 GMT", NOW), 1);
  for (const nonsense of ["", "-5", "1e9", "soon", "99999999999", "9".repeat(400)])
    t.is(retryAfterSeconds(nonsense, NOW), undefined, nonsense);
});

test("the typed answer: catalogue status, schema-valid body, retry-after header, no provider text", (t) => {
  for (const c of CASES) {
    const body = c.body === undefined ? undefined : Buffer.from(c.body);
    const failure = classifyProviderError(
      c.status,
      new Map(Object.entries(c.headers)),
      body,
      NOW,
      ENVOY_ID,
    );
    if (failure === undefined) continue;
    const answer = providerErrorResponse(failure, ENVOY_ID);
    t.is(answer.status, PROVIDER_ERROR_TYPES[failure.type].httpStatus);
    const parsed = JSON.parse(answer.body) as Record<string, unknown>;
    t.true(validateBody(parsed), JSON.stringify(validateBody.errors));
    t.is(parsed.request_id, ENVOY_ID);
    t.false(answer.body.includes("sk-"), c.name);
    t.false(answer.body.includes("req_in_body"), c.name);
    const retryHeader = answer.headers.find(([name]) => name === "retry-after")?.[1];
    t.is(retryHeader, failure.retryAfter === undefined ? undefined : String(failure.retryAfter));
  }
});

test("hostile bodies and headers: never a throw, always a schema-valid answer or none", (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom(400, 401, 402, 403, 429),
      fc.dictionary(
        fc.constantFrom(
          "retry-after",
          "request-id",
          "x-request-id",
          "anthropic-ratelimit-tokens-reset",
          "x-ratelimit-reset-tokens",
          "x-ratelimit-remaining-tokens",
        ),
        fc.string({ maxLength: 80 }),
      ),
      fc.oneof(fc.string({ maxLength: 300 }), fc.json({ maxDepth: 3 })),
      (status, headers, body) => {
        const failure = classifyProviderError(
          status,
          new Map(Object.entries(headers)),
          Buffer.from(body),
          NOW,
          ENVOY_ID,
        );
        if (failure === undefined) return;
        const parsed = JSON.parse(providerErrorResponse(failure, ENVOY_ID).body) as unknown;
        t.true(validateBody(parsed), JSON.stringify(validateBody.errors));
      },
    ),
    { numRuns: 1000 },
  );
});
