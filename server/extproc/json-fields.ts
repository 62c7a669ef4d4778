/**
 * Finds a response's top-level `usage` object and `model` in a JSON body without parsing
 * the body: JSON.parse of a 1 MiB body dense with small objects holds the event loop for
 * tens of ms, while the two fields are a few hundred bytes. Native byte searches find
 * candidate keys; only the candidate objects are parsed.
 *
 * Why a byte search finds keys and not text: inside a JSON string every `"` is escaped,
 * so the bytes `"usage":` can only be a key, and a key is preceded by `{` or `,`. Both
 * providers put `model` before the content and `usage` after it, so the first `model`
 * and the last `usage` object are the top-level ones (a tool call's input may hold keys of
 * the same names, always inside the content).
 */

/** A usage object is small; anything longer is not one. */
const MAX_OBJECT_BYTES = 4096;
/** How many `"usage":` candidates are tried, from the last, before giving up. */
const MAX_CANDIDATES = 8;
const MODEL_VALUE = /^\s*"((?:[^"\\]|\\.){1,200})"/;

function isSpace(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

/** Whether the key whose opening quote is at `at` follows `{` or `,` (so it is a key). */
function isKeyPosition(body: Buffer, at: number): boolean {
  let before = at - 1;
  while (before >= 0 && isSpace(body[before])) before--;
  return body[before] === 0x7b || body[before] === 0x2c;
}

/** The end (exclusive) of the object starting at `start`, or -1 past the cap. */
function objectEnd(body: Buffer, start: number): number {
  let depth = 0;
  let inString = false;
  const limit = Math.min(body.length, start + MAX_OBJECT_BYTES);
  for (let at = start; at < limit; at++) {
    const byte = body[at];
    if (inString) {
      if (byte === 0x5c) at++;
      else if (byte === 0x22) inString = false;
    } else if (byte === 0x22) inString = true;
    else if (byte === 0x7b) depth++;
    else if (byte === 0x7d && --depth === 0) return at + 1;
  }
  return -1;
}

/**
 * The `"usage":` keys of `text` whose value is an object closing within MAX_OBJECT_BYTES,
 * from the last: [start, end) of each object. At most MAX_CANDIDATES keys are looked at.
 */
function* usageObjects(text: Buffer): Generator<readonly [start: number, end: number]> {
  const key = '"usage":';
  let from = text.length;
  for (let tries = 0; tries < MAX_CANDIDATES && from > 0; tries++) {
    const at = text.lastIndexOf(key, from - 1);
    if (at === -1) return;
    from = at;
    if (!isKeyPosition(text, at)) continue;
    let start = at + key.length;
    while (isSpace(text[start])) start++;
    if (text[start] !== 0x7b) continue;
    const end = objectEnd(text, start);
    if (end !== -1) yield [start, end];
  }
}

/** The top-level `usage` object of a JSON body, or undefined. */
export function findUsageObject(body: Buffer): Record<string, unknown> | undefined {
  for (const [start, end] of usageObjects(body)) {
    try {
      return JSON.parse(body.toString("utf8", start, end)) as Record<string, unknown>;
    } catch {
      // Not an object after all: try the one before.
    }
  }
  return undefined;
}

/**
 * The first `key` string member of a JSON text (the top-level one: see above), or undefined.
 * `cut`: the text is only the start of a body (a head), so a value that runs past its end
 * ends the search (a later candidate would be a nested key, not the top-level one).
 */
function firstString(body: Buffer, key: string, cut: boolean): string | undefined {
  let from = 0;
  for (let tries = 0; tries < MAX_CANDIDATES; tries++) {
    const at = body.indexOf(key, from);
    if (at === -1) return undefined;
    from = at + key.length;
    if (!isKeyPosition(body, at)) continue;
    const match = MODEL_VALUE.exec(body.toString("utf8", from, from + 420));
    if (match?.[1] === undefined) {
      if (cut && from + 420 > body.length) return undefined;
      continue;
    }
    try {
      return JSON.parse(`"${match[1]}"`) as string;
    } catch {
      // A broken escape: not a string value.
    }
  }
  return undefined;
}

/**
 * The first `model` string key of a JSON body (the top-level one), or undefined. `cut`: the
 * body is only its first bytes (see firstString).
 */
export function findModel(body: Buffer, cut = false): string | undefined {
  return firstString(body, '"model":', cut);
}

/** The first `type` string of an SSE event's data (its event type: every event names it first). */
export function findType(head: Buffer): string | undefined {
  return firstString(head, '"type":', true);
}

/** The end (exclusive) of the string whose opening quote is at `at`, or -1 past the end. */
function stringEnd(text: Buffer, at: number): number {
  for (let i = at + 1; i < text.length; i++) {
    const byte = text[i];
    if (byte === 0x5c) i++;
    else if (byte === 0x22) return i + 1;
  }
  return -1;
}

/** The end (exclusive) of the JSON value starting at `at` (any kind), or -1 past the end. */
function valueEnd(text: Buffer, at: number): number {
  const first = text[at];
  if (first === 0x22) return stringEnd(text, at);
  if (first === 0x7b || first === 0x5b) {
    let depth = 0;
    for (let i = at; i < text.length; i++) {
      const byte = text[i];
      if (byte === 0x22) {
        i = stringEnd(text, i) - 1;
        if (i < 0) return -1;
      } else if (byte === 0x7b || byte === 0x5b) depth++;
      else if ((byte === 0x7d || byte === 0x5d) && --depth === 0) return i + 1;
    }
    return -1;
  }
  // A number, true, false or null: up to the next delimiter.
  let i = at;
  while (
    i < text.length &&
    text[i] !== 0x2c &&
    text[i] !== 0x7d &&
    text[i] !== 0x5d &&
    !isSpace(text[i])
  )
    i++;
  return i > at ? i : -1;
}

/**
 * How many objects close between `from` (just after a member's value) and the end of the
 * text, if all that follows is further members of those objects and their closing `}`s
 * (then only whitespace); -1 otherwise (a `]`, anything after the last `}`, a member cut off).
 * From a member's end every byte's role is known, so this is exact for valid JSON.
 */
function closingDepth(text: Buffer, from: number): number {
  let closed = 0;
  let at = from;
  for (;;) {
    while (isSpace(text[at])) at++;
    if (at >= text.length) return closed;
    const byte = text[at];
    if (byte === 0x7d) {
      closed++;
      at++;
    } else if (byte === 0x2c) {
      at++;
      while (isSpace(text[at])) at++;
      if (text[at] !== 0x22) return -1;
      at = stringEnd(text, at);
      if (at === -1) return -1;
      while (isSpace(text[at])) at++;
      if (text[at] !== 0x3a) return -1;
      at++;
      while (isSpace(text[at])) at++;
      at = valueEnd(text, at);
      if (at === -1) return -1;
    } else return -1;
  }
}

/**
 * The `usage` object of a JSON text of which only the end is at hand: the last bytes of a
 * body, or of an SSE data line, too long to keep whole. The tail may begin anywhere, even
 * inside a string, so nothing before a candidate key can be trusted; what follows it can.
 *
 * The rule: the LAST `"usage":` key (a key by the argument above, which holds from any
 * starting point: a `"` inside a string is always escaped) whose value is an object that
 * closes within MAX_OBJECT_BYTES and after which the rest of the text is only further
 * members (`, "key": any JSON value`) of the objects enclosing it, their closing `}`s, and
 * whitespace, with exactly `depth` such `}`s: depth 1 is a member of the top-level object
 * (a body's own `usage`; `service_tier`, `metadata`... may follow it), depth 2 a member of
 * an object that is itself a top-level member (an SSE event's `response.usage`). A `usage`
 * key inside the content (a tool call's input) is followed by the `]` of the content or
 * by more `}`s than that, so it never qualifies. A text where no key qualifies (the
 * top-level usage is absent, null, or starts before the tail) has no usage: undefined.
 */
export function findTailUsage(tail: Buffer, depth: number): Record<string, unknown> | undefined {
  for (const [start, end] of usageObjects(tail)) {
    if (closingDepth(tail, end) !== depth) continue;
    try {
      return JSON.parse(tail.toString("utf8", start, end)) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
