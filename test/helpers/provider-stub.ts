/**
 * A stand-in for an LLM provider behind Envoy that plays recorded responses: the request's
 * `x-play` header names the script (a status, headers and a body sent in timed parts).
 * The fixtures are written here, in the shapes Anthropic's and OpenAI's APIs answer with
 * (errors, JSON messages, Server-Sent Events streams); e2e tests use it to see what the
 * response path makes of each one. It records when it sent each part, so a test can tell
 * a streamed body from a buffered one.
 */
import { createServer, type IncomingHttpHeaders } from "node:http";
import { listenOnLoopback } from "./loopback-server.js";

export interface Script {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  /** Sent in order; each part after waiting its delay (ms) from the previous one. */
  readonly parts: readonly { readonly delayMs: number; readonly text: string }[];
}

export interface PlayedResponse {
  readonly script: string;
  readonly headers: IncomingHttpHeaders;
  /** performance.now() when each part was written. */
  readonly sentAt: number[];
}

export interface ProviderStub {
  readonly port: number;
  readonly played: readonly PlayedResponse[];
  close(): Promise<void>;
}

/** A text secret-looking enough that a test can assert it never reaches the client. */
export const PROVIDER_SECRET_MARKER = "sk-ant-api03-leaked-by-provider-XYZ";

const anthropicError = (type: string, message: string) =>
  JSON.stringify({ type: "error", error: { type, message }, request_id: "req_body_0001" });
const openaiError = (type: string, code: string | null, message: string) =>
  JSON.stringify({ error: { message, type, param: null, code } });

/** Anthropic's streamed Messages answer, split the way the API sends its events. */
export const ANTHROPIC_SSE_EVENTS = [
  `event: message_start\ndata: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":7,"cache_read_input_tokens":3,"output_tokens":1}}}\n\n`,
  `event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n`,
  `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n`,
  `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}\n\n`,
  `event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n`,
  `event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}\n\n`,
  `event: message_stop\ndata: {"type":"message_stop"}\n\n`,
];

/** Milliseconds between SSE events: long enough to see streaming, short enough for a test. */
export const SSE_GAP_MS = 150;

export const SCRIPTS: Readonly<Record<string, Script>> = {
  "anthropic-401": {
    status: 401,
    headers: { "content-type": "application/json", "request-id": "req_anthropic_401" },
    parts: [
      {
        delayMs: 0,
        text: anthropicError("authentication_error", `invalid x-api-key ${PROVIDER_SECRET_MARKER}`),
      },
    ],
  },
  // Anthropic's "overloaded": a 5xx, which keygate never types (the provider-errors
  // filter is skipped for it).
  "anthropic-529": {
    status: 529,
    headers: { "content-type": "application/json", "request-id": "req_anthropic_529" },
    parts: [{ delayMs: 0, text: anthropicError("overloaded_error", "Overloaded") }],
  },
  "anthropic-429": {
    status: 429,
    headers: {
      "content-type": "application/json",
      "request-id": "req_anthropic_429",
      "retry-after": "17",
      "anthropic-ratelimit-requests-remaining": "0",
    },
    parts: [
      {
        delayMs: 0,
        text: anthropicError(
          "rate_limit_error",
          "Number of request tokens has exceeded your per-minute rate limit",
        ),
      },
    ],
  },
  "anthropic-credit": {
    status: 400,
    headers: { "content-type": "application/json", "request-id": "req_anthropic_credit" },
    parts: [
      {
        delayMs: 0,
        text: anthropicError(
          "invalid_request_error",
          "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        ),
      },
    ],
  },
  "anthropic-400": {
    status: 400,
    headers: { "content-type": "application/json", "request-id": "req_anthropic_400" },
    parts: [
      { delayMs: 0, text: anthropicError("invalid_request_error", "max_tokens: field required") },
    ],
  },
  "openai-429-quota": {
    status: 429,
    headers: { "content-type": "application/json", "x-request-id": "req_openai_quota" },
    parts: [
      {
        delayMs: 0,
        text: openaiError(
          "insufficient_quota",
          "insufficient_quota",
          "You exceeded your current quota, please check your plan and billing details.",
        ),
      },
    ],
  },
  "anthropic-json": {
    status: 200,
    headers: { "content-type": "application/json", "request-id": "req_anthropic_json" },
    parts: [
      {
        delayMs: 0,
        text: JSON.stringify({
          id: "msg_02",
          type: "message",
          role: "assistant",
          model: "claude-haiku-4-5",
          content: [{ type: "text", text: "Hi" }],
          usage: {
            input_tokens: 11,
            output_tokens: 4,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
          },
        }),
      },
    ],
  },
  // Hostile-sized bodies: a 2 MiB SSE line before the usage events, a 3 MiB JSON answer.
  "huge-sse": {
    status: 200,
    headers: { "content-type": "text/event-stream" },
    parts: [
      {
        delayMs: 0,
        text: `data: {"type":"content_block_delta","pad":"${"x".repeat(2 * 1024 * 1024)}"}\n\n`,
      },
      ...ANTHROPIC_SSE_EVENTS.map((text) => ({
        delayMs: 0,
        text: text.replace("claude-sonnet-4-5", "claude-huge-sse"),
      })),
    ],
  },
  "huge-json": {
    status: 200,
    headers: { "content-type": "application/json" },
    parts: [
      {
        delayMs: 0,
        text: JSON.stringify({
          model: "claude-huge-json",
          content: [{ type: "text", text: "y".repeat(3 * 1024 * 1024) }],
          usage: { input_tokens: 1, output_tokens: 2 },
        }),
      },
    ],
  },
  // Longer than envoy.yaml's ext_proc grpc_service timeout (1 s), which must not cut the
  // response path's stream (and with it the usage at the end).
  "anthropic-sse-slow": {
    status: 200,
    headers: {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      "request-id": "req_anthropic_sse_slow",
    },
    parts: ANTHROPIC_SSE_EVENTS.map((text, index) => ({
      delayMs: index === 0 ? 0 : 400,
      text: text.replace('"model":"claude-sonnet-4-5"', '"model":"claude-slow-stream"'),
    })),
  },
  "anthropic-sse": {
    status: 200,
    headers: {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      "request-id": "req_anthropic_sse",
    },
    parts: ANTHROPIC_SSE_EVENTS.map((text, index) => ({
      delayMs: index === 0 ? 0 : SSE_GAP_MS,
      text,
    })),
  },
};

/** Starts the stub on an ephemeral port; an unknown script is a 404 with a plain body. */
export async function startProviderStub(): Promise<ProviderStub> {
  const played: PlayedResponse[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", async () => {
      const name = String(req.headers["x-play"] ?? "");
      const script = SCRIPTS[name];
      if (script === undefined) {
        res.writeHead(404, { "content-type": "text/plain" }).end("no such script");
        return;
      }
      const record: PlayedResponse = { script: name, headers: req.headers, sentAt: [] };
      played.push(record);
      res.writeHead(script.status, script.headers);
      res.flushHeaders();
      for (const part of script.parts) {
        if (part.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, part.delayMs));
        res.write(part.text);
        record.sentAt.push(performance.now());
      }
      res.end();
    });
  });
  const { port, close } = await listenOnLoopback(server);
  return { port, played, close };
}
