/**
 * Loads keystore.yaml into the Keystore model: strict UTF-8 → YAML (read-yaml.ts, the one
 * reader) → JSON Schema (schemas/keystore.schema.json, its errors worded by
 * schema-issues.ts) → semantic checks (semantic-issues.ts) → conversion, then warnings
 * for upstream keys that will not resolve (upstream-key-warnings.ts). Every problem is located as
 * file:line:column and all of them are reported at once, so an operator fixes a file in
 * one pass. Positions are looked up only when there is something to report.
 * Pure apart from readKeystoreFile, which reads through read-text.ts; never prints a secret.
 */
import type { MasterKeys } from "../../crypto/aes-gcm.js";
import { compiledValidator } from "../../paths.js";
import { quoted, scrubbed, shortened, withoutSecrets } from "../../shown-text.js";
import {
  type Budget,
  type ClientKind,
  type Keystore,
  type KeystoreClient,
  KeystoreError,
  type KeystoreIssue,
  type LoadedKeystore,
} from "./model.js";
import { readKeystoreText, sha256Hex } from "./read-text.js";
import {
  indexNodes,
  type NodeIndex,
  positionsIn,
  readYaml,
  type Segment,
  type YamlProblem,
} from "./read-yaml.js";
import { schemaIssues } from "./schema-issues.js";
import { epochMs, semanticIssues } from "./semantic-issues.js";
import { type SealedKeyChecks, upstreamKeyFindings } from "./upstream-key-warnings.js";

// The file's bytes become text in one place, shared with the CLI and the sync.
export type { KeystoreText } from "./read-text.js";
export { decodeKeystoreText, readKeystoreBytes, sha256Hex } from "./read-text.js";
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
  readonly budget?: Budget;
}
interface RawKeystore {
  readonly version: 1;
  readonly defaults?: { readonly upstream_key?: string };
  readonly clients: readonly RawClient[];
}

/** Turns a path in the data into a located issue (see lazyLocator). */
export interface Locator {
  /**
   * An issue saying `<path>: <message>`, positioned at `anchor` (default: the value at
   * `path`), or at the anchor's key when `atKey` (an unknown field).
   */
  issue(path: readonly Segment[], message: string, anchor?: Anchor): KeystoreIssue;
  line(path: readonly Segment[]): number;
  /** The scalar at `path` as written in the file, when there is one. */
  source(path: readonly Segment[]): string | undefined;
}
export interface Anchor {
  readonly path?: readonly Segment[];
  readonly atKey?: boolean;
}

/**
 * The keystore schema's validator, compiled at build time with every error collected with
 * its data, for the report; on a valid file it costs what a stop-at-first-error one does.
 * The schema's errorMessage/patternErrorMessage annotations, which yaml-language-server
 * also shows in editors, word the issues (schema-issues.ts).
 */
const validateShape = compiledValidator<RawKeystore>("keystore");

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
    ...(raw.budget === undefined
      ? {}
      : { budget: { tokens: raw.budget.tokens, per: raw.budget.per } }),
  };
}
