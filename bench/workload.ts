/**
 * What the load generator sends and what it expects back: CheckRequests shaped as Envoy
 * sends them for an Anthropic-style `POST /v1/messages` (about 2 KB of JSON carrying the
 * client's token in `api_key`, packed as bytes), encoded once, and the allow each one
 * must produce. Also the judge that tells a real allow (the swapped key and client id
 * in ok_response) from anything else, so a benchmark of denials cannot pass for one of allows.
 */

import { checkRequest } from "../test/helpers/check-request.js";
import { authorizationService } from "../test/helpers/envoy-protos.js";
import { type CallResult, grpcFrame, TRANSPORT_ERROR } from "./grpc-h2-client.js";

/** The allow keygate must answer for a request. */
export interface Expectation {
  readonly clientId: string;
  readonly upstreamKey: string;
}

export interface WorkloadRequest {
  /** base64 of the gRPC-framed, encoded CheckRequest. */
  readonly framedBase64: string;
  /** null: any OK answer will do (the floor server's fixed response). */
  readonly expect: Expectation | null;
}

export const UPSTREAM_HEADER = "x-api-key";
export const CLIENT_ID_HEADER = "x-client-id";
export const BENCH_MODEL = "claude-sonnet-4-5-20250929";
const TARGET_BODY_BYTES = 2048;

const SYSTEM_PROMPT =
  "You are a careful assistant for an internal engineering knowledge base. Answer in " +
  "plain English, cite the document titles you relied on, and say so when the context " +
  "does not contain the answer. Prefer short paragraphs and bulleted lists for steps.";

const CONTEXT =
  "Runbook: rotating the ingress certificates. 1. Check the expiry with the cert-check " +
  "job. 2. Issue the new certificate through the internal CA. 3. Roll the ingress pods " +
  "one availability zone at a time and watch the 5xx rate. 4. Revoke the old serial. " +
  "Incident 2291 showed that skipping step 3's zone-by-zone roll caused a 4 minute brown-out.";

/** A realistic messages request carrying `token` in api_key, padded to about 2 KB. */
export function messagesBody(token: string): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: BENCH_MODEL,
    max_tokens: 1024,
    temperature: 0.2,
    api_key: token,
    system: SYSTEM_PROMPT,
    metadata: { user_id: "u-7f3a9c21" },
    messages: [
      { role: "user", content: [{ type: "text", text: `Context:\n${CONTEXT}` }] },
      { role: "assistant", content: "Understood. What would you like to know about it?" },
      { role: "user", content: "" },
    ],
  };
  const question = "How do I rotate the ingress certificates without a brown-out? ";
  const used = Buffer.byteLength(JSON.stringify(body));
  const room = Math.max(0, TARGET_BODY_BYTES - used);
  const last = (body.messages as Array<Record<string, unknown>>)[2] as Record<string, unknown>;
  last.content = question.repeat(Math.ceil(room / question.length)).slice(0, room);
  return body;
}

/** The CheckRequest Envoy sends for one messages call, encoded and framed. */
export function encodeCheck(token: string, requestId: string): Buffer {
  const body = messagesBody(token);
  const request = checkRequest({
    path: "/v1/messages",
    json: body,
    headers: {
      ":authority": "apollo.internal:8443",
      ":scheme": "https",
      accept: "application/json",
      "anthropic-version": "2023-06-01",
      "content-length": String(Buffer.byteLength(JSON.stringify(body))),
      "user-agent": "anthropic-sdk-python/0.40.0",
      "x-forwarded-proto": "https",
      "x-request-id": requestId,
      "x-envoy-expected-rq-timeout-ms": "250",
    },
  });
  const serialize = authorizationService().Check?.requestSerialize;
  if (!serialize) throw new Error("Authorization/Check has no request serializer");
  return grpcFrame(serialize(request));
}

export type Verdict = "allow" | "mismatch" | "deny" | "transport";

interface DecodedResponse {
  status?: { code?: number };
  ok_response?: { headers?: Array<{ header?: { key?: string; value?: string } }> };
}

let deserialize: ((bytes: Buffer) => unknown) | undefined;

/**
 * Loads the protos the judge decodes with. Call it before timing anything: loading them
 * on the first judged answer stalls the caller's event loop for about 100 ms inside the
 * measured window, which then shows up as late sends and inflated latencies.
 */
export function prepareJudge(): void {
  deserialize ??= authorizationService().Check?.responseDeserialize;
}

function decodeResponse(message: Buffer): DecodedResponse {
  deserialize ??= authorizationService().Check?.responseDeserialize;
  if (!deserialize) throw new Error("Authorization/Check has no response deserializer");
  return deserialize(message) as DecodedResponse;
}

/**
 * Judges one answer. An allow counts only when the CheckResponse status is OK and, when
 * an expectation is given, ok_response sets the upstream key and client id it names.
 * Returns the verdict and the CheckResponse status code (or the gRPC status when there
 * was no message).
 */
export function judge(
  result: CallResult,
  expect: Expectation | null,
): { verdict: Verdict; code: number } {
  if (result.grpcStatus === TRANSPORT_ERROR) return { verdict: "transport", code: -1 };
  if (result.grpcStatus !== 0 || result.message === null) {
    return { verdict: "transport", code: result.grpcStatus };
  }
  const response = decodeResponse(result.message);
  const code = response.status?.code ?? 0;
  if (code !== 0) return { verdict: "deny", code };
  if (expect === null) return { verdict: "allow", code };
  let upstream: string | undefined;
  let clientId: string | undefined;
  for (const option of response.ok_response?.headers ?? []) {
    if (option.header?.key === UPSTREAM_HEADER) upstream = option.header.value;
    if (option.header?.key === CLIENT_ID_HEADER) clientId = option.header.value;
  }
  const swapped = upstream === expect.upstreamKey && clientId === expect.clientId;
  return { verdict: swapped ? "allow" : "mismatch", code };
}

/**
 * The CheckRequest Envoy sends for a `POST /v1/messages` carrying `body` (packed as
 * bytes) under `contentType`, with no credential header; encoded and framed.
 */
export function encodeCheckWithBody(body: string, contentType: string, requestId: string): Buffer {
  const request = checkRequest({
    path: "/v1/messages",
    body,
    headers: {
      ":authority": "apollo.internal:8443",
      "content-type": contentType,
      "content-length": String(Buffer.byteLength(body)),
      "x-request-id": requestId,
    },
  });
  const serialize = authorizationService().Check?.requestSerialize;
  if (!serialize) throw new Error("Authorization/Check has no request serializer");
  return grpcFrame(serialize(request));
}

/**
 * One answer in words, for reports: "allow <client id>", "deny <HTTP status> <type>",
 * or "gRPC status N" / "transport error" when no CheckResponse came back.
 */
export function describeAnswer(result: CallResult): string {
  if (result.grpcStatus === TRANSPORT_ERROR) return "transport error";
  if (result.grpcStatus !== 0 || result.message === null) return `gRPC status ${result.grpcStatus}`;
  const response = decodeResponse(result.message) as DecodedResponse & {
    denied_response?: { status?: { code?: number | string }; body?: string };
  };
  const code = response.status?.code ?? 0;
  if (code === 0) {
    const clientId = response.ok_response?.headers?.find(
      (option) => option.header?.key === CLIENT_ID_HEADER,
    )?.header?.value;
    return clientId === undefined ? "allow (anonymous)" : `allow ${clientId}`;
  }
  let type = "?";
  try {
    type = String((JSON.parse(response.denied_response?.body ?? "") as { type?: unknown }).type);
  } catch {
    // Not JSON: the status alone says enough.
  }
  return `deny ${response.denied_response?.status?.code ?? "?"} ${type}`;
}
