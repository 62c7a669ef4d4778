/**
 * Loads keystore.yaml into the Keystore model: strict UTF-8 → YAML (read-yaml.ts, the one
 * reader) → JSON Schema (schemas/keystore.schema.json) → semantic checks → conversion,
 * then warnings for upstream keys that will not resolve. Every problem is located as
 * file:line:column and all of them are reported at once, so an operator fixes a file in
 * one pass. Positions are looked up only when there is something to report.
 * Pure apart from readKeystoreFile, which reads through read-text.ts; never prints a secret.
 */
import { createHash } from "node:crypto";
import type { ErrorObject } from "ajv";
import { Ajv } from "ajv";
import addFormats from "ajv-formats";
import { ENC_PATTERN, ENC_PREFIX, type MasterKeys } from "../../crypto/aes-gcm.js";
import { digestPrefix } from "../../crypto/token-hash.js";
import { readSchema } from "../../paths.js";
import { quoted, scrubbed, shortened, withoutSecrets } from "../../shown-text.js";
import {
  type ClientKind,
  type Keystore,
  type KeystoreClient,
  KeystoreError,
  type KeystoreIssue,
  type LoadedKeystore,
} from "./model.js";
import { readKeystoreText } from "./read-text.js";
import {
  indexNodes,
  type NodeIndex,
  positionsIn,
  readYaml,
  type Segment,
  type YamlProblem,
} from "./read-yaml.js";
import { envNameProblem } from "./upstream-key-rules.js";
import {
  clientName,
  type SealedKeyChecks,
  showableId,
  upstreamKeyFindings,
} from "./upstream-key-warnings.js";

// The file's bytes become text in one place, shared with the CLI and the sync.
export type { KeystoreText } from "./read-text.js";
export { decodeKeystoreText, readKeystoreBytes } from "./read-text.js";
export { readKeystoreText };

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
  /** The previous loads' `enc:` checks, for a caller that loads repeatedly; absent: none kept. */
  readonly sealedKeyChecks?: SealedKeyChecks;
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

// Non-standard keywords that yaml-language-server also shows in editors, so operators
// read the same message in their editor and in `keygate keystore check`.
const MESSAGE_KEYWORDS = ["errorMessage", "patternErrorMessage"] as const;

/**
 * The keystore schema compiled to a validator that collects every error with its data,
 * for the report; on a valid file it costs what a stop-at-first-error one does.
 */
const validateShape = (() => {
  const ajv = new Ajv({ allErrors: true, strict: true, verbose: true });
  ajv.addVocabulary([...MESSAGE_KEYWORDS]);
  // ajv-formats is CommonJS: under NodeNext its default export is the module object.
  addFormats.default(ajv, ["date-time"]);
  return ajv.compile<RawKeystore>(readSchema("keystore.schema.json"));
})();

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
const BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** iv (12) + GCM tag (16) + at least one byte of key: anything shorter cannot be an upstream key. */
const MIN_SEALED_BYTES = 12 + 16 + 1;
/** An `env:` reference the schema accepts; other values are the schema's to report. */
const ENV_REFERENCE = /^env:([A-Za-z_][A-Za-z0-9_]*)$/;
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt\s](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)$/;
const EXPIRES_MESSAGE = "must be an RFC 3339 date-time with a time zone, e.g. 2026-12-01T00:00:00Z";
const MERGE_KEY = "<<";
const MERGE_KEY_MESSAGE =
  "merge keys (<<) are not allowed: keystore.yaml is data, write each field out in full";
const NO_CLIENTS_MESSAGE =
  "is empty: in enforce mode an empty keystore would deny every request; add a client " +
  "(keygate keystore add <id>) or set KEYGATE_MODE to recognize, dry-run or off";
const BOM = "\uFEFF";

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
  const validated = validateKeystore(text, options, sourceSha256);
  return { ...validated.loaded, warnings: validated.upstreamKeyWarnings() };
}

/** A keystore that passed every check, with its upstream-key warnings still to come. */
export interface ValidatedKeystore {
  /** The keystore, with no warnings yet. */
  readonly loaded: LoadedKeystore;
  /**
   * Warnings, located: upstream keys that will not resolve, and what js-yaml reads but
   * flags (a flow list's `]` at its key's indentation). Tries every `enc:` value
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
  // Positions count from the first character an editor shows, so without a BOM.
  const body = text.startsWith(BOM) ? text.slice(1) : text;
  const read = readYaml(body);
  if (!read.ok) throw new KeystoreError(yamlIssues(body, options.file, [read]));
  const { data } = read;
  const locator = lazyLocator(body, options.file);
  const semantic = semanticIssues(data, options, locator);
  if (!validateShape(data) || semantic.length > 0) {
    const schema = schemaIssues(validateShape.errors ?? [], locator);
    throw new KeystoreError(orderIssues([...schema, ...semantic]));
  }
  const keystore = toKeystore(data);
  // What the closure below holds: not the parsed data, which the model replaces.
  const yamlWarnings = read.warnings;
  return {
    loaded: { keystore, sourceSha256, warnings: [] },
    upstreamKeyWarnings: () => {
      const placed = lazyLocator(body, options.file);
      const findings = upstreamKeyFindings(keystore, options);
      return orderIssues([
        ...yamlIssues(body, options.file, yamlWarnings),
        ...findings.map(({ path, message }) => placed.issue(path, message)),
      ]);
    },
  };
}

/**
 * Reads and parses a keystore file. `sourceSha256` is the hash of the file's bytes.
 * @throws KeystoreError when the file is missing, unreadable, not UTF-8 or invalid.
 */
export function readKeystoreFile(path: string, options: Omit<LoadOptions, "file">): LoadedKeystore {
  const { text, sourceSha256 } = readKeystoreText(path);
  return parseKeystore(text, { ...options, file: path }, sourceSha256);
}

function sha256Hex(source: string | Buffer): string {
  return createHash("sha256").update(source).digest("hex");
}

/** js-yaml's messages may quote the file: a secret pasted in the wrong place must not travel with them. */
function yamlIssues(text: string, file: string, problems: readonly YamlProblem[]): KeystoreIssue[] {
  const position = positionsIn(text);
  return problems.map(({ offset, message }) => ({
    file,
    ...position(offset),
    message: withoutSecrets(`YAML: ${scrubbed(message)}`),
  }));
}

/** A Locator that indexes where the nodes of `text` are on first use, and not before. */
function lazyLocator(text: string, file: string): Locator {
  let index: NodeIndex | undefined;
  const nodes = () => {
    index ??= indexNodes(text);
    return index;
  };
  return {
    issue: (path, message, anchor = {}) => {
      const offset = nodes().offsetOf(anchor.path ?? path, anchor.atKey ?? false);
      const { line, column } = nodes().position(offset);
      return { file, line, column, message: withoutSecrets(`${describePath(path)}: ${message}`) };
    },
    line: (path) => nodes().position(nodes().offsetOf(path, false)).line,
    source: (path) => nodes().source(path),
  };
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

// ---------------------------------------------------------------- paths

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
    const message =
      error.params.additionalProperty === MERGE_KEY
        ? MERGE_KEY_MESSAGE
        : `unknown field (allowed: ${known})`;
    return { path, anchor: { atKey: true }, message };
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

/**
 * What the schema cannot express: unique ids and digests, real `enc:` payloads, `env:`
 * names that may hold a key, expiries the conversion reads as written, and clients in
 * enforce mode. The data is read leniently, so these run even when the schema failed.
 * One pass with plain loops: it runs on every valid 100 000-client file.
 */
function semanticIssues(data: unknown, options: LoadOptions, locator: Locator): KeystoreIssue[] {
  const root = asRecord(data);
  const clients: readonly unknown[] = Array.isArray(root?.clients) ? root.clients : [];
  const issues: KeystoreIssue[] = [];
  const problem = (message: string | undefined, ...path: Segment[]) => {
    if (message !== undefined) issues.push(locator.issue(path, message));
  };
  if (options.requireClients && Array.isArray(root?.clients) && clients.length === 0) {
    problem(NO_CLIENTS_MESSAGE, "clients");
  }
  const defaultKey = asRecord(root?.defaults)?.upstream_key;
  problem(malformedReference(defaultKey, options), "defaults", "upstream_key");
  const firstUse = new Map<string, number>();
  const owners = new Map<string, TokenAt>();
  for (let index = 0; index < clients.length; index++) {
    const client = asRecord(clients[index]);
    problem(duplicateId(idOf(client), index, firstUse, locator), "clients", index, "id");
    problem(malformedReference(client?.upstream_key, options), "clients", index, "upstream_key");
    const tokens: readonly unknown[] = Array.isArray(client?.tokens) ? client.tokens : [];
    for (let token = 0; token < tokens.length; token++) {
      const { sha256, expires } = asRecord(tokens[token]) ?? {};
      if (typeof expires === "string" && !Number.isFinite(epochMs(expires))) {
        problem(EXPIRES_MESSAGE, "clients", index, "tokens", token, "expires");
      }
      const shared = sharedDigest(sha256, { client: index, token }, owners, clients);
      problem(shared, "clients", index, "tokens", token, "sha256");
    }
  }
  return issues;
}

/** Where a token is: its client's index and its own in that client's list. */
interface TokenAt {
  readonly client: number;
  readonly token: number;
}

/** The problem with `id` when an earlier client has it; records it when none has. */
function duplicateId(
  id: string | undefined,
  index: number,
  firstUse: Map<string, number>,
  locator: Locator,
): string | undefined {
  if (id === undefined) return undefined;
  const earlier = firstUse.get(id);
  if (earlier === undefined) {
    firstUse.set(id, index);
    return undefined;
  }
  const line = locator.line(["clients", earlier, "id"]);
  const shown = showableId(id) ? ` ${JSON.stringify(id)}` : "";
  return `duplicate client id${shown} (already used by clients[${earlier}] at line ${line}); ids must be unique`;
}

/** The problem with a digest (any case) when an earlier token has it; records it when none has. */
function sharedDigest(
  sha256: unknown,
  at: TokenAt,
  owners: Map<string, TokenAt>,
  clients: readonly unknown[],
): string | undefined {
  if (typeof sha256 !== "string" || !LOOSE_DIGEST.test(sha256)) return undefined;
  const digest = sha256.toLowerCase();
  const owner = owners.get(digest);
  if (owner === undefined) {
    owners.set(digest, at);
    return undefined;
  }
  const name = (index: number) => clientName(idOf(clients[index]), index);
  const where = `clients[${owner.client}].tokens[${owner.token}]`;
  return owner.client === at.client
    ? `digest ${digestPrefix(digest)}… is listed twice for client ${name(at.client)} (also ${where})`
    : `digest ${digestPrefix(digest)}… of client ${name(at.client)} already belongs to client ` +
        `${name(owner.client)} (${where}); a token may belong to one client only`;
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

function idOf(client: unknown): string | undefined {
  const id = asRecord(client)?.id;
  return typeof id === "string" ? id : undefined;
}

/**
 * What the schema's pattern cannot say about an upstream key reference: an `enc:` payload
 * must be real base64 and long enough; an `env:` name must not be keygate's own setting
 * nor outside KEYGATE_UPSTREAM_ENV_PREFIX (an error, not a warning: the file says to send
 * a secret it was never meant to send). Other values are the schema's to report.
 */
/** Base64 as Buffer writes it (whole quanta, padded, no stray bits), long enough for AES-GCM. */
function sealedPayloadProblem(payload: string): string | undefined {
  const padding = payload.endsWith("==") ? 2 : payload.endsWith("=") ? 1 : 0;
  const last = BASE64_DIGITS.indexOf(payload.charAt(payload.length - 1 - padding));
  const strayBits = last & (padding === 2 ? 0x0f : padding === 1 ? 0x03 : 0);
  if (last === -1 || strayBits !== 0 || payload.length % 4 !== 0) {
    return "the enc: value's payload is not valid base64 (was it truncated or re-wrapped?)";
  }
  if ((payload.length / 4) * 3 - padding < MIN_SEALED_BYTES) {
    return "the enc: value is too short to hold an AES-GCM ciphertext (was it truncated?)";
  }
  return undefined;
}

function malformedReference(value: unknown, options: LoadOptions): string | undefined {
  if (typeof value !== "string") return undefined;
  if (value.startsWith(ENC_PREFIX)) {
    // The structure first, without a regular expression (this runs for every client); a
    // value that does not have the enc: shape at all is the schema's to report.
    const problem = sealedPayloadProblem(value.slice(value.lastIndexOf(":") + 1));
    return problem !== undefined && ENC_PATTERN.test(value) ? problem : undefined;
  }
  const name = ENV_REFERENCE.exec(value)?.[1];
  const problem =
    name === undefined ? undefined : envNameProblem(name, options.upstreamEnvPrefix ?? null);
  return problem === undefined ? undefined : `env:${shortened(name ?? "")} ${problem}`;
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
