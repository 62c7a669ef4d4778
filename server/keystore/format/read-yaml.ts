/**
 * The one YAML reader of keystore.yaml: js-yaml with YAML 1.2 core scalars, refusing what
 * a data file has no use for (anchors, aliases, tags, a second document), every problem at
 * an offset. Where nodes start is indexed on request only, by a second read: a valid file
 * never needs a position, and a 100 000-client file should not pay for them.
 *
 * js-yaml, not yaml's Document, on numbers: at 100 000 clients (34 MB) js-yaml reads the
 * file in about 1.8 s where yaml's parser alone takes 12 s and its Document 20 s or more.
 * The scalars are read as yaml reads them, so what the CLI editor writes through yaml's
 * Document reads back as it meant.
 */
import {
  type EventType,
  FAILSAFE_SCHEMA,
  type LoadOptions,
  load,
  type State,
  Type,
  YAMLException,
} from "js-yaml";

export type Segment = string | number;

/** A problem at an offset in the text read. Its message may quote the text: scrub it before showing it. */
export interface YamlProblem {
  readonly offset: number;
  readonly message: string;
}

export type YamlRead =
  | {
      readonly ok: true;
      readonly data: unknown;
      /** What js-yaml reads but flags, such as a flow list's `]` at its key's indentation. */
      readonly warnings: readonly YamlProblem[];
    }
  | ({ readonly ok: false } & YamlProblem);

/** Where nodes start in a text that read without problems. */
export interface NodeIndex {
  /** Offset of the node at `path`, or of its key when `atKey`; else of its nearest ancestor. */
  offsetOf(path: readonly Segment[], atKey: boolean): number;
  /** The scalar at `path` as written, when it is plain (to quote a number back as written). */
  source(path: readonly Segment[]): string | undefined;
  position(offset: number): Position;
}

export interface Position {
  readonly line: number;
  readonly column: number;
}

/** A keystore is six levels deep; a file nested far deeper is refused before it costs anything. */
const MAX_DEPTH = 20;
const DATA_ONLY = "keystore.yaml is data: write each value out in full";
/** Characters that open an anchor, an alias or a tag wherever a node starts. */
const REFUSED_AT_NODE_START = new Map<number, string>([
  [0x26, `anchors (&) are not allowed; ${DATA_ONLY}`],
  [0x2a, `aliases (*) are not allowed; ${DATA_ONLY}`],
  [0x21, `tags (!) are not allowed; ${DATA_ONLY} (quote a value to keep it a string)`],
]);
const SECOND_DOCUMENT =
  "a second document (after ---) is not allowed: keystore.yaml is one document";
/** A plain scalar as written: up to a space, a flow indicator or a comment. */
const PLAIN_TOKEN = /[^\s,[\]{}#]+/y;

/**
 * A plain scalar resolved as yaml resolves it under its YAML 1.2 core schema
 * (yaml/dist/schema/core: the same tests, in the same order): js-yaml's own CORE_SCHEMA
 * reads `0b1`, `1_000` and `-0x1F` as numbers and `+.5` as a string, where yaml does the
 * opposite. `forms` pairs each test with how yaml constructs the value.
 */
function coreScalar(
  tag: string,
  forms: ReadonlyArray<readonly [test: RegExp, construct: (text: string) => unknown]>,
): Type {
  // One test for "is it any of these" keeps the common case, a string, to one regex per type.
  const any = new RegExp(forms.map(([test]) => `(?:${test.source})`).join("|"));
  return new Type(`tag:yaml.org,2002:${tag}`, {
    kind: "scalar",
    resolve: (text: string) => any.test(text),
    construct: (text: string) => forms.find(([test]) => test.test(text))?.[1](text),
  });
}

const CORE_SCALARS = FAILSAFE_SCHEMA.extend({
  implicit: [
    coreScalar("null", [[/^(?:~|[Nn]ull|NULL)?$/, () => null]]),
    coreScalar("bool", [[/^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/, (text) => /^[Tt]/.test(text)]]),
    coreScalar("int", [
      [/^0o[0-7]+$/, (text) => Number.parseInt(text.slice(2), 8)],
      [/^[-+]?[0-9]+$/, (text) => Number.parseInt(text, 10)],
      [/^0x[0-9a-fA-F]+$/, (text) => Number.parseInt(text.slice(2), 16)],
    ]),
    coreScalar("float", [
      [
        /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/,
        (text) =>
          /nan$/i.test(text)
            ? Number.NaN
            : text.startsWith("-")
              ? Number.NEGATIVE_INFINITY
              : Number.POSITIVE_INFINITY,
      ],
      [/^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/, Number.parseFloat],
      [/^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/, Number.parseFloat],
    ]),
  ],
});

/** Thrown from inside js-yaml's listener to stop the read at a refused construct. */
class Refusal extends Error {
  constructor(
    readonly offset: number,
    message: string,
  ) {
    super(message);
  }
}

/** js-yaml 4.3 has `maxDepth` and counts `depth`; @types/js-yaml 4.0 predates both. */
type Listener = (event: EventType, state: State & { readonly depth: number }) => void;

function read(text: string, listener: Listener, warnings: YamlProblem[] = []): unknown {
  const options: LoadOptions & { readonly maxDepth: number } = {
    schema: CORE_SCALARS,
    maxDepth: MAX_DEPTH,
    listener: listener as NonNullable<LoadOptions["listener"]>,
    onWarning: (warning) => {
      warnings.push({ offset: warning.mark?.position ?? 0, message: warning.reason });
    },
  };
  return load(text, options) ?? null;
}

/**
 * Reads `text` (without a BOM: offsets count from its first character) into plain data.
 * Never throws for what the text holds: a problem is an offset and a message.
 */
export function readYaml(text: string): YamlRead {
  let documents = 0;
  const dataOnly: Listener = (event, state) => {
    if (event !== "open") return;
    const start = nodeStart(state.input, state.position);
    if (state.depth === 1 && ++documents > 1) throw new Refusal(start, SECOND_DOCUMENT);
    const refused = REFUSED_AT_NODE_START.get(state.input.charCodeAt(start));
    if (refused !== undefined) throw new Refusal(start, refused);
  };
  const warnings: YamlProblem[] = [];
  try {
    return { ok: true, data: read(text, dataOnly, warnings), warnings };
  } catch (error) {
    if (error instanceof Refusal)
      return { ok: false, offset: error.offset, message: error.message };
    if (error instanceof YAMLException) {
      return { ok: false, offset: error.mark?.position ?? 0, message: error.reason };
    }
    throw error;
  }
}

/**
 * First character of the node js-yaml opens at `from`: past the spaces, line breaks and
 * comments it skips before a node. A node never starts with "#", so one there is a comment.
 */
function nodeStart(input: string, from: number): number {
  let at = from;
  for (;;) {
    const char = input.charCodeAt(at);
    if (char === 0x20 || char === 0x09 || char === 0x0a || char === 0x0d) at++;
    else if (char === 0x23) {
      while (at < input.length && input[at] !== "\n" && input[at] !== "\r") at++;
    } else return at;
  }
}

/** A node as its parent's frame records it; `start` is undefined for an empty value. */
interface Read {
  readonly result: unknown;
  readonly start: number | undefined;
}
interface KeyStarts {
  readonly key: number;
  readonly value: number | undefined;
}
/** For each mapping, where each key and its value start; for each list, where each item starts. */
type Starts = Map<object, ReadonlyMap<string, KeyStarts> | readonly (number | undefined)[]>;

/**
 * Where every node of `text` starts, from a second read that follows js-yaml's parse
 * events: every node opens and closes once, its children in between; a mapping's children
 * alternate key and value. `text` must have read without problems.
 */
export function indexNodes(text: string): NodeIndex {
  const starts: Starts = new Map();
  const frames: Array<{ readonly from: number; readonly children: Read[] }> = [];
  let root: Read = { result: null, start: 0 };
  const listener: Listener = (event, state) => {
    if (event === "open") {
      frames.push({ from: state.position, children: [] });
      return;
    }
    const frame = frames.pop();
    if (frame === undefined) return;
    const start = state.kind === null ? undefined : nodeStart(state.input, frame.from);
    const node = { result: state.result, start };
    const parent = frames.at(-1);
    if (parent === undefined) root = node;
    else parent.children.push(node);
    noteStarts(starts, state.result, frame.children);
  };
  const data = read(text, listener);
  const find = (path: readonly Segment[], atKey: boolean) => {
    let node = data;
    let offset = root.start ?? 0;
    for (const [index, segment] of path.entries()) {
      const entries = typeof node === "object" && node !== null ? starts.get(node) : undefined;
      let next: number | undefined;
      if (entries instanceof Map) {
        const entry = entries.get(String(segment));
        if (entry !== undefined && atKey && index === path.length - 1) {
          return { offset: entry.key, exact: true };
        }
        // `key:` with nothing after it has no node of its own: its key stands for it.
        next = entry === undefined ? undefined : (entry.value ?? entry.key);
      } else if (Array.isArray(entries) && typeof segment === "number") next = entries[segment];
      if (next === undefined) return { offset, exact: false };
      offset = next;
      node = (node as Record<Segment, unknown>)[segment];
    }
    return { offset, exact: true };
  };
  const position = positionsIn(text);
  return {
    offsetOf: (path, atKey) => find(path, atKey).offset,
    source: (path) => {
      const { offset, exact } = find(path, false);
      PLAIN_TOKEN.lastIndex = offset;
      return exact ? PLAIN_TOKEN.exec(text)?.[0] : undefined;
    },
    position,
  };
}

/** Records where `result`'s entries start, when the events line up with it. */
function noteStarts(starts: Starts, result: unknown, children: readonly Read[]): void {
  if (typeof result !== "object" || result === null) return;
  // A flow mapping at the start of a block list item is read first as a possible key and
  // kept: it closes twice, the second time as the only child of itself.
  if (children.length === 1 && children[0]?.result === result) return;
  if (Array.isArray(result)) {
    // A pair in a flow list (`[a: b]`) is a mapping with no node of its own: not indexed,
    // its problems are placed at the list.
    if (children.length === result.length)
      starts.set(
        result,
        children.map(({ start }) => start),
      );
    return;
  }
  // Keys and values alternate, except for a key with no value at all (`{ a, b: c }`, or
  // `? a` with no `:`), which has no value node.
  const entries = new Map<string, KeyStarts>();
  for (let index = 0; index < children.length; index++) {
    const key = children[index];
    const name = String(key?.result);
    if (key === undefined || !Object.hasOwn(result, name)) return;
    const value = children[index + 1];
    const paired =
      value !== undefined && Object.is((result as Record<string, unknown>)[name], value.result);
    entries.set(name, { key: key.start ?? 0, value: paired ? value.start : undefined });
    if (paired) index++;
  }
  starts.set(result, entries);
}

/**
 * 1-based line and column of offsets in `text`; a line ends at CRLF, LF or a lone CR, as
 * js-yaml reads it. The line starts are found on the first call, then each offset is a
 * binary search: a broken 100 000-client file may have as many problems.
 */
export function positionsIn(text: string): (offset: number) => Position {
  let lineStarts: number[] | undefined;
  return (offset) => {
    if (lineStarts === undefined) {
      lineStarts = [0];
      const breaks = /\r\n?|\n/g;
      for (let found = breaks.exec(text); found !== null; found = breaks.exec(text)) {
        lineStarts.push(found.index + found[0].length);
      }
    }
    let low = 0;
    let high = lineStarts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >>> 1;
      if ((lineStarts[middle] ?? 0) <= offset) low = middle;
      else high = middle - 1;
    }
    return { line: low + 1, column: offset - (lineStarts[low] ?? 0) + 1 };
  };
}
