/**
 * The one place that edits keystore.yaml. An edit is a read-modify-write done entirely
 * under an exclusive lock, proper-lockfile's `<file>.lock` directory (so concurrent CLI
 * runs never lose one another's edit), through yaml's Document API (comments, ordering
 * and layout survive), validated with parseKeystore before anything is written (an
 * invalid keystore is never written), and written atomically: a temp file in the same
 * directory, fsync, rename, fsync of the directory. The running server therefore only
 * ever sees the old file or the new one.
 *
 * Decisions an operator may meet:
 * - A symlinked keystore (a Kubernetes ConfigMap mount) is refused, not edited through:
 *   kubelet would silently put the old content back, and the lock must sit next to the
 *   file actually replaced so every editor serialises on the same lock.
 * - The written file is 0600, or 0640 when the original was deliberately group-readable
 *   and not world-readable (root:keygate 0640 is how a service account reads a config it
 *   may not write; dropping the group bit would make the server keep serving a stale
 *   keystore). Owner and group are kept where the OS allows.
 */
import { randomBytes } from "node:crypto";
import fs, {
  closeSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  lstatSync,
  openSync,
  readFileSync,
  renameSync,
  type Stats,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type Document,
  isCollection,
  isMap,
  isScalar,
  isSeq,
  type Node,
  type Pair,
  parseDocument,
  visit,
  type YAMLMap,
  type YAMLSeq,
} from "yaml";
import { ENC_PATTERN, type MasterKeys } from "../../crypto/aes-gcm.js";
import { decodeKeystoreText, parseKeystore } from "../format/load.js";
import {
  type ClientKind,
  DEFAULTS_AAD,
  formatIssue,
  KeystoreError,
  type KeystoreIssue,
} from "../format/model.js";

/**
 * Additional authenticated data of an `enc:` value in `defaults.upstream_key` (a value no
 * client id can equal). Defined once in types.ts, re-exported here for editing code.
 */
export { DEFAULTS_AAD };

/**
 * A lock nobody has refreshed for this long belongs to a dead process and is taken over.
 * An edit runs synchronously from reading the file to writing it, so its holder cannot
 * refresh the lock meanwhile: this must outlast the longest edit (a 100 000-client
 * keystore takes about 30 s on a busy 2-core machine; an editor that overruns it and is
 * taken over writes nothing, see HeldLock.assertHeld).
 */
const LOCK_STALE_MS = 45_000;
/**
 * Give up when the lock has had the same holder this long. The clock restarts when the
 * holder changes: ten queued edits of a large keystore are progress, not a stuck lock.
 * Longer than LOCK_STALE_MS, so a waiter outlasts a dead holder's lock and takes it over.
 */
const LOCK_TIMEOUT_MS = LOCK_STALE_MS + 10_000;
const LOCK_BACKOFF_FIRST_MS = 10;
const LOCK_BACKOFF_MAX_MS = 250;
const PRIVATE_MODE = 0o600;
const GROUP_READABLE_MODE = 0o640;
/** The order of a client's fields in DESIGN §4: new fields are inserted where a reader expects them. */
const CLIENT_FIELD_ORDER = [
  "id",
  "name",
  "tokens",
  "upstream_key",
  "routes",
  "models",
  "disabled",
  "kind",
] as const;
const TOP_FIELD_ORDER = ["version", "defaults", "clients"] as const;

export interface EditOptions {
  readonly masterKeys: MasterKeys;
  /** Environment that `env:VAR` references are checked against (for warnings). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Enforce mode: the edit may not leave the keystore without clients. */
  readonly requireClients: boolean;
  /** KEYGATE_UPSTREAM_ENV_PREFIX: an edit may not leave an `env:` name without it. */
  readonly upstreamEnvPrefix?: string | null;
  /** How long to wait while one concurrent edit holds the lock (default 55 s). */
  readonly lockTimeoutMs?: number;
}

export interface EditResult<T> {
  /** What the edit function returned. */
  readonly value: T;
  /** False when the edit changed nothing: the file was not touched. */
  readonly written: boolean;
  /** Warnings the edit introduced (e.g. an upstream key that will not resolve); never a value. */
  readonly warnings: readonly KeystoreIssue[];
  /** Permission bits of the written file, and of the file before when they differ. */
  readonly mode: number | undefined;
  readonly previousMode: number | undefined;
  /** Set when the original owner or group could not be kept. */
  readonly ownerNotKept: boolean;
}

/** An edit that was refused; nothing was written. `details` are extra lines (issues) to show. */
export class KeystoreEditError extends Error {
  readonly details: readonly string[];
  constructor(message: string, details: readonly string[] = []) {
    super(message);
    this.name = "KeystoreEditError";
    this.details = details;
  }
}

/** A new client as `keystore add` writes it; keys in DESIGN §4 order. */
export interface NewClient {
  readonly id: string;
  readonly name?: string;
  readonly tokens: readonly NewToken[];
  readonly upstreamKey?: string;
  readonly routes?: readonly string[];
  readonly models?: readonly string[];
  readonly kind?: ClientKind;
}

export interface NewToken {
  /** Lowercase hex SHA-256 of the token; never the token. */
  readonly sha256: string;
  /** RFC 3339. */
  readonly expires?: string;
}

/** A token as the file holds it. */
export interface TokenEntry {
  /** Lowercase hex (the file may hold upper case). */
  readonly digest: string;
  readonly expires: string | undefined;
}

/** An `enc:` value in the file, with the AAD it is bound to. */
export interface SealedValue {
  /** The client id, or undefined for `defaults.upstream_key`. */
  readonly clientId: string | undefined;
  readonly aad: string;
  readonly value: string;
  replace(value: string): void;
}

/**
 * Edits keystore.yaml under its lock: reads it, hands `edit` a draft of the Document,
 * validates the result and writes it atomically if the draft changed.
 * @throws KeystoreEditError when the file is missing, a symlink, not YAML, locked for too
 *   long, or the edit would make it invalid (issues in `details`); nothing is written.
 * @throws Error on an unexpected I/O failure (the original file is left as it was).
 */
export async function editKeystore<T>(
  file: string,
  options: EditOptions,
  edit: (draft: KeystoreDraft) => T,
): Promise<EditResult<T>> {
  // Fail fast (missing file, symlink) before waiting for anyone's lock.
  statKeystore(file);
  const lock = await acquireLock(file, options.lockTimeoutMs ?? LOCK_TIMEOUT_MS);
  try {
    // Read under the lock: whatever was written before we got it is what we edit.
    const current = statKeystore(file);
    const text = readText(file);
    const draft = KeystoreDraft.parse(text, file);
    const value = edit(draft);
    const unchanged = {
      value,
      written: false,
      warnings: [],
      mode: undefined,
      previousMode: undefined,
      ownerNotKept: false,
    };
    if (!draft.changed) return unchanged;
    const edited = draft.toString();
    const { masterKeys, env, requireClients } = options;
    const upstreamEnvPrefix = options.upstreamEnvPrefix ?? null;
    const validation = { file, masterKeys, env, requireClients, upstreamEnvPrefix };
    let warnings: readonly KeystoreIssue[];
    try {
      warnings = newWarnings(text, parseKeystore(edited, validation).warnings, validation);
    } catch (error) {
      if (!(error instanceof KeystoreError)) throw error;
      // Messages without line:column: those would point into text that was never written.
      throw new KeystoreEditError(
        `the edit would leave ${file} invalid, so nothing was written`,
        error.issues.map((issue) => `  ${issue.message}`),
      );
    }
    lock.assertHeld();
    const mode = modeFor(current);
    const ownerNotKept = writeAtomically(file, edited, mode, current);
    const previousMode = current.mode & 0o777;
    return {
      value,
      written: true,
      warnings,
      mode,
      previousMode: previousMode === mode ? undefined : previousMode,
      ownerNotKept,
    };
  } finally {
    await lock.release();
  }
}

// ---------------------------------------------------------------- the draft

/**
 * keystore.yaml as a yaml Document with typed edits. Every mutator marks the draft
 * changed; reading never does. Values are written as YAML scalars, never interpolated.
 */
export class KeystoreDraft {
  #changed = false;
  readonly #doc: Document.Parsed;
  readonly #file: string;
  readonly #layout: Layout;

  private constructor(doc: Document.Parsed, file: string, layout: Layout) {
    this.#doc = doc;
    this.#file = file;
    this.#layout = layout;
  }

  /**
   * @throws KeystoreEditError when the text is not YAML or has no `clients` list to edit.
   */
  static parse(text: string, file: string): KeystoreDraft {
    const doc = parseDocument(text, { prettyErrors: false });
    if (doc.errors.length > 0) {
      throw new KeystoreEditError(
        `${file} is not valid YAML; fix it first (keygate keystore check shows where)`,
      );
    }
    if (!isMap(doc.contents) || !isSeq(doc.contents.get("clients", true))) {
      throw new KeystoreEditError(
        `${file} has no clients list to edit; fix it first (keygate keystore check)`,
      );
    }
    rehomeTrailingComments(doc, text);
    return new KeystoreDraft(doc, file, detectLayout(doc, text));
  }

  get changed(): boolean {
    return this.#changed;
  }

  /** The edited text, in the layout the file already had. */
  toString(): string {
    return this.#doc.toString({
      indent: this.#layout.indent,
      indentSeq: this.#layout.indentSeq,
      lineWidth: 0,
      flowCollectionPadding: this.#layout.flowPadding,
    });
  }

  clientIds(): string[] {
    return this.#clientMaps().map((map) => String(map.get("id")));
  }

  hasClient(id: string): boolean {
    return this.#clientMaps().some((map) => map.get("id") === id);
  }

  /** @throws KeystoreEditError when there is no such client. */
  client(id: string): ClientDraft {
    const map = this.#clientMaps().find((candidate) => candidate.get("id") === id);
    if (map === undefined) throw new KeystoreEditError(`no client "${id}" in ${this.#file}`);
    return new ClientDraft(id, map, this.#doc, () => this.#markChanged());
  }

  /** Appends a client in the style of the list. @throws KeystoreEditError if the id exists. */
  addClient(spec: NewClient): void {
    if (this.hasClient(spec.id)) {
      throw new KeystoreEditError(
        `client "${spec.id}" already exists in ${this.#file} (keygate keystore rotate ${spec.id} gives it a new token)`,
      );
    }
    const seq = this.#clients();
    // `clients: []` becomes a block list: a flow list of maps would be one unreadable line.
    if (seq.flow && seq.items.length === 0) seq.flow = false;
    const map = this.#doc.createNode({ id: spec.id }) as YAMLMap;
    if (spec.name !== undefined) map.add(this.#doc.createPair("name", spec.name));
    map.add(this.#doc.createPair("tokens", spec.tokens.map(tokenData)));
    if (spec.upstreamKey !== undefined)
      map.add(this.#doc.createPair("upstream_key", spec.upstreamKey));
    // Short allow-lists read best on one line, as in DESIGN §4's `routes: [/services/]`.
    if (spec.routes !== undefined) map.add(this.#flowPair("routes", spec.routes));
    if (spec.models !== undefined) map.add(this.#flowPair("models", spec.models));
    if (spec.kind !== undefined && spec.kind !== "client")
      map.add(this.#doc.createPair("kind", spec.kind));
    seq.items.push(map);
    this.#markChanged();
  }

  /** @throws KeystoreEditError when there is no such client. */
  removeClient(id: string): void {
    const seq = this.#clients();
    const index = seq.items.findIndex((item) => isMap(item) && item.get("id") === id);
    if (index === -1) throw new KeystoreEditError(`no client "${id}" in ${this.#file}`);
    seq.items.splice(index, 1);
    this.#markChanged();
  }

  defaultUpstreamKey(): string | undefined {
    const value = this.#doc.getIn(["defaults", "upstream_key"]);
    return typeof value === "string" ? value : undefined;
  }

  /** Sets `defaults.upstream_key`, creating `defaults:` before `clients:` when absent. */
  setDefaultUpstreamKey(value: string): void {
    const top = this.#doc.contents as YAMLMap;
    const defaults = top.get("defaults", true);
    if (isMap(defaults)) setScalar(this.#doc, defaults, "upstream_key", value, ["upstream_key"]);
    else if (defaults === undefined || (isScalar(defaults) && defaults.value === null)) {
      const node = this.#doc.createNode({ upstream_key: value });
      insertOrdered(top, this.#doc.createPair("defaults", node), TOP_FIELD_ORDER);
    } else throw new KeystoreEditError(`defaults in ${this.#file} is not a mapping`);
    this.#markChanged();
  }

  /** Every `enc:` upstream key in the file: the default's and each client's. */
  sealedValues(): SealedValue[] {
    const values: SealedValue[] = [];
    const defaults = (this.#doc.contents as YAMLMap).get("defaults", true);
    const sealedIn = (map: YAMLMap, clientId: string | undefined, aad: string) => {
      const value = map.get("upstream_key");
      if (typeof value !== "string" || !ENC_PATTERN.test(value)) return;
      values.push({
        clientId,
        aad,
        value,
        replace: (next) => {
          setScalar(this.#doc, map, "upstream_key", next, CLIENT_FIELD_ORDER);
          this.#markChanged();
        },
      });
    };
    if (isMap(defaults)) sealedIn(defaults, undefined, DEFAULTS_AAD);
    for (const map of this.#clientMaps()) {
      const id = map.get("id");
      if (typeof id === "string") sealedIn(map, id, id);
    }
    return values;
  }

  #clients(): YAMLSeq {
    // parse() checked that this is a list; edits never replace it.
    const clients: unknown = (this.#doc.contents as YAMLMap).get("clients", true);
    return clients as YAMLSeq;
  }

  #clientMaps(): YAMLMap[] {
    return this.#clients().items.filter((item): item is YAMLMap => isMap(item));
  }

  #flowPair(key: string, values: readonly string[]): Pair {
    const node = this.#doc.createNode([...values]) as YAMLSeq;
    node.flow = true;
    return this.#doc.createPair(key, node);
  }

  #markChanged(): void {
    this.#changed = true;
  }
}

/** One client of a draft. */
export class ClientDraft {
  readonly id: string;
  readonly #map: YAMLMap;
  readonly #doc: Document.Parsed;
  readonly #markChanged: () => void;

  /** @internal Use KeystoreDraft.client(). */
  constructor(id: string, map: YAMLMap, doc: Document.Parsed, markChanged: () => void) {
    this.id = id;
    this.#map = map;
    this.#doc = doc;
    this.#markChanged = markChanged;
  }

  get kind(): ClientKind {
    return this.#map.get("kind") === "internal" ? "internal" : "client";
  }

  get disabled(): boolean {
    return this.#map.get("disabled") === true;
  }

  get upstreamKey(): string | undefined {
    const value = this.#map.get("upstream_key");
    return typeof value === "string" ? value : undefined;
  }

  tokens(): TokenEntry[] {
    return this.#tokenMaps().map((map) => {
      const expires = map.get("expires");
      return {
        digest: String(map.get("sha256")).toLowerCase(),
        expires: typeof expires === "string" ? expires : undefined,
      };
    });
  }

  addToken(token: NewToken): void {
    const seq = this.#tokenSeq();
    seq.items.push(this.#doc.createNode(tokenData(token)) as YAMLMap);
    this.#markChanged();
  }

  /** Sets the expiry of the token at `index` (as in tokens()). */
  setTokenExpiry(index: number, expires: string): void {
    const map = this.#tokenMaps()[index];
    if (map === undefined) throw new RangeError(`no token ${index} for client "${this.id}"`);
    setScalar(this.#doc, map, "expires", expires, ["sha256", "expires"]);
    this.#markChanged();
  }

  /** Removes the tokens at the given indexes (as in tokens()). */
  removeTokens(indexes: readonly number[]): void {
    if (indexes.length === 0) return;
    const doomed = new Set(indexes.map((index) => this.#tokenMaps()[index]));
    const seq = this.#tokenSeq();
    seq.items = seq.items.filter((item) => !doomed.has(item as YAMLMap));
    this.#markChanged();
  }

  /** `disabled: true`, or `disabled: false` when the field is there (absent already means enabled). */
  setDisabled(disabled: boolean): void {
    if (this.disabled === disabled) return;
    if (!disabled && !this.#map.has("disabled")) return;
    setScalar(this.#doc, this.#map, "disabled", disabled, CLIENT_FIELD_ORDER);
    this.#markChanged();
  }

  setUpstreamKey(value: string): void {
    if (this.upstreamKey === value) return;
    setScalar(this.#doc, this.#map, "upstream_key", value, CLIENT_FIELD_ORDER);
    this.#markChanged();
  }

  #tokenSeq(): YAMLSeq {
    const seq = this.#map.get("tokens", true);
    if (!isSeq(seq)) throw new KeystoreEditError(`client "${this.id}" has no tokens list`);
    return seq;
  }

  #tokenMaps(): YAMLMap[] {
    return this.#tokenSeq().items.filter((item): item is YAMLMap => isMap(item));
  }
}

function tokenData(token: NewToken): Record<string, string> {
  return token.expires === undefined
    ? { sha256: token.sha256 }
    : { sha256: token.sha256, expires: token.expires };
}

/**
 * Sets `key` in `map`: an existing scalar keeps its node (and so its comments); a new
 * pair goes where `order` places it rather than at the end.
 */
function setScalar(
  doc: Document,
  map: YAMLMap,
  key: string,
  value: string | boolean,
  order: readonly string[],
): void {
  const existing = map.items.find((pair) => isScalar(pair.key) && pair.key.value === key);
  if (existing !== undefined) {
    if (isScalar(existing.value)) {
      existing.value.value = value;
      // A quoted style chosen for the old value may not suit the new one; let yaml choose.
      if (typeof value !== "string") existing.value.type = undefined;
    } else existing.value = doc.createNode(value);
    return;
  }
  insertOrdered(map, doc.createPair(key, value), order);
}

function insertOrdered(map: YAMLMap, pair: Pair, order: readonly string[]): void {
  const rank = (candidate: unknown): number => {
    const key = isScalar(candidate) ? String(candidate.value) : String(candidate);
    const index = order.indexOf(key);
    return index === -1 ? order.length : index;
  };
  const own = rank(pair.key);
  // After the last field that comes before it in the canonical order.
  let at = 0;
  map.items.forEach((item, index) => {
    if (rank(item.key) <= own) at = index + 1;
  });
  map.items.splice(at, 0, pair);
}

// ---------------------------------------------------------------- layout and comments

interface Layout {
  readonly indent: number;
  /** Whether `- ` items are indented under their key (`clients:\n  - id:`) or level with it. */
  readonly indentSeq: boolean;
  /** `[ /a ]` rather than `[/a]`, as the file's first flow collection is written. */
  readonly flowPadding: boolean;
}

/** The indentation the file uses, so a rewrite does not reformat an operator's file. */
function detectLayout(doc: Document.Parsed, text: string): Layout {
  let indent: number | undefined;
  let indentSeq: boolean | undefined;
  let flowPadding: boolean | undefined;
  visit(doc, {
    Collection(_key, node) {
      const start = node.range?.[0];
      if (!node.flow || flowPadding !== undefined || start === undefined) return;
      const inside = text.slice(start + 1, node.range?.[1]);
      if (/^\s*[\]}]/.test(inside)) return; // empty: says nothing
      flowPadding = inside.startsWith(" ");
    },
    Pair(_key, pair) {
      const value = pair.value;
      if (!isScalar(pair.key) || !isCollection(value) || value.flow) return;
      const keyColumn = columnOf(text, pair.key.range?.[0]);
      const first = value.items[0];
      const itemNode = isMap(value) ? (first as Pair | undefined)?.key : value;
      const itemColumn = columnOf(text, (itemNode as Node | undefined)?.range?.[0]);
      if (keyColumn === undefined || itemColumn === undefined) return;
      const step = itemColumn - keyColumn;
      if (isMap(value) && indent === undefined && step > 0) indent = step;
      if (isSeq(value) && indentSeq === undefined) {
        indentSeq = step > 0;
        if (indent === undefined && step > 0) indent = step;
      }
      return undefined;
    },
  });
  return { indent: indent ?? 2, indentSeq: indentSeq ?? true, flowPadding: flowPadding ?? false };
}

function columnOf(text: string, offset: number | undefined): number | undefined {
  if (offset === undefined) return undefined;
  return offset - (text.lastIndexOf("\n", offset - 1) + 1);
}

/**
 * yaml attaches every comment after the end of a block collection to the innermost
 * collection, whatever its indentation: the starter keystore's commented-out client
 * fields would move into the token list on the first rewrite (and, uncommented there,
 * become schema errors). Give each such comment line back to the collection its
 * indentation says it belongs to.
 */
function rehomeTrailingComments(doc: Document.Parsed, text: string): void {
  const moves: Array<() => void> = [];
  visit(doc, {
    Collection(_key, node, ancestry) {
      if (node.flow || !node.comment || node.range === undefined || node.range === null) return;
      const chain = [
        ...ancestry.filter((a): a is YAMLMap | YAMLSeq => isCollection(a) && !a.flow),
        node,
      ];
      const indents = chain.map((collection) => collectionIndent(collection, text));
      const groups = new Map<number, string[]>();
      let depth = chain.length - 1;
      let blanks = 0;
      for (const line of text.slice(node.range[1], node.range[2]).split("\n")) {
        const match = /^([ \t]*)#(.*)$/.exec(line);
        if (match === null) {
          if (line.trim() === "") blanks++;
          continue;
        }
        const column = (match[1] ?? "").length;
        while (depth > 0 && (indents[depth] ?? 0) > column) depth--;
        const group = groups.get(depth) ?? [];
        // Blank lines between comment lines of one group are kept (yaml prints "" as one).
        if (group.length > 0) for (; blanks > 0; blanks--) group.push("");
        blanks = 0;
        group.push(match[2] ?? "");
        groups.set(depth, group);
      }
      if (groups.size === 0) return;
      moves.push(() => {
        node.comment = null;
        for (const [depth, lines] of groups) {
          const target = chain[depth] as YAMLMap | YAMLSeq;
          const own = lines.join("\n");
          target.comment = target !== node && target.comment ? `${own}\n${target.comment}` : own;
        }
      });
    },
  });
  // Innermost first, so an outer collection's own comment ends up after an inner one's.
  for (const move of moves.reverse()) move();
}

function collectionIndent(collection: YAMLMap | YAMLSeq, text: string): number {
  return columnOf(text, collection.range?.[0] ?? undefined) ?? 0;
}

// ---------------------------------------------------------------- reading and writing

/** lstat of the keystore. @throws KeystoreEditError when it is missing, a symlink or not a file. */
function statKeystore(file: string): Stats {
  let stats: Stats;
  try {
    stats = lstatSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new KeystoreEditError(
        `no keystore at ${file}; create one with keygate keystore init (or set --keystore / KEYGATE_KEYSTORE)`,
      );
    }
    throw error;
  }
  if (stats.isSymbolicLink()) {
    throw new KeystoreEditError(
      `${file} is a symlink; keygate edits regular files only. For a Kubernetes ConfigMap, ` +
        "edit the ConfigMap's source and apply it; otherwise point --keystore at the file itself",
    );
  }
  if (!stats.isFile()) throw new KeystoreEditError(`${file} is not a regular file`);
  return stats;
}

function readText(file: string): string {
  try {
    return decodeKeystoreText(readFileSync(file), file);
  } catch (error) {
    if (error instanceof KeystoreError)
      throw new KeystoreEditError(error.issues.map(formatIssue).join("\n"));
    throw error;
  }
}

function modeFor(original: Stats): number {
  const bits = original.mode & 0o777;
  return (bits & 0o040) !== 0 && (bits & 0o007) === 0 ? GROUP_READABLE_MODE : PRIVATE_MODE;
}

/**
 * Temp file in the same directory (rename is atomic only within one file system), fsync,
 * rename over the original, fsync the directory so the rename itself survives a crash.
 * @returns true when the original owner/group could not be given to the new file.
 */
function writeAtomically(file: string, text: string, mode: number, original: Stats): boolean {
  const directory = path.dirname(file);
  const temp = path.join(
    directory,
    `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`,
  );
  let ownerNotKept = false;
  const fd = openSync(temp, "wx", mode);
  try {
    try {
      writeFileSync(fd, text, "utf8");
      fchmodSync(fd, mode); // the umask may have narrowed the mode given to open
      if (original.uid !== process.getuid?.() || original.gid !== process.getgid?.()) {
        try {
          fchownSync(fd, original.uid, original.gid);
        } catch {
          ownerNotKept = true;
        }
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // already renamed or never created
    }
    throw error;
  }
  fsyncDirectory(directory);
  return ownerNotKept;
}

function fsyncDirectory(directory: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(directory, "r");
    fsyncSync(fd);
  } catch {
    // Some file systems cannot fsync a directory; the rename is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * The warnings the edit introduced, compared by problem (the path part moves when a
 * client is added or removed above it), so an edit does not repeat old news.
 */
function newWarnings(
  originalText: string,
  after: readonly KeystoreIssue[],
  options: Parameters<typeof parseKeystore>[1],
): KeystoreIssue[] {
  // Usually there are none, and then the original need not be parsed a second time.
  if (after.length === 0) return [];
  let before: readonly KeystoreIssue[] = [];
  try {
    before = parseKeystore(originalText, options).warnings;
  } catch {
    // The original was invalid: every warning of the result is news.
  }
  const problem = (issue: KeystoreIssue) => issue.message.replace(/^[^:]*: /, "");
  const known = new Set(before.map(problem));
  return after.filter((issue) => !known.has(problem(issue)));
}

// ---------------------------------------------------------------- the lock

interface HeldLock {
  /** @throws KeystoreEditError when the lock is no longer ours. */
  assertHeld(): void;
  release(): Promise<void>;
}

/**
 * Takes `<file>.lock` with proper-lockfile (an atomic mkdir, its mtime refreshed while
 * held), retrying with backoff and jitter. A lock nobody has refreshed for LOCK_STALE_MS
 * was left by a dead process, on this host or another, and is taken over; a fresh one is
 * waited for.
 * @throws KeystoreEditError when one holder has kept the lock for timeoutMs, or the lock
 *   cannot be created at all.
 */
async function acquireLock(file: string, timeoutMs: number): Promise<HeldLock> {
  // Loaded here, not at the top: proper-lockfile hooks process exit and signals (to release
  // its locks), and the server's entry point imports this module too.
  const { lock } = await import("proper-lockfile");
  const lockPath = lockPathFor(file);
  const guard = new LockGuard(lockPath);
  let compromised = false;
  const options = {
    stale: LOCK_STALE_MS,
    realpath: false, // statKeystore has refused symlinks
    fs: guard.fs,
    // The default throws from a timer; the write checks the flag instead.
    onCompromised: () => {
      compromised = true;
    },
  };
  let deadline = Date.now() + timeoutMs;
  let lastHolder: string | undefined;
  let wait = LOCK_BACKOFF_FIRST_MS;
  for (;;) {
    try {
      const release = await lock(file, options);
      return {
        assertHeld() {
          if (compromised || !guard.holds()) {
            throw new KeystoreEditError(
              `lost the lock ${lockPath} to another process, so nothing was written; run the command again`,
            );
          }
        },
        async release() {
          await release().catch(() => {}); // already released when compromised
        },
      };
    } catch (error) {
      const code = error instanceof Error && "code" in error ? error.code : undefined;
      if (code !== "ELOCKED") {
        const reason = code ?? (error instanceof Error ? error.message : String(error));
        throw new KeystoreEditError(`cannot create the lock ${lockPath}: ${reason}`);
      }
    }
    const holder = lockIdentity(lockPath);
    if (holder !== undefined && holder.id !== lastHolder) {
      lastHolder = holder.id;
      deadline = Date.now() + timeoutMs;
    }
    if (Date.now() >= deadline) {
      const since = holder === undefined ? "" : ` since ${new Date(holder.takenMs).toISOString()}`;
      throw new KeystoreEditError(
        `${file} is locked by another keygate command${since}; gave up after ${timeoutMs / 1000} s. ` +
          `If no keygate command is running, delete ${lockPath}`,
      );
    }
    // Jitter so ten waiting processes do not retry in lock step.
    await sleep(Math.min(wait, Math.max(0, deadline - Date.now())) * (0.5 + Math.random()));
    wait = Math.min(wait * 1.6, LOCK_BACKOFF_MAX_MS);
  }
}

/**
 * proper-lockfile removes a lock directory by path: on release, at exit, and when it has
 * judged a lock stale. Through this guard's `fs` it removes only the directory it created
 * or one that is still stale when removed, so two waiters that both judged a lock stale
 * cannot delete the one the faster has just taken (moxystudio/node-proper-lockfile#121),
 * and an editor that lost its lock never deletes its successor's.
 */
class LockGuard {
  readonly #lockPath: string;
  /** Identity of the lock directory this editor created, once it has. */
  #ours: string | undefined;
  /** What proper-lockfile is given as its `fs`: node:fs with mkdir and rmdir guarded. */
  readonly fs: object;

  constructor(lockPath: string) {
    this.#lockPath = lockPath;
    const removable = (target: string) => {
      const now = lockIdentity(target);
      return now === undefined || now.id === this.#ours || Date.now() - now.mtimeMs > LOCK_STALE_MS;
    };
    this.fs = {
      ...fs,
      mkdir: (target: string, callback: (error: Error | null) => void) =>
        fs.mkdir(target, (error) => {
          if (error === null) this.#ours = lockIdentity(target)?.id;
          callback(error);
        }),
      // Declining is reported as "already gone": proper-lockfile then tries mkdir again.
      rmdir: (target: string, callback: (error: Error | null) => void) =>
        removable(target) ? fs.rmdir(target, callback) : callback(null),
      rmdirSync: (target: string) => {
        if (removable(target)) fs.rmdirSync(target);
      },
    };
  }

  /** Whether the lock directory in place is still the one this editor created. */
  holds(): boolean {
    return this.#ours !== undefined && lockIdentity(this.#lockPath)?.id === this.#ours;
  }
}

interface LockIdentity {
  /** Inode and birth time: a lock removed and re-created by someone else is a new identity. */
  readonly id: string;
  /** When it was created (its last refresh where the file system keeps no birth time). */
  readonly takenMs: number;
  readonly mtimeMs: number;
}

function lockIdentity(lockPath: string): LockIdentity | undefined {
  try {
    const stats = fs.statSync(lockPath, { bigint: true });
    return {
      id: `${stats.ino}:${stats.birthtimeNs}`,
      takenMs: Number(stats.birthtimeMs || stats.mtimeMs),
      mtimeMs: Number(stats.mtimeMs),
    };
  } catch {
    return undefined; // released meanwhile
  }
}

/** Exposed for tests: the lock path for a keystore. */
export function lockPathFor(file: string): string {
  return `${file}.lock`;
}
