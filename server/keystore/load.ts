/**
 * Loads keystore.yaml into the Keystore model: YAML syntax → JSON Schema
 * (schemas/keystore.schema.json) → semantic checks → conversion, then warnings for
 * upstream keys that will not resolve. Every problem is located as file:line:column and
 * all of them are reported at once, so an operator fixes a file in one pass.
 *
 * Two readers give one answer. The plain path reads the file with js-yaml, several times
 * faster and leaner than yaml's Document on a large keystore, and serves every valid file
 * written in plain YAML. Anything else (a syntax error, any issue, or a construct the two
 * parsers could read differently) goes to the located path, yaml's Document, which knows
 * where every node is.
 * Pure apart from readKeystoreFile's single read; never prints a secret.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { ErrorObject, ValidateFunction } from "ajv";
import { Ajv } from "ajv";
import addFormats from "ajv-formats";
import { type EventType, FAILSAFE_SCHEMA, load as loadYaml, type State, Type } from "js-yaml";
import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type YAMLError,
} from "yaml";
import { decryptSecret, ENC_PATTERN, ENC_PREFIX, type MasterKeys } from "../crypto/aes-gcm.js";
import { looksSecret } from "../crypto/secret-shapes.js";
import { digestPrefix } from "../crypto/token-hash.js";
import { readSchema } from "../paths.js";
import { quoted, scrubbed, shortened, withoutSecrets } from "./shown-text.js";
import {
  type ClientKind,
  DEFAULTS_AAD,
  type Keystore,
  type KeystoreClient,
  KeystoreError,
  type KeystoreIssue,
  type LoadedKeystore,
} from "./types.js";
import { envNameProblem, upstreamKeyValueProblem } from "./upstream-key-rules.js";

export interface LoadOptions {
  /** Name used in issues (`file:line:column: message`). */
  readonly file: string;
  readonly masterKeys: MasterKeys;
  /** Environment that `env:VAR` references are checked against. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Enforce mode: an empty `clients` list is an error, since auth on with no keys is a misconfiguration. */
  readonly requireClients: boolean;
  /**
   * KEYGATE_UPSTREAM_ENV_PREFIX: `env:` names without it are refused. Absent or null: any
   * name but KEYGATE_*, which is refused always.
   */
  readonly upstreamEnvPrefix?: string | null;
}

/** The keystore as the schema guarantees it, before conversion to the model. */
interface RawToken {
  readonly sha256: string;
  readonly expires?: string;
}
interface RawClient {
  readonly id: string;
  readonly name?: string;
  readonly tokens: readonly RawToken[];
  readonly upstream_key?: string;
  readonly routes?: readonly string[];
  readonly models?: readonly string[];
  readonly disabled?: boolean;
  readonly kind?: ClientKind;
}
interface RawKeystore {
  readonly version: 1;
  readonly defaults?: { readonly upstream_key?: string };
  readonly clients: readonly RawClient[];
}

type Segment = string | number;

/** Turns a path in the data into a located issue. */
interface Locator {
  /**
   * An issue saying `<path>: <message>`, positioned at `anchor` (default: the value at
   * `path`), or at the anchor's key when `atKey` (an unknown field).
   */
  issue(path: readonly Segment[], message: string, anchor?: Anchor): KeystoreIssue;
  line(path: readonly Segment[]): number;
  /** The scalar at `path` as written in the file, when there is one. */
  source(path: readonly Segment[]): string | undefined;
}
interface Anchor {
  readonly path?: readonly Segment[];
  readonly atKey?: boolean;
}

/** A problem at a path in the data, before it is given a position. */
interface Finding {
  readonly path: readonly Segment[];
  readonly message: string;
}

// Non-standard keywords that yaml-language-server also shows in editors, so operators
// read the same message in their editor and in `keygate keystore check`.
const MESSAGE_KEYWORDS = ["errorMessage", "patternErrorMessage"] as const;

/**
 * The keystore schema compiled to a validator. `allErrors` collects every error with its
 * data, for the located path's report; without it, validation stops at the first error,
 * which is all the plain path needs to know (a broken 100 000-client file would otherwise
 * build every error twice).
 */
function compileShape(allErrors: boolean): ValidateFunction<RawKeystore> {
  const ajv = new Ajv({ allErrors, strict: true, verbose: allErrors });
  ajv.addVocabulary([...MESSAGE_KEYWORDS]);
  // ajv-formats is CommonJS: under NodeNext its default export is the module object.
  addFormats.default(ajv, ["date-time"]);
  return ajv.compile<RawKeystore>(readSchema("keystore.schema.json"));
}

const isShapeValid = compileShape(false);
let reportingValidator: ValidateFunction<RawKeystore> | undefined;
/** Compiled on first use: loading a valid file never needs it. */
function shapeReporter(): ValidateFunction<RawKeystore> {
  reportingValidator ??= compileShape(true);
  return reportingValidator;
}

const TYPE_WORDS: Readonly<Record<string, string>> = {
  object: "a mapping",
  array: "a list",
  string: "a string",
  boolean: "true or false",
  integer: "an integer",
  number: "a number",
};
/** When several keywords fail on one value, the first in this order says the most. */
const KEYWORD_RANK: Readonly<Record<string, number>> = {
  type: 0,
  const: 1,
  enum: 1,
  minLength: 2,
  minItems: 2,
  pattern: 3,
  format: 3,
};
const LOOSE_DIGEST = /^[0-9a-fA-F]{64}$/;
/** The schema's client id pattern. */
const CLIENT_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** iv (12) + GCM tag (16) + at least one byte of key: anything shorter cannot be an upstream key. */
const MIN_SEALED_BYTES = 12 + 16 + 1;
/** An `env:` reference the schema accepts; other values are the schema's to report. */
const ENV_REFERENCE = /^env:([A-Za-z_][A-Za-z0-9_]*)$/;
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt\s](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)$/;
const EXPIRES_MESSAGE = "must be an RFC 3339 date-time with a time zone, e.g. 2026-12-01T00:00:00Z";
/** Any line longer goes to the located path: yaml refuses implicit keys past 1024 characters, js-yaml does not. */
const MAX_PLAIN_LINE = 1024;
/** A line holding one of these, ending in "-" or starting with a document marker is read closely. */
const SUSPECT_LINE = /[\t\r"'#&*!?%@`|>[\]{}]|-[ ]*$|^(?:---|\.\.\.)/gm;
/** What may come right before a node's first character. */
const NODE_SEPARATORS = new Set([..." [{,:"]);
/** A node starting with one of these is an anchor, alias, tag, explicit key, directive or block scalar. */
const NODE_INDICATORS = new Set([..."&*!?%@`|>"]);
/** Ends of tokens that a "#" may not touch. */
const AFTER_TOKEN = new Set([..."\"'[]{},"]);
/** The rest of a line after a "-" that makes it an empty list item. */
const BLANK_REST = /^ *(?:#[\s\S]*)?\r?$/;
/** The rest of a line after "---" or "..." that keeps it a bare document marker. */
const MARKER_REST = /^(?: +(?:#[\s\S]*)?)?\r?$/;
const BOM = "\uFEFF";
const NO_CLIENTS_MESSAGE =
  "is empty: in enforce mode an empty keystore would deny every request; add a client " +
  "(keygate keystore add <id>) or set KEYGATE_MODE to recognize, dry-run or off";

/**
 * Parses and validates keystore.yaml text. `sourceSha256` is the hash of the file's
 * bytes when the caller has already computed it (the sync has, to skip unchanged files).
 * @throws KeystoreError with every issue found, each located in `options.file`.
 */
export function parseKeystore(
  text: string,
  options: LoadOptions,
  sourceSha256: string = sha256Hex(text),
): LoadedKeystore {
  const validated = validateSource(text, sourceSha256, options);
  return { ...validated.loaded, warnings: validated.upstreamKeyWarnings() };
}

/** A keystore that passed every check, with its upstream-key warnings still to come. */
export interface ValidatedKeystore {
  /** The keystore, with no warnings yet. */
  readonly loaded: LoadedKeystore;
  /**
   * Warnings for upstream keys that will not resolve, located. Tries every `enc:` value
   * (one AES-GCM decrypt each, a third of a cold load at 100 000 clients), which is why it
   * waits until asked: they never decide whether the file is valid.
   */
  upstreamKeyWarnings(): readonly KeystoreIssue[];
}

/**
 * parseKeystore without the upstream-key warnings, for the sync: it applies the
 * keystore first, so a revocation takes effect without waiting for the decrypts.
 * @throws KeystoreError with every issue found, each located in `options.file`.
 */
export function validateKeystore(
  text: string,
  options: LoadOptions,
  sourceSha256: string = sha256Hex(text),
): ValidatedKeystore {
  return validateSource(text, sourceSha256, options);
}

/**
 * Reads and parses a keystore file. `sourceSha256` is the hash of the file's bytes.
 * @throws KeystoreError when the file is missing, unreadable, not UTF-8 or invalid
 *   (a read failure is one issue at line 1, column 1).
 */
export function readKeystoreFile(path: string, options: Omit<LoadOptions, "file">): LoadedKeystore {
  const fail = (message: string): never => {
    throw new KeystoreError([{ file: path, line: 1, column: 1, message }]);
  };
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    return fail(describeReadFailure(error));
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return fail("cannot read the keystore: the file is not valid UTF-8");
  }
  return parseKeystore(text, { ...options, file: path }, sha256Hex(bytes));
}

function describeReadFailure(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "cannot read the keystore: no such file";
  if (code === "EACCES" || code === "EPERM") return "cannot read the keystore: permission denied";
  if (code === "EISDIR") return "cannot read the keystore: it is a directory, not a file";
  return `cannot read the keystore: ${(error as Error).message}`;
}

function sha256Hex(source: string | Buffer): string {
  return createHash("sha256").update(source).digest("hex");
}

function validateSource(
  text: string,
  sourceSha256: string,
  options: LoadOptions,
): ValidatedKeystore {
  const plain = validatePlain(text, sourceSha256, options);
  if (plain !== undefined) return plain;
  const located = parseLocated(text, sourceSha256, options);
  return {
    loaded: { ...located, warnings: [] },
    upstreamKeyWarnings: () => located.warnings,
  };
}

/**
 * The plain path alone: the keystore, or undefined where parseKeystore defers to the
 * located path. Exported so tests can hold both paths to one answer.
 */
export function parseKeystorePlain(text: string, options: LoadOptions): LoadedKeystore | undefined {
  const validated = validatePlain(text, sha256Hex(text), options);
  if (validated === undefined) return undefined;
  const warnings = plainWarnings(text, validated.loaded.keystore, options);
  return warnings === undefined ? undefined : { ...validated.loaded, warnings };
}

/**
 * The located path alone (yaml's Document), whatever the file. Exported so tests can hold
 * both paths to one answer.
 * @throws KeystoreError with every issue found, each located in `options.file`.
 */
export function parseKeystoreLocated(text: string, options: LoadOptions): LoadedKeystore {
  return parseLocated(text, sha256Hex(text), options);
}

/** yaml's Document: slow at scale, but it places every issue and warning. */
function parseLocated(text: string, sourceSha256: string, options: LoadOptions): LoadedKeystore {
  const lines = new LineCounter();
  // prettyErrors off: messages without the code excerpt, positions computed by us. logLevel
  // error: yaml would print to stderr that it stringified a collection key (`[id]: a`);
  // that key is reported as an unknown field anyway.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, logLevel: "error" });
  const issueAt = (offset: number, message: string): KeystoreIssue => {
    const { line, col } = lines.linePos(offset);
    return { file: options.file, line, column: col, message: withoutSecrets(message) };
  };
  // yaml quotes the source in some messages (an unexpected token, an unresolved tag).
  const yamlIssue = (error: YAMLError) => issueAt(error.pos[0], `YAML: ${scrubbed(error.message)}`);
  if (doc.errors.length > 0) throw new KeystoreError(doc.errors.map(yamlIssue));
  const data = toPlainData(doc, issueAt);
  const locator: Locator = {
    issue: (path, message, anchor = {}) =>
      issueAt(
        offsetOf(doc, anchor.path ?? path, anchor.atKey ?? false),
        `${describePath(path)}: ${message}`,
      ),
    line: (path) => lines.linePos(offsetOf(doc, path, false)).line,
    source: (path) => {
      const node = doc.getIn(path, true);
      return isScalar(node) && node.range ? text.slice(node.range[0], node.range[1]) : undefined;
    },
  };
  const validateShape = shapeReporter();
  const valid = validateShape(data);
  const errors = [
    ...(valid ? [] : schemaIssues(validateShape.errors ?? [], locator)),
    ...semanticIssues(data, options, locator),
  ];
  if (!valid || errors.length > 0) throw new KeystoreError(orderIssues(errors));
  const keystore = toKeystore(data);
  const warnings = [
    ...doc.warnings.map(yamlIssue),
    ...upstreamKeyFindings(keystore, options).map(({ path, message }) =>
      locator.issue(path, message),
    ),
  ];
  return { keystore, sourceSha256, warnings: orderIssues(warnings) };
}

/** @throws KeystoreError when resolving aliases would blow up (yaml's billion-laughs guard). */
function toPlainData(
  doc: Document.Parsed,
  issueAt: (offset: number, message: string) => KeystoreIssue,
): unknown {
  try {
    return doc.toJS();
  } catch (error) {
    throw new KeystoreError([issueAt(0, `YAML: ${scrubbed((error as Error).message)}`)]);
  }
}

/** Sorted top to bottom, each distinct problem once (schema and semantic checks may agree). */
function orderIssues(issues: readonly KeystoreIssue[]): KeystoreIssue[] {
  const seen = new Set<string>();
  return [...issues]
    .sort((a, b) => a.line - b.line || a.column - b.column)
    .filter((issue) => {
      const key = `${issue.line}:${issue.column}:${issue.message}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
}

// ---------------------------------------------------------------- the plain path

/**
 * A plain scalar resolved exactly as yaml resolves it under its YAML 1.2 core schema
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

const PLAIN_SCHEMA = FAILSAFE_SCHEMA.extend({
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

/** For the plain path, which only asks whether there is an issue: the located path places them. */
const UNLOCATED: Locator = {
  issue: (_path, message) => ({ file: "", line: 0, column: 0, message }),
  line: () => 0,
  source: () => undefined,
};

/**
 * The plain path: undefined when the file needs the located path (see the module
 * comment). Warnings it cannot place are placed by the located path, when asked for.
 */
function validatePlain(
  text: string,
  sourceSha256: string,
  options: LoadOptions,
): ValidatedKeystore | undefined {
  const read = readPlainYaml(text);
  if (read === undefined || !isShapeValid(read.data)) return undefined;
  if (semanticIssues(read.data, options, UNLOCATED).length > 0) return undefined;
  const keystore = toKeystore(read.data);
  return {
    loaded: { keystore, sourceSha256, warnings: [] },
    upstreamKeyWarnings: () =>
      plainWarnings(text, keystore, options) ?? parseLocated(text, sourceSha256, options).warnings,
  };
}

/** The upstream-key warnings placed by the plain path; undefined when it cannot place them. */
function plainWarnings(
  text: string,
  keystore: Keystore,
  options: LoadOptions,
): KeystoreIssue[] | undefined {
  const findings = upstreamKeyFindings(keystore, options);
  return findings.length === 0 ? [] : placePlainFindings(text, options.file, findings);
}

/** The data in `text`, or undefined when it is not plain YAML or js-yaml refuses it. */
function readPlainYaml(
  text: string,
  listener?: LoadListener,
): { readonly data: unknown } | undefined {
  if (!isPlainYaml(text)) return undefined;
  try {
    return { data: loadYaml(text, { schema: PLAIN_SCHEMA, ...(listener && { listener }) }) };
  } catch {
    return undefined;
  }
}

type LoadListener = (event: EventType, state: State) => void;

/**
 * Whether `text` keeps to the YAML that js-yaml (with PLAIN_SCHEMA) and yaml read alike:
 * block and one-line flow collections, plain and one-line quoted scalars, comments. Not:
 * anchors, aliases, tags, directives, explicit or collection keys, block scalars, tabs,
 * lone CRs, multi-line flow collections or quoted scalars, empty list items, a comment
 * touching a quote or bracket, content on a document marker line, lines over 1024
 * characters, a BOM other than the first character. Those go to the located path, so they
 * keep yaml's reading and its alias guard. The rules come from differential fuzzing of the
 * two parsers; keystore-load-plain.test.ts keeps them honest.
 */
function isPlainYaml(text: string): boolean {
  let start = 0;
  if (text.startsWith(BOM)) {
    // yaml miscounts the first line's indentation after a BOM.
    if (text[1] === " " || text[1] === "-") return false;
    start = 1;
  }
  if (text.includes(BOM, start)) return false;
  for (let at = start; at < text.length; ) {
    const end = lineEnd(text, at);
    if (end - at > MAX_PLAIN_LINE) return false;
    at = end + 1;
  }
  // Most lines hold nothing that needs a closer look: find the few that do.
  const suspect = new RegExp(SUSPECT_LINE);
  suspect.lastIndex = start;
  for (let match = suspect.exec(text); match !== null; match = suspect.exec(text)) {
    const lineStart = Math.max(start, text.lastIndexOf("\n", match.index - 1) + 1);
    const end = lineEnd(text, match.index);
    if (!isPlainLine(text, lineStart, end)) return false;
    suspect.lastIndex = end + 1;
  }
  return true;
}

function lineEnd(text: string, from: number): number {
  const end = text.indexOf("\n", from);
  return end === -1 ? text.length : end;
}

/** One line of isPlainYaml, from `start` to `end` (its "\n" or the end of the text). */
function isPlainLine(text: string, start: number, end: number): boolean {
  const head = text.slice(start, start + 3);
  if ((head === "---" || head === "...") && !MARKER_REST.test(text.slice(start + 3, end))) {
    return false;
  }
  let depth = 0;
  let quote = "";
  let previous = " ";
  for (let at = start; at < end; at++) {
    const char = text[at] ?? "";
    if (char === "\t") return false;
    if (char === "\r") {
      if (at !== end - 1 || end === text.length) return false;
      break;
    }
    if (quote !== "") {
      if (quote === '"' && char === "\\") at++;
      else if (quote === "'" && char === "'" && text[at + 1] === "'") at++;
      else if (char === quote) quote = "";
      previous = quote === "" ? char : "x";
      continue;
    }
    const atNodeStart = NODE_SEPARATORS.has(previous);
    if (char === "#" && previous === " ") break;
    // yaml wants a space before a comment that follows a quote or a bracket; js-yaml does not.
    if (char === "#" && AFTER_TOKEN.has(previous)) return false;
    if (atNodeStart && (char === '"' || char === "'")) quote = char;
    else if (atNodeStart && NODE_INDICATORS.has(char)) return false;
    else if (atNodeStart && char === "-" && BLANK_REST.test(text.slice(at + 1, end))) return false;
    else if (char === "[" || char === "{") depth++;
    else if (char === "]" || char === "}") {
      depth--;
      if (depth < 0 || /^ *:/.test(text.slice(at + 1, end))) return false;
    }
    previous = char;
  }
  return quote === "" && depth === 0;
}

/**
 * Positions for the plain path's warnings, from a second js-yaml read that notes where
 * the values under the findings' last keys start. undefined when a finding is not a
 * mapping value or the parse events do not line up with the data: the located path then
 * places them. Only runs when there are warnings, so a clean file never pays for it.
 */
function placePlainFindings(
  text: string,
  file: string,
  findings: readonly Finding[],
): KeystoreIssue[] | undefined {
  const keys = new Set(findings.map(({ path }) => path.at(-1)));
  const valueStarts = new Map<unknown, Map<string, number>>();
  const frames: Array<{ readonly start: number; readonly children: unknown[] }> = [];
  let linedUp = true;
  // Every node opens and closes once, children in between; a mapping's children alternate
  // key, value. A flow mapping in a block list comes wrapped in a node of its own, whose one
  // child is the same mapping. Only the starts of values under `keys` are kept.
  const listener: LoadListener = (event, state) => {
    if (event === "open") {
      frames.push({ start: state.position, children: [] });
      return;
    }
    const frame = frames.pop();
    frames.at(-1)?.children.push(state.result, frame?.start);
    if (frame === undefined || state.kind !== "mapping") return;
    if (frame.children.length === 2 && frame.children[0] === state.result) return;
    const mapping = state.result as Record<string, unknown>;
    if (frame.children.length !== 4 * Object.keys(mapping).length) linedUp = false;
    for (let index = 0; index + 3 < frame.children.length; index += 4) {
      const key = String(frame.children[index]);
      if (!keys.has(key)) continue;
      if (mapping[key] !== frame.children[index + 2]) linedUp = false;
      const starts = valueStarts.get(mapping) ?? new Map<string, number>();
      starts.set(key, frame.children[index + 3] as number);
      valueStarts.set(mapping, starts);
    }
  };
  const read = readPlainYaml(text, listener);
  if (read === undefined || !linedUp) return undefined;
  // js-yaml drops a leading BOM before counting; yaml counts it as a column.
  const shift = text.startsWith(BOM) ? 1 : 0;
  const placed: Array<{ readonly offset: number; readonly finding: Finding }> = [];
  for (const finding of findings) {
    const key = finding.path.at(-1);
    const container = valueAt(read.data, finding.path.slice(0, -1));
    const from = valueStarts.get(container)?.get(String(key));
    if (typeof key !== "string" || from === undefined) return undefined;
    const offset = tokenStart(text, from + shift);
    const value = valueAt(read.data, finding.path);
    // A check on the events' reading: the value's text (or its opening quote) is there.
    const quoted = text[offset] === '"' || text[offset] === "'";
    if (typeof value !== "string" || !(quoted || text.startsWith(value, offset))) return undefined;
    placed.push({ offset, finding });
  }
  const positions = linePositions(
    text,
    placed.map(({ offset }) => offset),
  );
  return orderIssues(
    placed.map(({ finding }, index) => {
      const { line, column } = positions[index] ?? { line: 1, column: 1 };
      const message = withoutSecrets(`${describePath(finding.path)}: ${finding.message}`);
      return { file, line, column, message };
    }),
  );
}

function valueAt(data: unknown, path: readonly Segment[]): unknown {
  let value = data;
  for (const segment of path) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<Segment, unknown>)[segment];
  }
  return value;
}

/** First character of the node that js-yaml opens at `from`: past spaces, line breaks, comments. */
function tokenStart(text: string, from: number): number {
  let at = from;
  for (;;) {
    const char = text[at];
    if (char === " " || char === "\n" || char === "\r") at++;
    else if (char === "#") at = lineEnd(text, at);
    else return at;
  }
}

/** 1-based line and column of each offset, as yaml's LineCounter gives them; one pass over the text. */
function linePositions(
  text: string,
  offsets: readonly number[],
): Array<{ line: number; column: number }> {
  const order = offsets
    .map((_, index) => index)
    .sort((a, b) => (offsets[a] ?? 0) - (offsets[b] ?? 0));
  const positions: Array<{ line: number; column: number }> = [];
  let line = 1;
  let lineStart = 0;
  for (const index of order) {
    const offset = offsets[index] ?? 0;
    for (let at = text.indexOf("\n", lineStart); at !== -1 && at < offset; ) {
      line++;
      lineStart = at + 1;
      at = text.indexOf("\n", lineStart);
    }
    positions[index] = { line, column: offset - lineStart + 1 };
  }
  return positions;
}

// ---------------------------------------------------------------- locating problems

/** Offset of the node at `path` (or of its key), falling back to the nearest ancestor that exists. */
function offsetOf(doc: Document.Parsed, path: readonly Segment[], pointAtKey: boolean): number {
  let node: unknown = doc.contents;
  let offset = rangeStart(node) ?? 0;
  for (const [index, segment] of path.entries()) {
    node = isAlias(node) ? node.resolve(doc) : node;
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => isScalar(p.key) && String(p.key.value) === String(segment),
      );
      if (pair === undefined) break;
      const keyOffset = rangeStart(pair.key) ?? offset;
      if (pointAtKey && index === path.length - 1) return keyOffset;
      node = pair.value;
      // `key:` with nothing after it may have no value node: point at the key.
      offset = rangeStart(node) ?? keyOffset;
    } else if (isSeq(node) && typeof segment === "number") {
      node = node.items[segment];
      offset = rangeStart(node) ?? offset;
    } else break;
  }
  return offset;
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: readonly number[] | null } | null | undefined)?.range;
  return range?.[0];
}

/**
 * `["clients", 2, "tokens", 0, "sha256"]` → `clients[2].tokens[0].sha256`, as operators
 * read it. A key that is not a field (a secret pasted as a YAML key) is cut short or
 * redacted: the position says where it is.
 */
function describePath(path: readonly Segment[]): string {
  if (path.length === 0) return "keystore";
  return path
    .map((segment, index) => {
      if (typeof segment === "number") return `[${segment}]`;
      const shown = shortened(segment);
      if (shown !== segment || !/^[A-Za-z_][A-Za-z0-9_-]*$/.test(segment)) {
        return `[${quoted(segment)}]`;
      }
      return index === 0 ? segment : `.${segment}`;
    })
    .join("");
}

/** JSON Pointer (`/clients/2/id`) → segments; digit-only segments index lists. */
function pointerSegments(pointer: string): Segment[] {
  if (pointer === "") return [];
  return pointer
    .slice(1)
    .split("/")
    .map((raw) => raw.replace(/~1/g, "/").replace(/~0/g, "~"))
    .map((segment) => (/^(0|[1-9][0-9]*)$/.test(segment) ? Number(segment) : segment));
}

// ---------------------------------------------------------------- schema issues

function schemaIssues(errors: readonly ErrorObject[], locator: Locator): KeystoreIssue[] {
  const ranked = [...errors].sort(
    (a, b) => (KEYWORD_RANK[a.keyword] ?? 9) - (KEYWORD_RANK[b.keyword] ?? 9),
  );
  // One message per value: an empty upstream key fails minLength and pattern alike.
  const byValue = new Map<string, KeystoreIssue>();
  for (const error of ranked) {
    const { path, message, anchor } = describeSchemaError(error, locator);
    const key = JSON.stringify(path);
    if (!byValue.has(key)) byValue.set(key, locator.issue(path, message, anchor));
  }
  return [...byValue.values()];
}

interface DescribedError {
  /** The value the message is about. */
  readonly path: readonly Segment[];
  /** Where the operator should look when that is not the value itself. */
  readonly anchor: Anchor;
  readonly message: string;
}

function describeSchemaError(error: ErrorObject, locator: Locator): DescribedError {
  const at = pointerSegments(error.instancePath);
  const parent = (error.parentSchema ?? {}) as Record<string, unknown>;
  if (error.keyword === "required") {
    // A missing field has no node: point at the mapping it is missing from.
    const path = [...at, String(error.params.missingProperty)];
    return { path, anchor: { path: at }, message: "is required" };
  }
  if (error.keyword === "additionalProperties") {
    const path = [...at, String(error.params.additionalProperty)];
    const known = Object.keys((parent.properties ?? {}) as object).join(", ");
    return { path, anchor: { atKey: true }, message: `unknown field (allowed: ${known})` };
  }
  return { path: at, anchor: {}, message: valueMessage(error, parent, locator.source(at)) };
}

/** `source` is the value as written, when it is a scalar. */
function valueMessage(
  error: ErrorObject,
  parent: Record<string, unknown>,
  source: string | undefined,
): string {
  if (typeof parent.errorMessage === "string") return parent.errorMessage;
  if (error.keyword === "pattern" && typeof parent.patternErrorMessage === "string") {
    return parent.patternErrorMessage;
  }
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "type":
      return typeMessage(String(params.type), error.data, source);
    case "const":
      return `must be ${JSON.stringify(params.allowedValue)}`;
    case "enum":
      return `must be one of: ${(params.allowedValues as unknown[]).map(String).join(", ")}`;
    case "minLength":
      return "must not be empty";
    case "minItems":
      return `must list at least ${String(params.limit)} item(s)`;
    default:
      return error.message ?? "is invalid";
  }
}

function typeMessage(type: string, data: unknown, source: string | undefined): string {
  const expected = TYPE_WORDS[type] ?? type;
  if (data === null) return `is empty; expected ${expected}`;
  // YAML reads `id: 123` or `disabled: True` as a number or boolean: say how to keep it a
  // string, quoting what was written (a 64-digit digest read as a number prints as 1.1e+63).
  if (type === "string" && (typeof data === "number" || typeof data === "boolean")) {
    return `must be a string; put it in quotes ("${source ?? String(data)}")`;
  }
  return `must be ${expected}`;
}

// ---------------------------------------------------------------- semantic issues

/** What the cross-entry checks need, read leniently so they run even when the schema failed. */
interface ClientRef {
  readonly index: number;
  readonly id: string | undefined;
  readonly digests: readonly { readonly index: number; readonly digest: string }[];
}

function semanticIssues(data: unknown, options: LoadOptions, locator: Locator): KeystoreIssue[] {
  const refs = clientRefs(data);
  const references = upstreamKeyReferences(data);
  return [
    ...emptyClientsIssues(data, options, locator),
    ...duplicateIdIssues(refs, locator),
    ...duplicateDigestIssues(refs, locator),
    ...sealedKeyIssues(references, locator),
    ...envReferenceIssues(references, options, locator),
    ...expiryIssues(data, locator),
  ];
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

function rawClients(data: unknown): unknown[] {
  const clients = asRecord(data)?.clients;
  return Array.isArray(clients) ? clients : [];
}

function rawTokens(client: unknown): unknown[] {
  const tokens = asRecord(client)?.tokens;
  return Array.isArray(tokens) ? tokens : [];
}

function clientRefs(data: unknown): ClientRef[] {
  return rawClients(data).map((client, index) => {
    const id = asRecord(client)?.id;
    const digests = rawTokens(client).flatMap((token, tokenIndex) => {
      const sha256 = asRecord(token)?.sha256;
      return typeof sha256 === "string" && LOOSE_DIGEST.test(sha256)
        ? [{ index: tokenIndex, digest: sha256.toLowerCase() }]
        : [];
    });
    return { index, id: typeof id === "string" ? id : undefined, digests };
  });
}

function emptyClientsIssues(
  data: unknown,
  options: LoadOptions,
  locator: Locator,
): KeystoreIssue[] {
  const clients = asRecord(data)?.clients;
  if (!options.requireClients || !Array.isArray(clients) || clients.length > 0) return [];
  return [locator.issue(["clients"], NO_CLIENTS_MESSAGE)];
}

function duplicateIdIssues(refs: readonly ClientRef[], locator: Locator): KeystoreIssue[] {
  const first = new Map<string, number>();
  const issues: KeystoreIssue[] = [];
  for (const { index, id } of refs) {
    if (id === undefined) continue;
    const earlier = first.get(id);
    if (earlier === undefined) first.set(id, index);
    else {
      const line = locator.line(["clients", earlier, "id"]);
      const shown = showableId(id) ? ` ${JSON.stringify(id)}` : "";
      const message = `duplicate client id${shown} (already used by clients[${earlier}] at line ${line}); ids must be unique`;
      issues.push(locator.issue(["clients", index, "id"], message));
    }
  }
  return issues;
}

function duplicateDigestIssues(refs: readonly ClientRef[], locator: Locator): KeystoreIssue[] {
  const owners = new Map<string, { client: ClientRef; token: number }>();
  const issues: KeystoreIssue[] = [];
  for (const client of refs) {
    for (const { index, digest } of client.digests) {
      const owner = owners.get(digest);
      if (owner === undefined) {
        owners.set(digest, { client, token: index });
        continue;
      }
      const where = `clients[${owner.client.index}].tokens[${owner.token}]`;
      const message =
        owner.client.index === client.index
          ? `digest ${digestPrefix(digest)}… is listed twice for client ${nameOf(client)} (also ${where})`
          : `digest ${digestPrefix(digest)}… of client ${nameOf(client)} already belongs to client ` +
            `${nameOf(owner.client)} (${where}); a token may belong to one client only`;
      issues.push(locator.issue(["clients", client.index, "tokens", index, "sha256"], message));
    }
  }
  return issues;
}

/** A client as a message names it: its id, or its place in the list when the id may be a secret. */
function nameOf(client: ClientRef): string {
  return clientName(client.id, client.index);
}

function clientName(id: string | undefined, index: number): string {
  return id !== undefined && showableId(id) ? JSON.stringify(id) : `clients[${index}]`;
}

/** An id a message may print: a well-formed one (so short, with no control characters) not shaped like a secret. */
function showableId(id: string): boolean {
  return CLIENT_ID.test(id) && !looksSecret(id);
}

/** An upstream key reference in the data, read leniently (any type), with where it is. */
interface Reference {
  readonly path: Segment[];
  readonly value: unknown;
}

/** Every upstream key reference in the data: the default's, then each client's. */
function upstreamKeyReferences(data: unknown): Reference[] {
  return [
    { path: ["defaults", "upstream_key"], value: asRecord(asRecord(data)?.defaults)?.upstream_key },
    ...rawClients(data).map((client, index) => ({
      path: ["clients", index, "upstream_key"],
      value: asRecord(client)?.upstream_key,
    })),
  ];
}

/** Well-formedness the schema's regular expression cannot express: real base64, long enough. */
function sealedKeyIssues(references: readonly Reference[], locator: Locator): KeystoreIssue[] {
  return references.flatMap(({ path, value }) => {
    const problem = typeof value === "string" ? sealedKeyProblem(value) : undefined;
    return problem === undefined ? [] : [locator.issue(path, problem)];
  });
}

/**
 * `env:` names that may not hold an upstream key: keygate's own settings, and names outside
 * KEYGATE_UPSTREAM_ENV_PREFIX. An error, not a warning: the file says to send a secret
 * it was never meant to send, for every client, internal ones included.
 */
function envReferenceIssues(
  references: readonly Reference[],
  options: LoadOptions,
  locator: Locator,
): KeystoreIssue[] {
  return references.flatMap(({ path, value }) => {
    const name = typeof value === "string" ? ENV_REFERENCE.exec(value)?.[1] : undefined;
    if (name === undefined) return [];
    const problem = envNameProblem(name, options.upstreamEnvPrefix ?? null);
    return problem === undefined ? [] : [locator.issue(path, `env:${shortened(name)} ${problem}`)];
  });
}

function sealedKeyProblem(value: string): string | undefined {
  const payload = ENC_PATTERN.exec(value)?.[2];
  if (payload === undefined) return undefined; // not an enc: value, or the schema already said so
  const bytes = Buffer.from(payload, "base64");
  if (bytes.toString("base64") !== payload) {
    return "the enc: value's payload is not valid base64 (was it truncated or re-wrapped?)";
  }
  if (bytes.length < MIN_SEALED_BYTES) {
    return "the enc: value is too short to hold an AES-GCM ciphertext (was it truncated?)";
  }
  return undefined;
}

/** The format check and the conversion must agree, or an expiry could silently become "never". */
function expiryIssues(data: unknown, locator: Locator): KeystoreIssue[] {
  return rawClients(data).flatMap((client, clientIndex) =>
    rawTokens(client).flatMap((token, tokenIndex) => {
      const expires = asRecord(token)?.expires;
      if (typeof expires !== "string" || Number.isFinite(epochMs(expires))) return [];
      return [
        locator.issue(["clients", clientIndex, "tokens", tokenIndex, "expires"], EXPIRES_MESSAGE),
      ];
    }),
  );
}

/** Epoch milliseconds of an RFC 3339 date-time; NaN when it is not one. Leap seconds roll over. */
function epochMs(text: string): number {
  const match = RFC3339.exec(text);
  if (match === null) return Number.NaN;
  const part = (index: number): number => Number(match[index] ?? 0);
  const millis = Math.floor(Number(`0.${match[7] ?? "0"}`) * 1000);
  const wallClock = Date.UTC(part(1), part(2) - 1, part(3), part(4), part(5), part(6), millis);
  const offsetMinutes = (match[8] === "-" ? -1 : 1) * (part(9) * 60 + part(10));
  return wallClock - offsetMinutes * 60_000;
}

// ---------------------------------------------------------------- conversion

function toKeystore(raw: RawKeystore): Keystore {
  return {
    version: 1,
    defaultUpstreamKey: raw.defaults?.upstream_key ?? null,
    clients: raw.clients.map(toClient),
  };
}

function toClient(raw: RawClient): KeystoreClient {
  return {
    id: raw.id,
    name: raw.name ?? null,
    kind: raw.kind ?? "client",
    disabled: raw.disabled ?? false,
    tokens: raw.tokens.map((token) => ({
      digest: token.sha256.toLowerCase(),
      expiresAt: token.expires === undefined ? null : epochMs(token.expires),
    })),
    upstreamKey: raw.upstream_key ?? null,
    routes: raw.routes === undefined ? null : [...raw.routes],
    models: raw.models === undefined ? null : [...raw.models],
  };
}

// ---------------------------------------------------------------- warnings

/**
 * Upstream keys that will not resolve for a client: the file stays valid (that client
 * alone answers 503 KEY_UNAVAILABLE), but the operator should hear about it now. One
 * warning per reference and problem, naming the clients affected, never the value.
 */
function upstreamKeyFindings(keystore: Keystore, options: LoadOptions): Finding[] {
  const grouped = new Map<string, { path: Segment[]; problem: string; clients: string[] }>();
  // Internal clients are let through without a key swap, so their key is never used.
  const swapped = (client: KeystoreClient) => client.kind !== "internal";
  const problemOf = referenceChecker(options);
  // The shared default is sealed to DEFAULTS_AAD, not to a client: it is checked once.
  const fallback = keystore.defaultUpstreamKey;
  const defaultProblem =
    fallback !== null && keystore.clients.some((c) => swapped(c) && c.upstreamKey === null)
      ? problemOf(fallback, DEFAULTS_AAD)
      : undefined;
  keystore.clients.forEach((client, index) => {
    if (!swapped(client)) return;
    const own = client.upstreamKey !== null;
    const problem = own ? problemOf(client.upstreamKey, client.id) : defaultProblem;
    if (problem === undefined) return;
    const path: Segment[] = own ? ["clients", index, "upstream_key"] : ["defaults", "upstream_key"];
    const key = `${JSON.stringify(path)}\n${problem}`;
    const entry = grouped.get(key) ?? { path, problem, clients: [] };
    entry.clients.push(clientName(client.id, index));
    grouped.set(key, entry);
  });
  return [...grouped.values()].map(({ path, problem, clients }) => ({
    path,
    message: `${problem}; ${clients.length === 1 ? "client" : "clients"} ${clients.join(", ")} will answer 503 KEY_UNAVAILABLE`,
  }));
}

/**
 * What checking each `enc:` value found, kept from one load to the next: the sync worker
 * stays up while edits keep coming, and a one-line edit to a 100 000-client file would
 * otherwise decrypt every key again (a quarter of the load). An outcome depends only on
 * the value, its binding and the master keys, so it is reused only under the same keys.
 * Holds the last load's values alone, and never a plaintext.
 */
let sealedOutcomes:
  | { readonly keys: string; readonly byValue: Map<string, string | undefined> }
  | undefined;

/** referenceProblem for one load, reusing the previous load's outcomes for `enc:` values. */
function referenceChecker(
  options: LoadOptions,
): (reference: string, binding: string) => string | undefined {
  const keys = masterKeysFingerprint(options.masterKeys);
  const previous = sealedOutcomes?.keys === keys ? sealedOutcomes.byValue : undefined;
  const byValue = new Map<string, string | undefined>();
  sealedOutcomes = { keys, byValue };
  return (reference, binding) => {
    // env: values depend on the environment, and cost nothing to check.
    if (!reference.startsWith(ENC_PREFIX)) return referenceProblem(reference, binding, options);
    // join makes a string of its own: a template string would hold slices of the whole
    // file's text, and keep it alive until the next load.
    const key = [binding, reference].join("\n");
    const outcome = previous?.has(key)
      ? previous.get(key)
      : referenceProblem(reference, binding, options);
    byValue.set(key, outcome);
    return outcome;
  };
}

function masterKeysFingerprint(masterKeys: MasterKeys): string {
  const hash = createHash("sha256");
  for (const [kid, key] of masterKeys) hash.update(kid).update("\0").update(key).update("\0");
  return hash.digest("hex");
}

/** What keeps `reference` from resolving, where `binding` is the AAD it must be sealed to. */
function referenceProblem(
  reference: string,
  binding: string,
  options: LoadOptions,
): string | undefined {
  if (reference.startsWith("env:")) return envProblem(reference.slice("env:".length), options);
  const result = decryptSecret(reference, binding, options.masterKeys);
  if (result.ok) {
    const problem = upstreamKeyValueProblem(result.value);
    return problem === undefined ? undefined : `decrypts to a key that ${problem}`;
  }
  const kid = quoted(result.kid ?? "");
  if (result.why === "unknown_kid") {
    return `master key ${kid} is not loaded (KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE)`;
  }
  if (result.why === "auth_failed" && binding === DEFAULTS_AAD) {
    return `does not decrypt with master key ${kid} as the shared default (a different key with that kid, or not sealed with --defaults)`;
  }
  if (result.why === "auth_failed") {
    const client = showableId(binding)
      ? `client id ${JSON.stringify(binding)}`
      : "this client's id";
    return `does not decrypt with master key ${kid} for ${client} (a different key with that kid, or encrypted for another client id)`;
  }
  return "is malformed";
}

/** The loader's reading of `env:<name>`; the names themselves were checked with the file. */
function envProblem(name: string, options: LoadOptions): string | undefined {
  const variable = `environment variable ${shortened(name)}`;
  const refused = envNameProblem(name, options.upstreamEnvPrefix ?? null);
  if (refused !== undefined) return `${variable} ${refused}`;
  const value = options.env[name];
  if (value === undefined) return `${variable} is not set`;
  const problem = upstreamKeyValueProblem(value);
  return problem === undefined ? undefined : `${variable} ${problem}`;
}
