/**
 * Loads keystore.yaml into the Keystore model: YAML syntax → JSON Schema
 * (schemas/keystore.schema.json) → semantic checks → conversion, then warnings for
 * upstream keys that will not resolve. Every problem is located as file:line:column and
 * all of them are reported at once, so an operator fixes a file in one pass.
 * Pure apart from readKeystoreFile's single read; never prints a secret.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { ErrorObject } from "ajv";
import { Ajv } from "ajv";
import addFormats from "ajv-formats";
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
import { decryptSecret, ENC_PATTERN, type MasterKeys } from "../crypto/aes-gcm.js";
import { digestPrefix } from "../crypto/token-hash.js";
import { readSchema } from "../paths.js";
import {
  type ClientKind,
  type Keystore,
  type KeystoreClient,
  KeystoreError,
  type KeystoreIssue,
  type LoadedKeystore,
} from "./types.js";

export interface LoadOptions {
  /** Name used in issues (`file:line:column: message`). */
  readonly file: string;
  readonly masterKeys: MasterKeys;
  /** Environment that `env:VAR` references are checked against. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Enforce mode: an empty `clients` list is an error, since auth on with no keys is a misconfiguration. */
  readonly requireClients: boolean;
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
}
interface Anchor {
  readonly path?: readonly Segment[];
  readonly atKey?: boolean;
}

// Non-standard keywords that yaml-language-server also shows in editors, so operators
// read the same message in their editor and in `keygate keystore check`.
const MESSAGE_KEYWORDS = ["errorMessage", "patternErrorMessage"] as const;

const ajv = new Ajv({ allErrors: true, strict: true, verbose: true });
ajv.addVocabulary([...MESSAGE_KEYWORDS]);
// ajv-formats is CommonJS: under NodeNext its default export is the module object.
addFormats.default(ajv, ["date-time"]);
const validateShape = ajv.compile<RawKeystore>(readSchema("keystore.schema.json"));

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
/** iv (12) + GCM tag (16) + at least one byte of key: anything shorter cannot be an upstream key. */
const MIN_SEALED_BYTES = 12 + 16 + 1;
const UNSAFE_KEY_VALUE = /[\r\n\0]/;
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt\s](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)$/;
const EXPIRES_MESSAGE = "must be an RFC 3339 date-time with a time zone, e.g. 2026-12-01T00:00:00Z";
const NO_CLIENTS_MESSAGE =
  "is empty: in enforce mode an empty keystore would deny every request; add a client " +
  "(keygate keystore add <id>) or set KEYGATE_MODE to recognize, dry-run or off";

/**
 * Parses and validates keystore.yaml text.
 * @throws KeystoreError with every issue found, each located in `options.file`.
 */
export function parseKeystore(text: string, options: LoadOptions): LoadedKeystore {
  return parseSource(text, sha256Hex(text), options);
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
  return parseSource(text, sha256Hex(bytes), { ...options, file: path });
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

function parseSource(text: string, sourceSha256: string, options: LoadOptions): LoadedKeystore {
  const lines = new LineCounter();
  // prettyErrors off: messages without the code excerpt, positions computed by us.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const issueAt = (offset: number, message: string): KeystoreIssue => {
    const { line, col } = lines.linePos(offset);
    return { file: options.file, line, column: col, message };
  };
  const yamlIssue = (error: YAMLError) => issueAt(error.pos[0], `YAML: ${error.message}`);
  if (doc.errors.length > 0) throw new KeystoreError(doc.errors.map(yamlIssue));
  const data = toPlainData(doc, issueAt);
  const locator: Locator = {
    issue: (path, message, anchor = {}) =>
      issueAt(
        offsetOf(doc, anchor.path ?? path, anchor.atKey ?? false),
        `${describePath(path)}: ${message}`,
      ),
    line: (path) => lines.linePos(offsetOf(doc, path, false)).line,
  };
  const valid = validateShape(data);
  const errors = [
    ...(valid ? [] : schemaIssues(validateShape.errors ?? [], locator)),
    ...semanticIssues(data, options, locator),
  ];
  if (!valid || errors.length > 0) throw new KeystoreError(orderIssues(errors));
  const keystore = toKeystore(data);
  const warnings = [
    ...doc.warnings.map(yamlIssue),
    ...upstreamKeyWarnings(keystore, options, locator),
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
    throw new KeystoreError([issueAt(0, `YAML: ${(error as Error).message}`)]);
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

/** `["clients", 2, "tokens", 0, "sha256"]` → `clients[2].tokens[0].sha256`, as operators read it. */
function describePath(path: readonly Segment[]): string {
  if (path.length === 0) return "keystore";
  return path
    .map((segment, index) => {
      if (typeof segment === "number") return `[${segment}]`;
      if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(segment)) return `[${JSON.stringify(segment)}]`;
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
    const { path, message, anchor } = describeSchemaError(error);
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

function describeSchemaError(error: ErrorObject): DescribedError {
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
  return { path: at, anchor: {}, message: valueMessage(error, parent) };
}

function valueMessage(error: ErrorObject, parent: Record<string, unknown>): string {
  if (typeof parent.errorMessage === "string") return parent.errorMessage;
  if (error.keyword === "pattern" && typeof parent.patternErrorMessage === "string") {
    return parent.patternErrorMessage;
  }
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "type":
      return typeMessage(String(params.type), error.data);
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

function typeMessage(type: string, data: unknown): string {
  const expected = TYPE_WORDS[type] ?? type;
  if (data === null) return `is empty; expected ${expected}`;
  // YAML reads `id: 123` or `name: yes` as a number or boolean: say how to keep it a string.
  if (type === "string" && (typeof data === "number" || typeof data === "boolean")) {
    return `must be a string; put it in quotes ("${String(data)}")`;
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
  return [
    ...emptyClientsIssues(data, options, locator),
    ...duplicateIdIssues(refs, locator),
    ...duplicateDigestIssues(refs, locator),
    ...sealedKeyIssues(data, locator),
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
      const message = `duplicate client id "${id}" (already used by clients[${earlier}] at line ${line}); ids must be unique`;
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

function nameOf(client: ClientRef): string {
  return client.id === undefined ? `clients[${client.index}]` : `"${client.id}"`;
}

/** Well-formedness the schema's regular expression cannot express: real base64, long enough. */
function sealedKeyIssues(data: unknown, locator: Locator): KeystoreIssue[] {
  const references: Array<{ path: Segment[]; value: unknown }> = [
    { path: ["defaults", "upstream_key"], value: asRecord(asRecord(data)?.defaults)?.upstream_key },
    ...rawClients(data).map((client, index) => ({
      path: ["clients", index, "upstream_key"],
      value: asRecord(client)?.upstream_key,
    })),
  ];
  return references.flatMap(({ path, value }) => {
    const problem = typeof value === "string" ? sealedKeyProblem(value) : undefined;
    return problem === undefined ? [] : [locator.issue(path, problem)];
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
function upstreamKeyWarnings(
  keystore: Keystore,
  options: LoadOptions,
  locator: Locator,
): KeystoreIssue[] {
  const grouped = new Map<string, { path: Segment[]; problem: string; clients: string[] }>();
  keystore.clients.forEach((client, index) => {
    const own = client.upstreamKey !== null;
    const reference = client.upstreamKey ?? keystore.defaultUpstreamKey;
    // Internal clients are let through without a key swap, so their key is never used.
    if (client.kind === "internal" || reference === null) return;
    const problem = referenceProblem(reference, client.id, options);
    if (problem === undefined) return;
    const path: Segment[] = own ? ["clients", index, "upstream_key"] : ["defaults", "upstream_key"];
    const key = `${JSON.stringify(path)}\n${problem}`;
    const entry = grouped.get(key) ?? { path, problem, clients: [] };
    entry.clients.push(`"${client.id}"`);
    grouped.set(key, entry);
  });
  return [...grouped.values()].map(({ path, problem, clients }) =>
    locator.issue(
      path,
      `${problem}; ${clients.length === 1 ? "client" : "clients"} ${clients.join(", ")} will answer 503 KEY_UNAVAILABLE`,
    ),
  );
}

function referenceProblem(
  reference: string,
  clientId: string,
  options: LoadOptions,
): string | undefined {
  if (reference.startsWith("env:")) return envProblem(reference.slice("env:".length), options.env);
  const result = decryptSecret(reference, clientId, options.masterKeys);
  if (result.ok) {
    return isUsableKey(result.value)
      ? undefined
      : "decrypts to an empty value or one with a line break";
  }
  if (result.why === "unknown_kid") {
    return `master key "${result.kid}" is not loaded (KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE)`;
  }
  if (result.why === "auth_failed") {
    return `does not decrypt with master key "${result.kid}" for client id "${clientId}" (a different key with that kid, or encrypted for another client id)`;
  }
  return "is malformed";
}

function envProblem(name: string, env: LoadOptions["env"]): string | undefined {
  const value = env[name];
  if (value === undefined) return `environment variable ${name} is not set`;
  if (!isUsableKey(value)) return `environment variable ${name} is empty or contains a line break`;
  return undefined;
}

function isUsableKey(value: string): boolean {
  return value.trim() !== "" && !UNSAFE_KEY_VALUE.test(value);
}
