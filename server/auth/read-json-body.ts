/**
 * Reads a request body the way the upstream will: decoded as Python's `json.loads(bytes)`
 * decodes it (UTF-8, UTF-16 or UTF-32, told apart by BOM or by the NUL bytes of the first
 * four: json-body-encoding.ts, re-exported here), then read in one pass that counts
 * brackets outside strings (long strings by the native byte search) and keeps the
 * top-level object's `api_key` and `model`. No tree is built and nothing recurses, so a
 * hostile 4 MiB body (a million keys, two million nested arrays) costs milliseconds, not
 * a second of allocation. There is no depth limit to disagree with the upstream's about:
 * depth is a counter.
 *
 * Only the two values read are validated: a document broken anywhere else is one the
 * upstream cannot parse either, so it can never carry a credential to the provider, and
 * for every document Python accepts, the fields read here are the ones it reads.
 */
export { detectEncoding, utf8JsonBytes } from "./json-body-encoding.js";

/** A top-level field as found: absent, a string, or present with another JSON type. */
export type TopLevelField =
  | { readonly kind: "absent" }
  | { readonly kind: "null" }
  | { readonly kind: "string"; readonly value: string }
  | { readonly kind: "other" };

export type JsonScan =
  | { readonly kind: "object"; readonly apiKey: TopLevelField; readonly model: TopLevelField }
  /** Not a JSON object: an array, a scalar, form data, text, binary. Nothing keygate reads. */
  | { readonly kind: "other" }
  /** Starts as a JSON object but its top level is malformed. */
  | { readonly kind: "invalid" };

const ABSENT: TopLevelField = { kind: "absent" };
const NULL: TopLevelField = { kind: "null" };
const OTHER: TopLevelField = { kind: "other" };
const INVALID: JsonScan = { kind: "invalid" };
/**
 * No LLM request has this many top-level fields; checking each key costs more than any
 * other byte of a hostile body, so past this the object is not read (treated as invalid).
 */
export const MAX_TOP_LEVEL_KEYS = 1000;
const NOT_OBJECT: JsonScan = { kind: "other" };

/** What an upstream could read as a credential: a keygate token, an `api_key` field. */
const CREDENTIAL_MARKS = ["kg_", "api_key"] as const;

/**
 * Whether a body keygate cannot parse holds a keygate token or an `api_key` field
 * anywhere, given as UTF-8 (see utf8JsonBytes). Marks are searched literally: no form
 * encoder percent-encodes letters or `_`, and the upstream parses JSON, not forms.
 */
export function mentionsCredential(utf8: Buffer): boolean {
  return CREDENTIAL_MARKS.some((mark) => utf8.includes(mark));
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
/** An index that ends a scan: the input is malformed. */
const BAD = -1;
/** Strings are searched byte by byte this far, then natively: most keys are short, prompts long. */
const SHORT_RUN = 64;

function skipWhitespace(bytes: Buffer, from: number): number {
  const n = bytes.length;
  let i = from;
  while (i < n) {
    const c = bytes[i];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    i++;
  }
  return i;
}

/** Whether the quote at q is escaped: preceded by an odd run of backslashes that starts at or after `from`. */
function isEscaped(bytes: Buffer, from: number, q: number): boolean {
  let k = q - 1;
  while (k >= from && bytes[k] === BACKSLASH) k--;
  return (q - 1 - k) % 2 === 1;
}

/**
 * Index just past the string whose opening quote is at `from`, or BAD when it never
 * closes. Escapes are skipped, not checked (see the module comment).
 */
function skipString(bytes: Buffer, from: number): number {
  const n = bytes.length;
  let i = from + 1;
  for (;;) {
    // `i` is never inside an escape here, so a backslash run from `i` on is whole.
    const stop = Math.min(n, i + SHORT_RUN);
    for (; i < stop; i++) {
      const c = bytes[i];
      if (c === QUOTE) return i + 1;
      if (c === BACKSLASH) i++;
    }
    if (i >= n) return BAD;
    const q = bytes.indexOf(QUOTE, i);
    if (q === BAD) return BAD;
    if (!isEscaped(bytes, i, q)) return q + 1;
    i = q + 1;
  }
}

/** JSON's numbers and literals, and Python's NaN, Infinity and -Infinity. */
const SCALAR =
  /^(?:true|false|null|NaN|-?Infinity|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)$/;

function trimEnd(bytes: Buffer, from: number, to: number): number {
  let end = to;
  while (end > from) {
    const c = bytes[end - 1];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    end--;
  }
  return end;
}

/**
 * No token, provider key or model name comes near this; a longer value is kept as "other"
 * without decoding it, so a 4 MiB `model` costs nothing but the skip.
 */
export const MAX_FIELD_BYTES = 4096;

/** The value at bytes[from, to) (whitespace around it allowed), or undefined when it is not one JSON value. */
function fieldAt(bytes: Buffer, from: number, to: number): TopLevelField | undefined {
  const start = skipWhitespace(bytes, from);
  const end = trimEnd(bytes, start, to);
  const c = bytes[start];
  if (c === OPEN_ARRAY || c === OPEN_OBJECT || end - start > MAX_FIELD_BYTES) return OTHER;
  if (c !== QUOTE) {
    const text = bytes.toString("latin1", start, end);
    return !SCALAR.test(text) ? undefined : text === "null" ? NULL : OTHER;
  }
  if (skipString(bytes, start) !== end) return undefined;
  const text = bytes.toString("utf8", start, end);
  if (!text.includes("\\")) return { kind: "string", value: text.slice(1, -1) };
  try {
    return { kind: "string", value: JSON.parse(text) as string };
  } catch {
    return undefined;
  }
}

type FieldSlot = 0 | 1 | 2;
const NO_FIELD: FieldSlot = 0;
const API_KEY: FieldSlot = 1;
const MODEL: FieldSlot = 2;
const API_KEY_QUOTED = Buffer.from('"api_key"');
const MODEL_QUOTED = Buffer.from('"model"');

/** Whether bytes[from, to) equals `word`; in JavaScript, as a native call costs more than a short key. */
function equalsAt(bytes: Buffer, from: number, to: number, word: Buffer): boolean {
  if (to - from !== word.length) return false;
  for (let k = 0; k < word.length; k++) if (bytes[from + k] !== word[k]) return false;
  return true;
}

function hasBackslash(bytes: Buffer, from: number, to: number): boolean {
  for (let k = from; k < to; k++) if (bytes[k] === BACKSLASH) return true;
  return false;
}

/** Which field the key bytes[from, to) (quotes included) names. */
function slotOf(bytes: Buffer, from: number, to: number): FieldSlot {
  if (equalsAt(bytes, from, to, API_KEY_QUOTED)) return API_KEY;
  if (equalsAt(bytes, from, to, MODEL_QUOTED)) return MODEL;
  // Only a key with escapes, longer than what it spells, is decoded.
  if (to - from <= MODEL_QUOTED.length || !hasBackslash(bytes, from, to)) return NO_FIELD;
  const key = fieldAt(bytes, from, to);
  if (key?.kind !== "string") return NO_FIELD;
  return key.value === "api_key" ? API_KEY : key.value === "model" ? MODEL : NO_FIELD;
}

/** Where TopLevelReader is in the top-level object's grammar. */
enum At {
  KeyOrEnd,
  Key,
  Colon,
  Value,
  AfterValue,
}

function isWhitespace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function endsScalar(c: number): boolean {
  return (
    c === COMMA ||
    c === QUOTE ||
    c === OPEN_ARRAY ||
    c === CLOSE_ARRAY ||
    c === OPEN_OBJECT ||
    c === CLOSE_OBJECT ||
    isWhitespace(c)
  );
}

/** Index past a top-level scalar: up to the next separator, whitespace, quote or bracket. */
function scalarEnd(bytes: Buffer, from: number): number {
  let i = from;
  while (i < bytes.length && !endsScalar(bytes[i] as number)) i++;
  return i;
}

/**
 * Reads the top-level `api_key` and `model` of a JSON document (UTF-8 bytes) in one pass,
 * resumable so that a large body can be read in slices. The top-level object's grammar
 * is checked (string keys, colons, commas, valid scalars); nested values are skipped by
 * counting brackets outside strings (long strings go to the native search) and are not
 * validated (see the
 * module comment). As in Python and JavaScript, the last of duplicate keys wins.
 */
export class TopLevelReader {
  private readonly bytes: Buffer;
  private i: number;
  private at = At.KeyOrEnd;
  private apiKey = ABSENT;
  private model = ABSENT;
  private keys = 0;
  /** The field the current key names, and where its value starts. */
  private slot: FieldSlot = NO_FIELD;
  private valueStart = 0;
  /** Brackets open inside the top-level value being skipped; 0 at the top level. */
  private depth = 0;
  private result: JsonScan | undefined;

  constructor(input: Uint8Array) {
    this.bytes = Buffer.isBuffer(input)
      ? input
      : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    this.i = skipWhitespace(this.bytes, 0);
    if (this.bytes[this.i] !== OPEN_OBJECT) this.result = NOT_OBJECT;
    this.i++;
  }

  /** Bytes read so far. */
  get offset(): number {
    return this.i;
  }

  /** Reads on until about `until` (a byte offset); the result once the document is read, else undefined. */
  read(until: number): JsonScan | undefined {
    const { bytes } = this;
    const stop = Math.min(until, bytes.length);
    let i = this.i;
    while (this.result === undefined && i < stop) {
      if (this.depth > 0) {
        i = this.skipNested(i, stop);
        if (this.depth === 0) this.at = At.AfterValue;
        continue;
      }
      const c = bytes[i] as number;
      if (isWhitespace(c)) i++;
      else i = this.step(i, c);
    }
    this.i = i;
    if (this.result === undefined && i >= bytes.length) this.result = INVALID;
    return this.result;
  }

  /** One token of the top-level grammar at i; the index after it. */
  private step(i: number, c: number): number {
    switch (this.at) {
      case At.KeyOrEnd:
        if (c === CLOSE_OBJECT) return this.end(i);
        return this.key(i, c);
      case At.Key:
        return this.key(i, c);
      case At.Colon:
        if (c !== COLON) return this.fail();
        this.at = At.Value;
        this.valueStart = i + 1;
        return i + 1;
      case At.Value:
        return this.value(i, c);
      case At.AfterValue:
        if (c !== COMMA && c !== CLOSE_OBJECT) return this.fail();
        if (this.slot !== NO_FIELD && !this.record(i)) return this.fail();
        if (c === CLOSE_OBJECT) return this.end(i);
        this.at = At.Key;
        return i + 1;
    }
  }

  private key(i: number, c: number): number {
    if (c !== QUOTE || ++this.keys > MAX_TOP_LEVEL_KEYS) return this.fail();
    const end = skipString(this.bytes, i);
    if (end === BAD) return this.fail();
    this.slot = slotOf(this.bytes, i, end);
    this.at = At.Colon;
    return end;
  }

  private value(i: number, c: number): number {
    if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      this.depth = 1;
      return i + 1;
    }
    const end = c === QUOTE ? skipString(this.bytes, i) : scalarEnd(this.bytes, i);
    if (end === BAD || end === i) return this.fail();
    if (c !== QUOTE && !SCALAR.test(this.bytes.toString("latin1", i, end))) return this.fail();
    this.at = At.AfterValue;
    return end;
  }

  /** Keeps the value of the field the current key names; false when it is not valid JSON. */
  private record(end: number): boolean {
    const field = fieldAt(this.bytes, this.valueStart, end);
    if (field === undefined) return false;
    if (this.slot === API_KEY) this.apiKey = field;
    else this.model = field;
    return true;
  }

  private end(at: number): number {
    const done = skipWhitespace(this.bytes, at + 1) === this.bytes.length;
    this.result = done ? { kind: "object", apiKey: this.apiKey, model: this.model } : INVALID;
    return this.bytes.length;
  }

  private fail(): number {
    this.result = INVALID;
    return this.bytes.length;
  }

  /**
   * The hottest loop for a hostile body. Every byte below `[` but a quote is plain, so
   * most bytes of numbers and punctuation cost one comparison (measured: 20-30 % faster
   * than a table look-up per byte).
   */
  private skipNested(from: number, stop: number): number {
    const { bytes } = this;
    let depth = this.depth;
    let i = from;
    while (i < stop) {
      const c = bytes[i] as number;
      if (c < OPEN_ARRAY) {
        if (c === QUOTE) {
          i = skipString(bytes, i);
          if (i === BAD) return this.fail();
        } else i++;
        continue;
      }
      i++;
      if (c === OPEN_ARRAY || c === OPEN_OBJECT) depth++;
      else if ((c === CLOSE_ARRAY || c === CLOSE_OBJECT) && --depth === 0) break;
    }
    this.depth = depth;
    return i;
  }
}

/** Reads a whole document at once: for bodies small enough not to be read in slices. */
export function scanJson(input: Uint8Array): JsonScan {
  return new TopLevelReader(input).read(Number.POSITIVE_INFINITY) as JsonScan;
}
