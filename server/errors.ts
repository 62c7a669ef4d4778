/**
 * The one catalogue of denials. Every denial keygate can send is listed here with its
 * HTTP status, gRPC code and public message; the denial body, metric labels, logs and
 * the README's error table all derive from it (a test keeps the README in step).
 */
import { GrpcStatus } from "./grpc/grpc-status.js";

export interface DenialTypeSpec {
  /** HTTP status Envoy sends to the client. */
  readonly httpStatus: number;
  /** gRPC status in CheckResponse.status: 16 for 401, 7 otherwise, so Envoy denies even with failure_mode_allow. */
  readonly grpcCode: number;
  /** Public message; never echoes a credential, never tells an unknown token from a revoked one. */
  readonly message: string;
  /** One line for the README's error table: when this type is sent. */
  readonly when: string;
}

export const DENIAL_TYPES = {
  BAD_REQUEST: {
    httpStatus: 400,
    grpcCode: GrpcStatus.PERMISSION_DENIED,
    message: "The request could not be authorized because it is malformed.",
    when: "two different credentials in one request, a JSON body that cannot be parsed where it must be read, or a keygate token or api_key where keygate cannot read it on a route that would pass it on",
  },
  UNAUTHORIZED: {
    httpStatus: 401,
    grpcCode: GrpcStatus.UNAUTHENTICATED,
    message: "A valid API key is required.",
    when: "no credential (enforce), or an unknown, revoked, expired, disabled or malformed one",
  },
  FORBIDDEN: {
    httpStatus: 403,
    grpcCode: GrpcStatus.PERMISSION_DENIED,
    message: "This API key is not allowed to make this request.",
    when: "the path is outside the client's routes, or the body's model outside its models",
  },
  PAYLOAD_TOO_LARGE: {
    httpStatus: 413,
    grpcCode: GrpcStatus.PERMISSION_DENIED,
    message: "The request body is too large to be authorized.",
    when: "Envoy truncated the body and no credential was found in what it sent",
  },
  RATE_LIMITED: {
    httpStatus: 429,
    grpcCode: GrpcStatus.PERMISSION_DENIED,
    message: "Too many requests for this API key; slow down and retry later.",
    when: "too many failed credentials from one source (KEYGATE_THROTTLE_FAILURES), or Envoy's per-client local rate limit (envoy/envoy.yaml)",
  },
  QUOTA_EXCEEDED: {
    httpStatus: 429,
    grpcCode: GrpcStatus.PERMISSION_DENIED,
    message: "This API key has used its token budget; retry after the budget resets.",
    when: "the client's `budget` of tokens for the current day or month (UTC) is spent; the request that crossed it completed",
  },
  KEY_UNAVAILABLE: {
    httpStatus: 503,
    grpcCode: GrpcStatus.PERMISSION_DENIED,
    message: "The upstream credential for this client is unavailable.",
    when: "the client's upstream key cannot be resolved (decryption failed, master key or env var missing)",
  },
  UNAVAILABLE: {
    httpStatus: 503,
    grpcCode: GrpcStatus.PERMISSION_DENIED,
    message: "The authorization service is not ready.",
    when: "no keystore generation has ever been loaded (also sent by Envoy when keygate is unreachable)",
  },
} as const satisfies Record<string, DenialTypeSpec>;

export type DenialType = keyof typeof DENIAL_TYPES;

/**
 * Why a request is denied, finer than the type: logged and counted, never sent to the
 * client (the client sees only the type's message). Several reasons share a type so that
 * a caller cannot tell an unknown token from a revoked one.
 */
export const DENIAL_REASONS = {
  credential_missing: "UNAUTHORIZED",
  credential_malformed: "UNAUTHORIZED",
  credential_checksum: "UNAUTHORIZED",
  credential_unknown: "UNAUTHORIZED",
  credential_expired: "UNAUTHORIZED",
  client_disabled: "UNAUTHORIZED",
  route_not_allowed: "FORBIDDEN",
  model_not_allowed: "FORBIDDEN",
  conflicting_credentials: "BAD_REQUEST",
  invalid_json_body: "BAD_REQUEST",
  invalid_api_key_field: "BAD_REQUEST",
  credential_unreadable: "BAD_REQUEST",
  body_truncated: "PAYLOAD_TOO_LARGE",
  too_many_failures: "RATE_LIMITED",
  budget_exhausted: "QUOTA_EXCEEDED",
  key_unavailable: "KEY_UNAVAILABLE",
  keystore_unavailable: "UNAVAILABLE",
} as const satisfies Record<string, DenialType>;

export type DenialReason = keyof typeof DENIAL_REASONS;

/**
 * Failures of the provider behind Apollo, answered in keygate's place on the response path
 * (server/extproc/) for requests where keygate swapped in a held upstream key. They are
 * not keygate denials: the caller's own credential was accepted, the key keygate holds for
 * it failed, so they never reuse UNAUTHORIZED or RATE_LIMITED (keygate's own throttle).
 * Same body shape (schemas/denial.schema.json), plus `provider_request_id`.
 */
export interface ProviderErrorTypeSpec {
  /** HTTP status the client gets instead of the provider's. */
  readonly httpStatus: number;
  readonly message: string;
  readonly when: string;
}

export const PROVIDER_ERROR_TYPES = {
  AUTH_ERROR: {
    // 502, not 401: the caller's credential is fine, the gateway's upstream one is not,
    // and a 401 would send clients to rotate a key that works.
    httpStatus: 502,
    message: "The provider rejected the upstream key held for this client.",
    when: "the provider answered 401 or 403 to a request sent with the client's held key",
  },
  RATE_LIMIT: {
    httpStatus: 429,
    message: "The provider is rate limiting the upstream key held for this client; retry later.",
    when: "the provider answered 429 (not a billing error); `retry_after` (seconds) from its retry-after or rate-limit reset headers, also sent as retry-after",
  },
  BILLING: {
    // 402, not 429: SDKs retry 429s, and no retry helps until someone pays.
    httpStatus: 402,
    message: "The provider refused the upstream key held for this client for billing reasons.",
    when: "the provider reported no credit or quota: Anthropic billing_error or a too-low credit balance, OpenAI insufficient_quota or a spend limit, or a 402",
  },
} as const satisfies Record<string, ProviderErrorTypeSpec>;

export type ProviderErrorType = keyof typeof PROVIDER_ERROR_TYPES;

/** The type a reason is reported as. */
export function denialTypeOf(reason: DenialReason): DenialType {
  return DENIAL_REASONS[reason];
}
