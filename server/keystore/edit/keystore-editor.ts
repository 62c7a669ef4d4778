/**
 * The one place that edits keystore.yaml. An edit is a read-modify-write done entirely
 * under an exclusive lock (edit-lock.ts), through yaml's Document API so comments,
 * ordering and layout survive (this file's drafts, with yaml-fields.ts and
 * yaml-layout.ts), validated as the server would load it before anything is written
 * (validate-edit.ts: an invalid keystore is never written), and written atomically
 * (keystore-file.ts: the running server only ever sees the old file or the new one).
 */
import {
  type Document,
  isMap,
  isScalar,
  isSeq,
  parseDocument,
  type ToStringOptions,
  type YAMLMap,
  type YAMLSeq,
} from "yaml";
import { ENC_PATTERN, type MasterKeys } from "../../crypto/aes-gcm.js";
import { type Budget, type ClientKind, DEFAULTS_AAD, type KeystoreIssue } from "../format/model.js";
import { KeystoreEditError } from "./edit-error.js";
import { acquireLock, lockPathFor } from "./edit-lock.js";
import { readKeystore, replaceKeystore, statKeystore } from "./keystore-file.js";
import { validateEdit } from "./validate-edit.js";
import { setField } from "./yaml-fields.js";
import { layoutOf, rehomeTrailingComments } from "./yaml-layout.js";

// The editor's whole API comes from this module: the AAD of `defaults.upstream_key`
// (defined in format/model.ts), the refusal and, for tests, the lock's path.
export { DEFAULTS_AAD, KeystoreEditError, lockPathFor };

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
  "budget",
] as const;
const TOKEN_FIELD_ORDER = ["sha256", "expires"] as const;
const TOP_FIELD_ORDER = ["version", "defaults", "clients"] as const;
/** Written on one line, as in DESIGN §4's `routes: [/services/]` and §12's `budget: {tokens: N, per: day}`. */
const FLOW_FIELDS = ["routes", "models", "budget"] as const;

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

/** A new client as `keystore add` writes it; keys in DESIGN §4 order. */
export interface NewClient {
  readonly id: string;
  readonly name?: string;
  readonly tokens: readonly NewToken[];
  readonly upstreamKey?: string;
  readonly routes?: readonly string[];
  readonly models?: readonly string[];
  readonly kind?: ClientKind;
  readonly budget?: Budget;
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
  const lock = await acquireLock(file, options.lockTimeoutMs);
  try {
    // Read under the lock: whatever was written before we got it is what we edit.
    const current = statKeystore(file);
    const text = readKeystore(file);
    const draft = KeystoreDraft.parse(text, file);
    const value = edit(draft);
    if (!draft.changed) {
      const nothing = { mode: undefined, previousMode: undefined, ownerNotKept: false };
      return { value, written: false, warnings: [], ...nothing };
    }
    const edited = draft.toString();
    const { masterKeys, env, requireClients } = options;
    const upstreamEnvPrefix = options.upstreamEnvPrefix ?? null;
    const validation = { file, masterKeys, env, requireClients, upstreamEnvPrefix };
    const warnings = validateEdit(text, edited, validation);
    lock.assertHeld();
    return { value, written: true, warnings, ...replaceKeystore(file, edited, current) };
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
  readonly #layout: ToStringOptions;

  private constructor(doc: Document.Parsed, file: string, layout: ToStringOptions) {
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
    return new KeystoreDraft(doc, file, layoutOf(doc, text));
  }

  get changed(): boolean {
    return this.#changed;
  }

  /** The edited text, in the layout the file already had. */
  toString(): string {
    return this.#doc.toString(this.#layout);
  }

  /** @throws KeystoreEditError when there is no such client. */
  client(id: string): ClientDraft {
    const map = this.#clientMaps().find((candidate) => candidate.get("id") === id);
    if (map === undefined) throw new KeystoreEditError(`no client "${id}" in ${this.#file}`);
    return new ClientDraft(id, map, this.#doc, () => this.#markChanged());
  }

  /** Appends a client in the style of the list. @throws KeystoreEditError if the id exists. */
  addClient(spec: NewClient): void {
    if (this.#clientMaps().some((map) => map.get("id") === spec.id)) {
      throw new KeystoreEditError(
        `client "${spec.id}" already exists in ${this.#file} (keygate keystore rotate ${spec.id} gives it a new token)`,
      );
    }
    const seq = this.#clients();
    // `clients: []` becomes a block list: a flow list of maps would be one unreadable line.
    if (seq.flow && seq.items.length === 0) seq.flow = false;
    // Fields in CLIENT_FIELD_ORDER; createNode leaves out the undefined ones.
    const map = this.#doc.createNode({
      id: spec.id,
      name: spec.name,
      tokens: spec.tokens.map(tokenData),
      upstream_key: spec.upstreamKey,
      routes: spec.routes && [...spec.routes],
      models: spec.models && [...spec.models],
      kind: spec.kind === "client" ? undefined : spec.kind,
      budget: spec.budget && { tokens: spec.budget.tokens, per: spec.budget.per },
    });
    for (const key of FLOW_FIELDS) {
      const node = map.get(key, true);
      if (isSeq(node) || isMap(node)) node.flow = true;
    }
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

  /**
   * Sets `defaults.upstream_key`, creating `defaults:` before `clients:` when absent or empty.
   * @throws KeystoreEditError when `defaults` is something other than a mapping.
   */
  setDefaultUpstreamKey(value: string): void {
    const top = this.#doc.contents as YAMLMap;
    const defaults = top.get("defaults", true);
    if (isMap(defaults)) setField(this.#doc, defaults, "upstream_key", value, ["upstream_key"]);
    else if (defaults === undefined || (isScalar(defaults) && defaults.value === null))
      setField(this.#doc, top, "defaults", { upstream_key: value }, TOP_FIELD_ORDER);
    else throw new KeystoreEditError(`defaults in ${this.#file} is not a mapping`);
    this.#markChanged();
  }

  /** Every `enc:` upstream key in the file: the default's and each client's. */
  sealedValues(): SealedValue[] {
    const values: SealedValue[] = [];
    const sealedIn = (map: YAMLMap, clientId: string | undefined, aad: string) => {
      const value = map.get("upstream_key");
      if (typeof value !== "string" || !ENC_PATTERN.test(value)) return;
      const replace = (next: string) => {
        setField(this.#doc, map, "upstream_key", next, CLIENT_FIELD_ORDER);
        this.#markChanged();
      };
      values.push({ clientId, aad, value, replace });
    };
    const defaults = (this.#doc.contents as YAMLMap).get("defaults", true);
    if (isMap(defaults)) sealedIn(defaults, undefined, DEFAULTS_AAD);
    for (const map of this.#clientMaps()) {
      const id = map.get("id");
      if (typeof id === "string") sealedIn(map, id, id);
    }
    return values;
  }

  #clients(): YAMLSeq {
    // parse() checked that this is a list; edits never replace it.
    return (this.#doc.contents as YAMLMap).get("clients") as YAMLSeq;
  }

  #clientMaps(): YAMLMap[] {
    return this.#clients().items.filter((item): item is YAMLMap => isMap(item));
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
    this.#tokenSeq().items.push(this.#doc.createNode(tokenData(token)));
    this.#markChanged();
  }

  /**
   * Sets the expiry of the token at `index` (as in tokens()).
   * @throws RangeError when there is no such token.
   */
  setTokenExpiry(index: number, expires: string): void {
    const map = this.#tokenMaps()[index];
    if (map === undefined) throw new RangeError(`no token ${index} for client "${this.id}"`);
    setField(this.#doc, map, "expires", expires, TOKEN_FIELD_ORDER);
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
    setField(this.#doc, this.#map, "disabled", disabled, CLIENT_FIELD_ORDER);
    this.#markChanged();
  }

  setUpstreamKey(value: string): void {
    if (this.upstreamKey === value) return;
    setField(this.#doc, this.#map, "upstream_key", value, CLIENT_FIELD_ORDER);
    this.#markChanged();
  }

  /** `budget: {tokens: N, per: P}` on one line, or no `budget` field at all for undefined. */
  setBudget(budget: Budget | undefined): void {
    const node = this.#map.get("budget", true);
    const current = isMap(node) ? (node.toJSON() as Partial<Budget>) : undefined;
    if (current?.tokens === budget?.tokens && current?.per === budget?.per) return;
    if (budget === undefined) this.#map.delete("budget");
    else {
      setField(this.#doc, this.#map, "budget", { ...budget }, CLIENT_FIELD_ORDER);
      const written = this.#map.get("budget", true);
      if (isMap(written)) written.flow = true;
    }
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

/** A token's fields as written; createNode leaves out an absent expiry. */
function tokenData({ sha256, expires }: NewToken): NewToken {
  return { sha256, expires };
}
