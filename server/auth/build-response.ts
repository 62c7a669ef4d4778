/**
 * Response building: a Decision becomes Envoy's CheckResponse (field names as in Envoy's
 * protos; check-response-wire.ts encodes it). Allows carry header mutations and dynamic metadata;
 * denials carry the catalogue's status, gRPC code and a typed JSON body.
 */
import { DENIAL_TYPES, type DenialType, denialTypeOf } from "../errors.js";
import type { Decision } from "./decide.js";
import { CREDENTIAL_HEADERS, type CredentialLocation } from "./extract-credential.js";

export interface ResponseOptions {
  readonly upstreamHeader: string;
  readonly clientIdHeader: string;
  /** Also expose the upstream key in dynamic metadata (gateways that read it there). */
  readonly metadataUpstreamKey: boolean;
}

export interface ResponseContext {
  readonly requestId: string;
  readonly generation: number | null;
}

/** The JSON body of every denial (schemas/denial.schema.json). */
export interface DenialBody {
  readonly type: DenialType;
  readonly message: string;
  readonly request_id: string;
  /** Seconds until a retry may succeed (a spent budget's reset); also the retry-after header. */
  readonly retry_after?: number;
}

type HeaderValueOption = {
  header: { key: string; value: string };
  append_action: "OVERWRITE_IF_EXISTS_OR_ADD";
};

/** One google.protobuf.Value of the dynamic metadata: a string, number or bool. */
type StructValue = { stringValue: string } | { numberValue: number } | { boolValue: boolean };

export interface CheckResponse {
  status: { code: number; message?: string };
  ok_response?: { headers: HeaderValueOption[]; headers_to_remove: string[] };
  denied_response?: { status: { code: number }; headers: HeaderValueOption[]; body: string };
  dynamic_metadata?: { fields: Record<string, StructValue> };
}

const HEADER_OF: Record<CredentialLocation, string | null> = {
  body: null,
  bearer: "authorization",
  basic: "authorization",
  authorization: "authorization",
  "x-api-key": "x-api-key",
};

function setHeader(key: string, value: string): HeaderValueOption {
  return { header: { key, value }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" };
}

function metadata(
  entries: Record<string, string | number | boolean | null>,
): CheckResponse["dynamic_metadata"] {
  const fields: Record<string, StructValue> = {};
  for (const key of Object.keys(entries)) {
    const value = entries[key];
    if (typeof value === "string") fields[key] = { stringValue: value };
    else if (typeof value === "number") fields[key] = { numberValue: value };
    else if (typeof value === "boolean") fields[key] = { boolValue: value };
  }
  return { fields };
}

/** The denial body for a type; also used by tests and docs to check Envoy's local replies. */
export function denialBody(type: DenialType, requestId: string): DenialBody {
  return { type, message: DENIAL_TYPES[type].message, request_id: requestId };
}

function buildAllow(
  decision: Extract<Decision, { outcome: "allow" }>,
  options: ResponseOptions,
  context: ResponseContext,
): CheckResponse {
  const headers: HeaderValueOption[] = [];
  if (decision.upstreamKey !== null)
    headers.push(setHeader(options.upstreamHeader, decision.upstreamKey));
  // Identity cannot be spoofed: overwrite with the authenticated id, or remove what the client sent.
  if (decision.clientId !== null)
    headers.push(setHeader(options.clientIdHeader, decision.clientId));
  // Credential headers and the upstream header are keygate's alone: set by it, a provider
  // key the caller brought passed on, or removed.
  const kept = new Set<string>();
  for (const header of headers) kept.add(header.header.key);
  for (const location of decision.forward) kept.add(HEADER_OF[location] ?? "");
  const remove: string[] = [];
  for (const header of [...CREDENTIAL_HEADERS, options.upstreamHeader, options.clientIdHeader])
    if (!kept.has(header) && !remove.includes(header)) remove.push(header);
  return {
    status: { code: 0 },
    ok_response: { headers, headers_to_remove: remove },
    dynamic_metadata: metadata({
      client_id: decision.clientId,
      auth_mode: decision.authMode,
      keystore_generation: context.generation,
      would_deny: decision.wouldDeny === null ? null : denialTypeOf(decision.wouldDeny),
      upstream_key: options.metadataUpstreamKey ? decision.upstreamKey : null,
    }),
  };
}

function buildDeny(
  decision: Extract<Decision, { outcome: "deny" }>,
  context: ResponseContext,
): CheckResponse {
  const type = denialTypeOf(decision.reason);
  const spec = DENIAL_TYPES[type];
  const headers = [setHeader("content-type", "application/json")];
  if (spec.httpStatus === 401)
    headers.push(setHeader("www-authenticate", 'Bearer realm="keygate"'));
  const body: DenialBody = denialBody(type, context.requestId);
  const { retryAfter } = decision;
  if (retryAfter !== undefined) headers.push(setHeader("retry-after", String(retryAfter)));
  return {
    status: { code: spec.grpcCode, message: type },
    denied_response: {
      status: { code: spec.httpStatus },
      headers,
      body: JSON.stringify(retryAfter === undefined ? body : { ...body, retry_after: retryAfter }),
    },
    dynamic_metadata: metadata({
      client_id: decision.clientId,
      denial_type: type,
      keystore_generation: context.generation,
    }),
  };
}

/** Builds Envoy's CheckResponse for a decision. */
export function buildResponse(
  decision: Decision,
  options: ResponseOptions,
  context: ResponseContext,
): CheckResponse {
  return decision.outcome === "allow"
    ? buildAllow(decision, options, context)
    : buildDeny(decision, context);
}
