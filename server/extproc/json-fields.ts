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

/** The top-level `usage` object of a JSON body, or undefined. */
export function findUsageObject(body: Buffer): Record<string, unknown> | undefined {
  const key = '"usage":';
  let from = body.length;
  for (let tries = 0; tries < MAX_CANDIDATES && from > 0; tries++) {
    const at = body.lastIndexOf(key, from - 1);
    if (at === -1) return undefined;
    from = at;
    if (!isKeyPosition(body, at)) continue;
    let start = at + key.length;
    while (isSpace(body[start])) start++;
    if (body[start] !== 0x7b) continue;
    const end = objectEnd(body, start);
    if (end === -1) continue;
    try {
      return JSON.parse(body.toString("utf8", start, end)) as Record<string, unknown>;
    } catch {
      // Not an object after all: try the one before.
    }
  }
  return undefined;
}

/** The first `model` string key of a JSON body (the top-level one), or undefined. */
export function findModel(body: Buffer): string | undefined {
  const key = '"model":';
  let from = 0;
  for (let tries = 0; tries < MAX_CANDIDATES; tries++) {
    const at = body.indexOf(key, from);
    if (at === -1) return undefined;
    from = at + key.length;
    if (!isKeyPosition(body, at)) continue;
    const match = MODEL_VALUE.exec(body.toString("utf8", from, from + 420));
    if (match?.[1] === undefined) continue;
    try {
      return JSON.parse(`"${match[1]}"`) as string;
    } catch {
      // A broken escape: not a model name.
    }
  }
  return undefined;
}
