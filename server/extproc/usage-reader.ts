/**
 * Reads token usage from a provider's response body as Envoy streams it past, chunk by
 * chunk, without holding it (the usage filter runs in observability mode: Envoy never
 * waits for keygate), keeping a copy of only what it needs. Two formats:
 *   - JSON (application/json): a copy searched at the end for its top-level fields
 *     (json-fields.ts), whole up to MAX_JSON_BYTES; of a larger body only its first
 *     HEAD_BYTES (for `model`, which precedes the content) and last TAIL_BYTES (for
 *     `usage`, which follows it) are kept (BoundedCopy). Anthropic `usage.input_tokens/output_tokens/
 *     cache_read_input_tokens/cache_creation_input_tokens`, OpenAI Chat Completions
 *     `usage.prompt_tokens/completion_tokens/prompt_tokens_details.cached_tokens`, OpenAI
 *     Responses `usage.input_tokens/output_tokens/input_tokens_details.cached_tokens`, and
 *     the response's `model`.
 *   - Server-Sent Events (text/event-stream): split into lines across arbitrary chunk
 *     boundaries (LF or CRLF), and only `data:` lines that mention usage are parsed; of a
 *     line above MAX_LINE_BYTES (`response.completed` carries the whole output) only its
 *     start and last TAIL_BYTES are kept, and its usage found in that tail
 *     (findTailUsage). Anthropic `message_start` (input and cache
 *     tokens) and `message_delta` (cumulative output), the OpenAI final chunk with
 *     `usage`, OpenAI Responses `response.completed`. `data: [DONE]` ends nothing here:
 *     the end of the body does.
 * Content-encoded (gzip, br ...) bodies are not read at all (process-service.ts checks).
 * OpenAI counts cached tokens inside its prompt tokens; they are moved out here so that
 * input + cache read is what was sent, as with Anthropic.
 */
import type { TokenUsage } from "../usage/token-usage.js";
import { findModel, findTailUsage, findType, findUsageObject } from "./json-fields.js";

/** JSON bodies up to this are kept whole; of larger ones, only a head and a tail. */
export const MAX_JSON_BYTES = 1024 * 1024;
/**
 * SSE lines up to this are kept whole and parsed (usage events are a few hundred bytes; a
 * 64 KiB line parses in about a ms); of longer ones, only a head and a tail.
 */
export const MAX_LINE_BYTES = 64 * 1024;
/**
 * The start kept of an over-long body or line: `model` comes before the content, but an
 * OpenAI Responses object echoes its `instructions` (a whole system prompt) before it.
 */
export const HEAD_BYTES = 64 * 1024;
/**
 * The end kept of an over-long body or line: `usage` and the few members after it
 * (`service_tier`, `metadata`, `sequence_number`) are well under a KiB.
 */
export const TAIL_BYTES = 64 * 1024;
/**
 * The most one count of one response can be: 1e9 tokens is far beyond any context window
 * or output limit, so a larger count is not real. The ledger sums counts as SQLite
 * int64 (at most 9.2e18): counts up to 2^53 would overflow a sum after about a thousand
 * rows and fail the whole batch, while counts up to 1e9 need over nine billion rows.
 */
export const MAX_COUNT = 1_000_000_000;
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

/** A count, clamped to MAX_COUNT; a non-integer or negative value is none. */
function count(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= 0
    ? Math.min(value, MAX_COUNT)
    : undefined;
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

/**
 * A copy of a byte stream as it arrives: whole up to `maxWhole` bytes; past that, only its
 * first `headBytes` and (in a ring) its last `tailBytes`. The work per chunk is O(chunk):
 * a chunk is copied once (into the whole copy, or at most headBytes of it into the head and
 * its last tailBytes into the ring), and the one switch from whole to head and tail copies
 * at most maxWhole bytes, once. So a 4 MiB body in 64 KiB chunks costs one 64 KiB copy per
 * chunk, never a rescan of what came before; the searches run once, in result().
 */
class BoundedCopy {
  private chunks: Buffer[] = [];
  private size = 0;
  private head: Buffer | undefined;
  private headSize = 0;
  private ring: Buffer | undefined;
  /** Where the next byte goes in the ring, and how many bytes it holds. */
  private ringAt = 0;
  private ringSize = 0;

  constructor(
    private readonly maxWhole: number,
    private readonly headBytes: number,
    private readonly tailBytes: number,
  ) {}

  get length(): number {
    return this.size;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.size += chunk.length;
    if (this.ring === undefined) {
      if (this.size <= this.maxWhole) {
        this.chunks.push(Buffer.from(chunk));
        return;
      }
      this.head = Buffer.allocUnsafe(this.headBytes);
      this.ring = Buffer.allocUnsafe(this.tailBytes);
      const kept = Buffer.concat([...this.chunks, chunk]);
      this.chunks = [];
      this.append(kept);
    } else this.append(chunk);
  }

  private append(chunk: Buffer): void {
    const head = this.head as Buffer;
    const ring = this.ring as Buffer;
    if (this.headSize < head.length) this.headSize += chunk.copy(head, this.headSize);
    const piece = chunk.length > ring.length ? chunk.subarray(chunk.length - ring.length) : chunk;
    const first = piece.copy(ring, this.ringAt);
    if (first < piece.length) piece.copy(ring, 0, first);
    this.ringAt = (this.ringAt + piece.length) % ring.length;
    this.ringSize = Math.min(ring.length, this.ringSize + piece.length);
  }

  /** The whole copy, or undefined once it went past maxWhole. */
  whole(): Buffer | undefined {
    return this.ring === undefined ? Buffer.concat(this.chunks, this.size) : undefined;
  }

  /** The first headBytes (once past maxWhole). */
  start(): Buffer {
    return (this.head ?? Buffer.alloc(0)).subarray(0, this.headSize);
  }

  /** The last tailBytes, in order (once past maxWhole). */
  end(): Buffer {
    const ring = this.ring;
    if (ring === undefined) return Buffer.alloc(0);
    if (this.ringSize < ring.length) return ring.subarray(0, this.ringSize);
    return Buffer.concat([ring.subarray(this.ringAt), ring.subarray(0, this.ringAt)]);
  }

  clear(): void {
    this.chunks = [];
    this.size = 0;
    this.head = undefined;
    this.headSize = 0;
    this.ring = undefined;
    this.ringAt = 0;
    this.ringSize = 0;
  }
}

function jsonReader(maxBytes: number): UsageReader {
  const copy = new BoundedCopy(maxBytes, HEAD_BYTES, TAIL_BYTES);
  let done: Counts | undefined;
  return {
    push(chunk) {
      if (done === undefined) copy.push(chunk);
    },
    result() {
      if (done === undefined) {
        done = {};
        const whole = copy.whole();
        if (whole !== undefined) {
          // Two small fields of a body up to 1 MiB: found, not parsed whole (json-fields.ts).
          const usage = whole.length > 0 ? findUsageObject(whole) : undefined;
          if (usage !== undefined) readObject(done, { model: findModel(whole), usage });
        } else {
          // A larger body: `usage` is the top-level object's last members, in the tail.
          const usage = findTailUsage(copy.end(), 1);
          if (usage !== undefined)
            readObject(done, { model: findModel(copy.start(), true), usage });
        }
        copy.clear();
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

/** Without a trailing CR (a CRLF line end). */
function withoutCr(line: Buffer): Buffer {
  return line.length > 0 && line[line.length - 1] === CR ? line.subarray(0, -1) : line;
}

/**
 * An SSE line too long to keep whole: its start (`data:`, the event type, the model) and
 * its end (the usage). OpenAI Responses events (`response.completed`, `.incomplete`,
 * `.failed`) and Anthropic `message_start` nest the usage one level down (`response.usage`,
 * `message.usage`); other events carry it at the top level.
 */
function readLongLine(into: Counts, head: Buffer, tail: Buffer): void {
  if (head.length < DATA_PREFIX.length || head.toString("latin1", 0, 5) !== DATA_PREFIX) return;
  if (tail.indexOf('"usage"') === -1) return;
  const data = head.subarray(head[5] === 0x20 ? 6 : 5);
  const type = findType(data);
  const nested = type !== undefined && (type.startsWith("response.") || type === "message_start");
  const usage = findTailUsage(tail, nested ? 2 : 1);
  if (usage !== undefined) readObject(into, { model: findModel(data, true), usage });
}

function sseReader(maxLineBytes: number): UsageReader {
  const counts: Counts = {};
  // The current line's bytes from earlier chunks (whole, or head and tail past the cap).
  const line = new BoundedCopy(maxLineBytes, HEAD_BYTES, TAIL_BYTES);
  const endLine = () => {
    const whole = line.whole();
    if (whole !== undefined) readLine(counts, withoutCr(whole));
    else readLongLine(counts, line.start(), withoutCr(line.end()));
    line.clear();
  };
  return {
    push(chunk) {
      let from = 0;
      for (let at = chunk.indexOf(LF, from); at !== -1; at = chunk.indexOf(LF, from)) {
        const piece = chunk.subarray(from, at);
        // A line all in this chunk is read in place, not copied.
        if (line.length === 0 && piece.length <= maxLineBytes) readLine(counts, withoutCr(piece));
        else {
          line.push(piece);
          endLine();
        }
        from = at + 1;
      }
      if (from < chunk.length) line.push(chunk.subarray(from));
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
