/**
 * Which provider failures keygate answers in the provider's place (for held keys only;
 * process-service.ts decides that) and the typed body it answers with. Pure: headers,
 * body bytes and `now` in, a decision out.
 *
 * One table per provider shape, because the two formats differ in where the request id,
 * the reset times and the billing markers live:
 *   - Anthropic: `{"type":"error","error":{"type","message"},"request_id"}`, header
 *     `request-id`, `anthropic-ratelimit-*-reset` as RFC 3339 times; billing is a 402
 *     `billing_error` or a 400 `invalid_request_error` about the credit balance.
 *   - OpenAI: `{"error":{"message","type","code","param"}}`, header `x-request-id`,
 *     `x-ratelimit-reset-requests|tokens` as durations ("6m0s"); billing is a 429 whose
 *     type is `insufficient_quota` or whose code names a spend or credit limit.
 * A response whose shape cannot be told is read with both tables.
 */
import { looksSecret } from "../crypto/secret-shapes.js";
import { PROVIDER_ERROR_TYPES, type ProviderErrorType } from "../errors.js";

/** A typed failure and what it carries besides its type. */
export interface ProviderFailure {
  readonly type: ProviderErrorType;
  /** Whole seconds, RATE_LIMIT only, when the provider said when to retry. */
  readonly retryAfter?: number;
  readonly providerRequestId?: string;
}

/** What the response path must do with an error status from a held key. */
export type ErrorDisposition = "pass" | "decide-now" | "needs-body";

/** An error body larger than this is not read (provider error bodies are a few hundred bytes). */
export const MAX_ERROR_BODY_BYTES = 64 * 1024;
/** Retry hints further out than this are not believed. */
const MAX_RETRY_AFTER_SECONDS = 31 * 24 * 3600;
/** A provider request id is an opaque token: printable ASCII, bounded. */
const REQUEST_ID_PATTERN = /^[\x21-\x7e]{1,200}$/;

/** OpenAI error codes that mean no credit or a spend limit (all sent with 429). */
const OPENAI_BILLING_CODES = new Set([
  "insufficient_quota",
  "credit_balance_exhausted",
  "organization_spend_limit_exceeded",
  "project_spend_limit_exceeded",
  "organization_usage_limit_exceeded",
  "billing_hard_limit_reached",
]);

/** The fields of a provider error body keygate looks at; never sent on. */
interface ErrorFields {
  readonly type: string;
  readonly code: string;
  readonly message: string;
}

interface ProviderTable {
  readonly requestIdHeaders: readonly string[];
  isBilling(status: number, error: ErrorFields): boolean;
  /** Seconds until the exhausted limit resets, from the provider's own headers. */
  resetSeconds(headers: ReadonlyMap<string, string>, now: number): number | undefined;
}

const ANTHROPIC_LIMITS = ["requests", "tokens", "input-tokens", "output-tokens"];
const OPENAI_LIMITS = ["requests", "tokens"];
const OPENAI_LIMIT_HEADER = /^x-ratelimit-(?:limit|remaining|reset)-(?:requests|tokens)$/;

const ANTHROPIC: ProviderTable = {
  requestIdHeaders: ["request-id"],
  isBilling: (status, error) =>
    error.type === "billing_error" ||
    (status === 400 &&
      error.type === "invalid_request_error" &&
      /credit balance/i.test(error.message)),
  resetSeconds: (headers, now) =>
    soonestExhaustedReset(
      ANTHROPIC_LIMITS.map((limit) => [
        headers.get(`anthropic-ratelimit-${limit}-remaining`),
        secondsUntilDate(headers.get(`anthropic-ratelimit-${limit}-reset`), now),
      ]),
    ),
};

const OPENAI: ProviderTable = {
  requestIdHeaders: ["x-request-id"],
  isBilling: (_status, error) =>
    OPENAI_BILLING_CODES.has(error.type) || OPENAI_BILLING_CODES.has(error.code),
  resetSeconds: (headers) =>
    soonestExhaustedReset(
      OPENAI_LIMITS.map((limit) => [
        headers.get(`x-ratelimit-remaining-${limit}`),
        durationSeconds(headers.get(`x-ratelimit-reset-${limit}`)),
      ]),
    ),
};

const EITHER: ProviderTable = {
  requestIdHeaders: ["request-id", "x-request-id"],
  isBilling: (status, error) =>
    ANTHROPIC.isBilling(status, error) || OPENAI.isBilling(status, error),
  resetSeconds: (headers, now) =>
    ANTHROPIC.resetSeconds(headers, now) ?? OPENAI.resetSeconds(headers, now),
};

/** The table for a response, from headers only these providers send. */
function tableFor(headers: ReadonlyMap<string, string>): ProviderTable {
  for (const name of headers.keys()) {
    if (name === "request-id" || name.startsWith("anthropic-")) return ANTHROPIC;
    // Not any x-ratelimit-*: Envoy's own local rate limit sends x-ratelimit-limit/-reset.
    if (name.startsWith("openai-") || OPENAI_LIMIT_HEADER.test(name)) return OPENAI;
  }
  return EITHER;
}

/**
 * Of the limits whose remaining count is 0, the one that resets last (the request cannot
 * pass before it); when none says 0, the soonest reset.
 */
function soonestExhaustedReset(
  limits: readonly (readonly [remaining: string | undefined, seconds: number | undefined])[],
): number | undefined {
  const known = limits.filter(
    (limit): limit is [string | undefined, number] => limit[1] !== undefined,
  );
  const exhausted = known.filter(([remaining]) => remaining?.trim() === "0").map(([, s]) => s);
  if (exhausted.length > 0) return Math.max(...exhausted);
  return known.length > 0 ? Math.min(...known.map(([, s]) => s)) : undefined;
}

function bounded(seconds: number): number | undefined {
  if (!Number.isFinite(seconds) || seconds > MAX_RETRY_AFTER_SECONDS) return undefined;
  return Math.max(0, Math.ceil(seconds));
}

/** IMF-fixdate (RFC 9110's HTTP date) and RFC 3339: Date.parse alone takes "-5" for a year. */
const HTTP_DATE = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;
const RFC_3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

/** An RFC 3339 or HTTP date as whole seconds from `now` (never negative). */
function secondsUntilDate(value: string | undefined, now: number): number | undefined {
  const text = value?.trim() ?? "";
  if (!HTTP_DATE.test(text) && !RFC_3339.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : bounded((at - now) / 1000);
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
const DURATION_WHOLE = /^(?:\d+(?:\.\d+)?(?:ms|h|m|s))+$/;
const UNIT_SECONDS: Record<string, number> = { h: 3600, m: 60, s: 1, ms: 0.001 };

/** An OpenAI reset duration ("1s", "6m0s", "20ms", "1h2m3.5s") in whole seconds. */
function durationSeconds(value: string | undefined): number | undefined {
  const text = value?.trim() ?? "";
  if (text === "" || text.length > 32 || !DURATION_WHOLE.test(text)) return undefined;
  let seconds = 0;
  for (const [, amount, unit] of text.matchAll(DURATION_PART))
    seconds += Number(amount) * (UNIT_SECONDS[unit as string] ?? 0);
  return bounded(seconds);
}

/** retry-after: delay-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function retryAfterSeconds(value: string | undefined, now: number): number | undefined {
  const text = value?.trim() ?? "";
  if (/^\d{1,10}$/.test(text)) return bounded(Number(text));
  return secondsUntilDate(text === "" ? undefined : text, now);
}

function text(value: unknown): string {
  return typeof value === "string" ? value.slice(0, 1000) : "";
}

/** The error object of either format, or empty fields when the body is not one. */
function errorFields(body: Buffer | undefined): ErrorFields {
  const none = { type: "", code: "", message: "" };
  if (body === undefined || body.length === 0 || body.length > MAX_ERROR_BODY_BYTES) return none;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    return none;
  }
  const error = (parsed as { error?: unknown } | null)?.error;
  if (typeof error !== "object" || error === null) return none;
  const fields = error as Record<string, unknown>;
  return { type: text(fields.type), code: text(fields.code), message: text(fields.message) };
}

/**
 * Whether an error status needs a decision, and whether its body is needed for it: 400
 * and 429 may be billing errors, told apart by the body; 401, 402 and 403 are decided
 * by status. Other statuses (404, 500, 529 ...) pass untouched.
 */
export function errorDisposition(status: number, hasBody: boolean): ErrorDisposition {
  if (status === 401 || status === 402 || status === 403) return "decide-now";
  if (status === 429) return hasBody ? "needs-body" : "decide-now";
  if (status === 400) return hasBody ? "needs-body" : "pass";
  return "pass";
}

function providerRequestId(
  table: ProviderTable,
  headers: ReadonlyMap<string, string>,
  envoyRequestId: string,
): string | undefined {
  for (const name of table.requestIdHeaders) {
    const value = headers.get(name)?.trim();
    // An upstream that echoes Envoy's x-request-id has told us nothing new, and one that
    // echoes a key in it must not have it passed on.
    if (
      value !== undefined &&
      REQUEST_ID_PATTERN.test(value) &&
      value !== envoyRequestId &&
      !looksSecret(value)
    )
      return value;
  }
  return undefined;
}

/**
 * The typed failure for a provider's error response, or undefined when it passes untouched.
 * @param body the whole error body, or undefined when it was not read (or is encoded).
 */
export function classifyProviderError(
  status: number,
  headers: ReadonlyMap<string, string>,
  body: Buffer | undefined,
  now: number,
  envoyRequestId: string,
): ProviderFailure | undefined {
  const table = tableFor(headers);
  const error = errorFields(body);
  let type: ProviderErrorType | undefined;
  if (status === 401 || status === 403) type = "AUTH_ERROR";
  else if (status === 402 || ((status === 400 || status === 429) && table.isBilling(status, error)))
    type = "BILLING";
  else if (status === 429) type = "RATE_LIMIT";
  if (type === undefined) return undefined;
  const id = providerRequestId(table, headers, envoyRequestId);
  const retryAfter =
    type === "RATE_LIMIT"
      ? (retryAfterSeconds(headers.get("retry-after"), now) ?? table.resetSeconds(headers, now))
      : undefined;
  return {
    type,
    ...(retryAfter === undefined ? {} : { retryAfter }),
    ...(id === undefined ? {} : { providerRequestId: id }),
  };
}

/** The HTTP answer for a failure: catalogue status, JSON body (schemas/denial.schema.json). */
export function providerErrorResponse(
  failure: ProviderFailure,
  envoyRequestId: string,
): { status: number; headers: [string, string][]; body: string } {
  const spec = PROVIDER_ERROR_TYPES[failure.type];
  const headers: [string, string][] = [
    ["content-type", "application/json"],
    ["cache-control", "no-store"],
  ];
  if (failure.retryAfter !== undefined) headers.push(["retry-after", String(failure.retryAfter)]);
  const body = {
    type: failure.type,
    message: spec.message,
    request_id: envoyRequestId,
    ...(failure.retryAfter === undefined ? {} : { retry_after: failure.retryAfter }),
    ...(failure.providerRequestId === undefined
      ? {}
      : { provider_request_id: failure.providerRequestId }),
  };
  return { status: spec.httpStatus, headers, body: JSON.stringify(body) };
}
