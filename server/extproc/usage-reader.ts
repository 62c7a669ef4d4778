/**
 * Reads token usage from a provider's response body as Envoy streams it past, chunk by
 * chunk, without holding it: the caller answers each chunk CONTINUE at once and feeds a
 * copy of what it needs here. Two formats:
 *   - JSON (application/json): a bounded copy (MAX_JSON_BYTES; larger bodies are not
 *     read) searched at the end for its top-level fields (json-fields.ts): Anthropic `usage.input_tokens/output_tokens/
 *     cache_read_input_tokens/cache_creation_input_tokens`, OpenAI Chat Completions
 *     `usage.prompt_tokens/completion_tokens/prompt_tokens_details.cached_tokens`, OpenAI
 *     Responses `usage.input_tokens/output_tokens/input_tokens_details.cached_tokens`, and
 *     the response's `model`.
 *   - Server-Sent Events (text/event-stream): split into lines across arbitrary chunk
 *     boundaries (LF or CRLF; a line above MAX_LINE_BYTES is skipped), and only `data:`
 *     lines that mention usage are parsed: Anthropic `message_start` (input and cache
 *     tokens) and `message_delta` (cumulative output), the OpenAI final chunk with
 *     `usage`, OpenAI Responses `response.completed`. `data: [DONE]` ends nothing here:
 *     the end of the body does.
 * Content-encoded (gzip, br ...) bodies are not read at all (process-service.ts checks).
 * OpenAI counts cached tokens inside its prompt tokens; they are moved out here so that
 * input + cache read is what was sent, as with Anthropic.
 */
import type { TokenUsage } from "../usage/token-usage.js";
import { findModel, findUsageObject } from "./json-fields.js";

/** JSON bodies above this are not copied (a completion with usage is a few KiB). */
export const MAX_JSON_BYTES = 1024 * 1024;
/** SSE lines above this are skipped (usage events are a few hundred bytes; a 64 KiB line parses in about a ms). */
export const MAX_LINE_BYTES = 64 * 1024;
/** Model names are bounded before they reach a label or a ledger row. */
const MAX_MODEL_CHARS = 200;

export interface UsageReader {
  /** One body chunk; it may be a view into a buffer the caller reuses (it is copied if kept). */
  push(chunk: Buffer): void;
  /** The usage read so far (the whole body, or what arrived before the stream ended). */
  result(): TokenUsage | undefined;
}

interface Counts {
  model?: string;
  inputTokens?: number;
  outputTokens?: number;
  cacheReadTokens?: number;
  cacheWriteTokens?: number;
}

function count(value: unknown): number | undefined {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

/** The counts a `usage` object carries, in whichever provider's format. */
function countsOf(usage: Record<string, unknown>): Counts {
  const chatCached = count(record(usage.prompt_tokens_details)?.cached_tokens);
  if (usage.prompt_tokens !== undefined || usage.completion_tokens !== undefined) {
    const prompt = count(usage.prompt_tokens);
    return {
      inputTokens: prompt === undefined ? undefined : Math.max(0, prompt - (chatCached ?? 0)),
      outputTokens: count(usage.completion_tokens),
      cacheReadTokens: chatCached ?? 0,
    };
  }
  const responsesCached = count(record(usage.input_tokens_details)?.cached_tokens);
  const input = count(usage.input_tokens);
  if (responsesCached !== undefined)
    return {
      inputTokens: input === undefined ? undefined : Math.max(0, input - responsesCached),
      outputTokens: count(usage.output_tokens),
      cacheReadTokens: responsesCached,
    };
  return {
    inputTokens: input,
    outputTokens: count(usage.output_tokens),
    cacheReadTokens: count(usage.cache_read_input_tokens),
    cacheWriteTokens: count(usage.cache_creation_input_tokens),
  };
}

/** Later counts replace earlier ones field by field (Anthropic's deltas are cumulative). */
function merge(into: Counts, from: Counts): void {
  for (const key of [
    "inputTokens",
    "outputTokens",
    "cacheReadTokens",
    "cacheWriteTokens",
  ] as const) {
    const value = from[key];
    if (value !== undefined) into[key] = value;
  }
}

function modelOf(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value.slice(0, MAX_MODEL_CHARS) : undefined;
}

/** Reads one parsed message or event into `into`. */
function readObject(into: Counts, parsed: unknown): void {
  const object = record(parsed);
  if (object === undefined) return;
  // Anthropic message_start and OpenAI response.completed nest the message.
  const inner = record(object.message) ?? record(object.response);
  const holder = inner !== undefined && record(inner.usage) !== undefined ? inner : object;
  const model = modelOf(holder.model) ?? modelOf(object.model);
  if (model !== undefined) into.model = model;
  const usage = record(holder.usage);
  if (usage !== undefined) merge(into, countsOf(usage));
}

function toUsage(counts: Counts): TokenUsage | undefined {
  if (counts.inputTokens === undefined && counts.outputTokens === undefined) return undefined;
  return {
    model: counts.model ?? "unknown",
    inputTokens: counts.inputTokens ?? 0,
    outputTokens: counts.outputTokens ?? 0,
    cacheReadTokens: counts.cacheReadTokens ?? 0,
    cacheWriteTokens: counts.cacheWriteTokens ?? 0,
  };
}

function jsonReader(maxBytes: number): UsageReader {
  let chunks: Buffer[] = [];
  let size = 0;
  let done: Counts | undefined;
  return {
    push(chunk) {
      if (size > maxBytes) return;
      size += chunk.length;
      if (size > maxBytes) chunks = [];
      else chunks.push(Buffer.from(chunk));
    },
    result() {
      if (done === undefined) {
        done = {};
        if (size <= maxBytes && size > 0) {
          // Two small fields of a body up to 1 MiB: found, not parsed whole (json-fields.ts).
          const body = Buffer.concat(chunks, size);
          const usage = findUsageObject(body);
          if (usage !== undefined) readObject(done, { model: findModel(body), usage });
        }
        chunks = [];
      }
      return toUsage(done);
    },
  };
}

const DATA_PREFIX = "data:";
const LF = 0x0a;
const CR = 0x0d;

/** One SSE line (without its terminator); only data lines that mention usage are parsed. */
function readLine(into: Counts, line: Buffer): void {
  if (line.length < DATA_PREFIX.length || line.toString("latin1", 0, 5) !== DATA_PREFIX) return;
  // Cheap filter before JSON.parse: text deltas, the bulk of a stream, never get past it.
  // Every event that carries usage also names the model, so model-only lines are skipped too.
  if (line.indexOf('"usage"') === -1) return;
  const start = line[5] === 0x20 ? 6 : 5;
  try {
    readObject(into, JSON.parse(line.toString("utf8", start)));
  } catch {
    // `[DONE]`, or a data line split over several (not JSON alone): no usage in it.
  }
}

function sseReader(maxLineBytes: number): UsageReader {
  const counts: Counts = {};
  let partial: Buffer[] = [];
  let partialSize = 0;
  let skipping = false;
  const endLine = (tail: Buffer) => {
    if (!skipping) {
      const whole = partial.length === 0 ? tail : Buffer.concat([...partial, tail]);
      const end =
        whole.length > 0 && whole[whole.length - 1] === CR ? whole.length - 1 : whole.length;
      readLine(counts, whole.subarray(0, end));
    }
    partial = [];
    partialSize = 0;
    skipping = false;
  };
  return {
    push(chunk) {
      let from = 0;
      for (let at = chunk.indexOf(LF, from); at !== -1; at = chunk.indexOf(LF, from)) {
        if (partialSize + (at - from) > maxLineBytes) skipping = true;
        endLine(chunk.subarray(from, at));
        from = at + 1;
      }
      if (from >= chunk.length || skipping) return;
      partialSize += chunk.length - from;
      if (partialSize > maxLineBytes) {
        skipping = true;
        partial = [];
      } else partial.push(Buffer.from(chunk.subarray(from)));
    },
    result: () => toUsage(counts),
  };
}

/**
 * A reader for a response's content type, or undefined when the body is neither JSON nor
 * SSE (nothing to read).
 */
export function createUsageReader(
  contentType: string,
  limits: { maxJsonBytes?: number; maxLineBytes?: number } = {},
): UsageReader | undefined {
  const type = contentType.split(";", 1)[0]?.trim().toLowerCase() ?? "";
  if (type === "text/event-stream") return sseReader(limits.maxLineBytes ?? MAX_LINE_BYTES);
  if (type === "application/json" || type.endsWith("+json"))
    return jsonReader(limits.maxJsonBytes ?? MAX_JSON_BYTES);
  return undefined;
}
