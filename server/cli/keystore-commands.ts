/**
 * `keygate keystore <command>`: provisioning. Every edit goes through keystore-editor
 * (lock, Document API, validation, atomic write). Secrets are read from stdin before the
 * lock is taken, so a slow paste never holds other edits up. `add` and `rotate` print
 * only the new token on stdout; everything else an operator reads goes to stderr.
 */
import { existsSync } from "node:fs";
import { type Config, loadConfig } from "../config.js";
import { decryptSecret } from "../crypto/aes-gcm.js";
import { mintToken } from "../crypto/token-format.js";
import { hashToken } from "../crypto/token-hash.js";
import {
  DEFAULTS_AAD,
  type EditOptions,
  type EditResult,
  editKeystore,
  KeystoreEditError,
} from "../keystore/edit/keystore-editor.js";
import { CLIENT_ID_MESSAGE, isClientId } from "../keystore/format/client-id.js";
import { readKeystoreFile } from "../keystore/format/load.js";
import { formatIssue, KeystoreError, type LoadedKeystore } from "../keystore/format/model.js";
import { writeStarterKeystore } from "../keystore/format/starter.js";
import { envNameProblem } from "../keystore/format/upstream-key-rules.js";
import { KeystoreStore } from "../keystore/store/store.js";
import { quoted, shortened } from "../shown-text.js";
import {
  DetailedError,
  keystorePath,
  listValue,
  note,
  type OptionSpec,
  out,
  type Parsed,
  parseCommand,
  stringValue,
  UsageError,
} from "./args.js";
import { type ClientUsage, listClients, renderJson, renderTable } from "./list-output.js";
import { formatTimestamp, parseDuration, parseExpiry, timestampValue } from "./time-args.js";
import { readUpstreamKey, seal, sealingKey } from "./upstream-key-input.js";

const ENV_VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** At least 8 hex characters, so a slip of the keyboard cannot match a token by chance. */
const DIGEST_PREFIX = /^[0-9a-fA-F]{8,64}$/;
const KEYSTORE_OPTION: OptionSpec = { keystore: { type: "string" } };

type Command = (args: readonly string[], env: NodeJS.ProcessEnv) => Promise<number>;

const COMMANDS: Readonly<Record<string, Command>> = {
  init,
  check,
  add,
  rotate,
  revoke,
  disable: (args, env) => toggle("disable", args, env),
  enable: (args, env) => toggle("enable", args, env),
  remove,
  "set-upstream-key": setUpstreamKey,
  list,
  reencrypt,
};

/**
 * Runs `keygate keystore <sub> …` and returns the exit code.
 * @throws UsageError for an unknown subcommand or malformed arguments; Error on failure.
 */
export async function keystoreCommand(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const [sub, ...rest] = args;
  const command = sub === undefined ? undefined : COMMANDS[sub];
  if (command === undefined) {
    throw new UsageError(
      sub === undefined ? "keystore needs a subcommand" : `unknown keystore command ${quoted(sub)}`,
    );
  }
  return command(rest, env);
}

// ---------------------------------------------------------------- commands

async function init(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const path = keystorePath(parseCommand("keystore init", args, KEYSTORE_OPTION), env);
  const { token } = writeStarterKeystore(path);
  note(`wrote ${path} with client "demo"; its token (shown once):`);
  out(token);
  return 0;
}

async function check(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const path = keystorePath(parseCommand("keystore check", args, KEYSTORE_OPTION), env);
  const config = loadConfig(env);
  try {
    const loaded = readKeystoreFile(path, {
      masterKeys: config.masterKeys,
      env,
      requireClients: config.mode === "enforce",
      upstreamEnvPrefix: config.upstreamEnvPrefix,
    });
    for (const warning of loaded.warnings) note(`${formatIssue(warning)} (warning)`);
    out(`${path}: ok, ${loaded.keystore.clients.length} clients`);
    return 0;
  } catch (error) {
    if (!(error instanceof KeystoreError)) throw error;
    for (const issue of error.issues) out(formatIssue(issue));
    return 1;
  }
}

async function add(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand(
    "keystore add",
    args,
    {
      ...KEYSTORE_OPTION,
      name: { type: "string" },
      routes: { type: "string" },
      models: { type: "string" },
      expires: { type: "string" },
      internal: { type: "boolean" },
      "upstream-key-stdin": { type: "boolean" },
      "upstream-key-env": { type: "string" },
      kid: { type: "string" },
    },
    ["id"],
  );
  const id = clientIdArgument(parsed);
  const fromStdin = parsed.values["upstream-key-stdin"] === true;
  const fromEnv = stringValue(parsed, "upstream-key-env");
  const kid = stringValue(parsed, "kid");
  const internal = parsed.values.internal === true;
  if (fromStdin && fromEnv !== undefined) {
    throw new UsageError("keystore add: give --upstream-key-stdin or --upstream-key-env, not both");
  }
  if (internal && (fromStdin || fromEnv !== undefined)) {
    throw new UsageError(
      "keystore add: an --internal client is let through without a key swap, so it takes no upstream key",
    );
  }
  if (kid !== undefined && !fromStdin) {
    throw new UsageError("keystore add: --kid only applies with --upstream-key-stdin");
  }
  const now = Date.now();
  const name = stringValue(parsed, "name");
  if (name !== undefined && name.trim() === "") throw new Error("--name must not be empty");
  const routes = optionalList(parsed, "routes");
  if (routes?.some((route) => !route.startsWith("/"))) {
    throw new Error(
      "--routes takes path prefixes starting with /, e.g. --routes /v1/messages,/services/",
    );
  }
  const models = optionalList(parsed, "models");
  const expiresText = stringValue(parsed, "expires");
  const expires =
    expiresText === undefined
      ? undefined
      : formatTimestamp(parseExpiry("expires", expiresText, now));
  const config = loadConfig(env);
  let upstreamKey: string | undefined;
  if (fromEnv !== undefined) {
    if (!ENV_VARIABLE.test(fromEnv)) {
      throw new Error(
        `--upstream-key-env needs an environment variable name (got ${quoted(fromEnv)})`,
      );
    }
    const refused = envNameProblem(fromEnv, config.upstreamEnvPrefix);
    if (refused !== undefined)
      throw new Error(`--upstream-key-env ${shortened(fromEnv)} ${refused}`);
    upstreamKey = `env:${fromEnv}`;
  }
  if (fromStdin) {
    // Key first: no point reading a secret that cannot be sealed.
    const sealing = sealingKey(config.masterKeys, kid);
    upstreamKey = seal(await readUpstreamKey(), id, sealing);
  }

  const token = mintToken();
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(config, env), (draft) =>
    draft.addClient({
      id,
      ...(name === undefined ? {} : { name }),
      tokens: [{ sha256: hashToken(token), ...(expires === undefined ? {} : { expires }) }],
      ...(upstreamKey === undefined ? {} : { upstreamKey }),
      ...(routes === undefined ? {} : { routes }),
      ...(models === undefined ? {} : { models }),
      ...(internal ? { kind: "internal" as const } : {}),
    }),
  );
  reportWrite(path, result);
  note(`added client "${id}" to ${path}; its token (shown once):`);
  out(token);
  return 0;
}

async function rotate(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand(
    "keystore rotate",
    args,
    { ...KEYSTORE_OPTION, grace: { type: "string" }, expires: { type: "string" } },
    ["id"],
  );
  const id = clientIdArgument(parsed);
  const now = Date.now();
  const graceText = stringValue(parsed, "grace");
  const graceMs = graceText === undefined ? 0 : parseDuration("grace", graceText);
  const expiresText = stringValue(parsed, "expires");
  const expires =
    expiresText === undefined
      ? undefined
      : formatTimestamp(parseExpiry("expires", expiresText, now));
  const config = loadConfig(env);
  const token = mintToken();
  const path = keystorePath(parsed, env);
  const graceEnd = formatTimestamp(now + graceMs);
  const result = await editKeystore(path, editOptions(config, env), (draft) => {
    const client = draft.client(id);
    const old = client.tokens().map((entry, index) => ({
      index,
      expiresAt: entry.expires === undefined ? Number.NaN : timestampValue(entry.expires),
      hasExpiry: entry.expires !== undefined,
    }));
    // Already expired: they authenticate nothing, so rotation clears them out.
    const expired = old.filter((entry) => entry.hasExpiry && entry.expiresAt <= now);
    const live = old.filter((entry) => !expired.includes(entry));
    let expiring = 0;
    if (graceMs > 0) {
      const end = timestampValue(graceEnd);
      for (const entry of live) {
        // Never extend: a token already due to expire before the grace ends keeps its date.
        if (entry.hasExpiry && entry.expiresAt <= end) continue;
        client.setTokenExpiry(entry.index, graceEnd);
        expiring++;
      }
    }
    // Grace 0 removes the old tokens rather than expiring them "now": no dependence on the
    // server's clock agreeing with this machine's, and nothing left to clean up later.
    const removed = graceMs > 0 ? expired : old;
    client.removeTokens(removed.map((entry) => entry.index));
    client.addToken({ sha256: hashToken(token), ...(expires === undefined ? {} : { expires }) });
    return {
      removed: removed.length,
      expiring,
      kept: graceMs > 0 ? live.length - expiring : 0,
      disabled: client.disabled,
    };
  });
  reportWrite(path, result);
  const { removed, expiring, kept, disabled } = result.value;
  const parts = [
    ...(removed > 0 ? [`removed ${plural(removed, "old token")}`] : []),
    ...(expiring > 0 ? [`${plural(expiring, "old token")} ${verb(expiring)} at ${graceEnd}`] : []),
    ...(kept > 0 ? [`${plural(kept, "old token")} already ${verb(kept)} sooner`] : []),
  ];
  note(`rotated client "${id}" in ${path}${parts.length > 0 ? `: ${parts.join("; ")}` : ""}.`);
  if (disabled) note(`note: client "${id}" is disabled; the new token works once it is enabled.`);
  note("its new token (shown once):");
  out(token);
  return 0;
}

async function revoke(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand(
    "keystore revoke",
    args,
    { ...KEYSTORE_OPTION, token: { type: "string" } },
    ["id"],
  );
  const id = clientIdArgument(parsed);
  const prefix = stringValue(parsed, "token")?.toLowerCase();
  if (prefix !== undefined && !DIGEST_PREFIX.test(prefix)) {
    throw new Error(
      "--token takes the first 8 to 64 hex characters of the token's SHA-256 (keygate keystore list --json shows 12; keygate hash prints it)",
    );
  }
  const config = loadConfig(env);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(config, env), (draft) => {
    const client = draft.client(id);
    const tokens = client.tokens();
    const doomed = tokens
      .map((entry, index) => ({ entry, index }))
      .filter(({ entry }) => prefix === undefined || entry.digest.startsWith(prefix));
    if (prefix !== undefined && doomed.length === 0) {
      throw new KeystoreEditError(
        `client "${id}" has no token whose SHA-256 starts with ${prefix}`,
      );
    }
    if (prefix !== undefined && doomed.length > 1) {
      throw new KeystoreEditError(
        `${prefix} matches ${doomed.length} tokens of client "${id}"; give more characters of the SHA-256`,
      );
    }
    client.removeTokens(doomed.map(({ index }) => index));
    return doomed.length;
  });
  reportWrite(path, result);
  note(`revoked ${plural(result.value, "token")} of client "${id}" in ${path}.`);
  return 0;
}

async function toggle(
  verb: "disable" | "enable",
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const parsed = parseCommand(`keystore ${verb}`, args, KEYSTORE_OPTION, ["id"]);
  const id = clientIdArgument(parsed);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(loadConfig(env), env), (draft) =>
    draft.client(id).setDisabled(verb === "disable"),
  );
  reportWrite(path, result);
  note(
    result.written
      ? `${verb}d client "${id}" in ${path}.`
      : `client "${id}" is already ${verb}d; nothing to do.`,
  );
  return 0;
}

async function remove(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("keystore remove", args, KEYSTORE_OPTION, ["id"]);
  const id = clientIdArgument(parsed);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(loadConfig(env), env), (draft) =>
    draft.removeClient(id),
  );
  reportWrite(path, result);
  note(`removed client "${id}" from ${path}.`);
  return 0;
}

async function setUpstreamKey(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand(
    "keystore set-upstream-key",
    args,
    { ...KEYSTORE_OPTION, kid: { type: "string" }, defaults: { type: "boolean" } },
    ["id?"],
  );
  const forDefaults = parsed.values.defaults === true;
  if (forDefaults === parsed.positionals.length > 0) {
    throw new UsageError("keystore set-upstream-key needs <id> or --defaults (one of them)");
  }
  const id = forDefaults ? undefined : clientIdArgument(parsed);
  const config = loadConfig(env);
  const sealing = sealingKey(config.masterKeys, stringValue(parsed, "kid"));
  const secret = await readUpstreamKey();
  const sealed = seal(secret, id ?? DEFAULTS_AAD, sealing);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(config, env), (draft) => {
    if (id === undefined) return draft.setDefaultUpstreamKey(sealed);
    const client = draft.client(id);
    if (client.kind === "internal") {
      throw new KeystoreEditError(
        `client "${id}" is internal (let through without a key swap), so an upstream key would never be used`,
      );
    }
    return client.setUpstreamKey(sealed);
  });
  reportWrite(path, result);
  const owner = id === undefined ? "defaults.upstream_key" : `the upstream key of client "${id}"`;
  note(`set ${owner} in ${path}, encrypted under master key "${sealing.kid}".`);
  return 0;
}

async function list(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("keystore list", args, {
    ...KEYSTORE_OPTION,
    json: { type: "boolean" },
  });
  const path = keystorePath(parsed, env);
  const config = loadConfig(env);
  const loaded = readValidKeystore(path, config, env);
  const now = Date.now();
  const usage = readUsage(config.dbPath);
  const clients = listClients(loaded.keystore, usage, now);
  if (parsed.values.json === true) {
    out(renderJson(path, usage === undefined ? null : config.dbPath, clients));
  } else {
    if (usage === undefined) note(`no database at ${config.dbPath}: last use not shown`);
    out(renderTable(clients));
  }
  return 0;
}

async function reencrypt(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("keystore reencrypt", args, {
    ...KEYSTORE_OPTION,
    to: { type: "string" },
  });
  const to = stringValue(parsed, "to");
  if (to === undefined) throw new UsageError("keystore reencrypt needs --to <kid>");
  const config = loadConfig(env);
  const target = sealingKey(config.masterKeys, to);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(config, env), (draft) => {
    const values = draft.sealedValues();
    const failures: string[] = [];
    const pending: Array<{ replace: (value: string) => void; plain: string; aad: string }> = [];
    for (const value of values) {
      const owner = value.clientId === undefined ? "defaults" : `client ${quoted(value.clientId)}`;
      const opened = decryptSecret(value.value, value.aad, config.masterKeys);
      if (!opened.ok) {
        failures.push(`  ${owner}: ${describeDecryptFailure(opened.why, opened.kid)}`);
      } else if (opened.kid !== to) {
        pending.push({ replace: value.replace, plain: opened.value, aad: value.aad });
      }
    }
    if (failures.length > 0) {
      throw new KeystoreEditError(
        `cannot re-encrypt: ${plural(failures.length, "upstream key")} ${failures.length === 1 ? "does" : "do"} not decrypt with the loaded master keys; nothing was written`,
        failures,
      );
    }
    for (const { replace, plain, aad } of pending) replace(seal(plain, aad, target));
    return { reencrypted: pending.length, already: values.length - pending.length };
  });
  reportWrite(path, result);
  const { reencrypted, already } = result.value;
  note(
    `re-encrypted ${plural(reencrypted, "upstream key")} under master key "${to}" in ${path}` +
      (already > 0 ? ` (${already} already under "${to}")` : "") +
      ".",
  );
  return 0;
}

// ---------------------------------------------------------------- helpers

function editOptions(config: Config, env: NodeJS.ProcessEnv): EditOptions {
  return {
    masterKeys: config.masterKeys,
    env,
    requireClients: config.mode === "enforce",
    upstreamEnvPrefix: config.upstreamEnvPrefix,
  };
}

/** @throws Error when the id cannot be a client id (so a typo is not looked up or written). */
function clientIdArgument(parsed: Parsed): string {
  const id = parsed.positionals[0] ?? "";
  if (!isClientId(id)) throw new Error(`invalid client id ${quoted(id)}: ${CLIENT_ID_MESSAGE}`);
  return id;
}

function optionalList(parsed: Parsed, flag: string): string[] | undefined {
  const value = stringValue(parsed, flag);
  return value === undefined ? undefined : listValue(flag, value);
}

function verb(count: number): string {
  return count === 1 ? "expires" : "expire";
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** What an operator should hear after a write: new warnings, a tightened mode, a lost owner. */
function reportWrite(path: string, result: EditResult<unknown>): void {
  // Checked against this shell's environment and master keys, which may not be the server's.
  for (const warning of result.warnings)
    note(`warning: ${formatIssue(warning)} (as this shell sees it)`);
  if (result.previousMode !== undefined && result.mode !== undefined) {
    note(
      `note: ${path} was mode ${octal(result.previousMode)}; written as ${octal(result.mode)} (it lists credentials)`,
    );
  }
  if (result.ownerNotKept) {
    note(`note: could not keep the owner of ${path}; check that keygate can still read it`);
  }
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, "0")}`;
}

function readValidKeystore(path: string, config: Config, env: NodeJS.ProcessEnv): LoadedKeystore {
  try {
    return readKeystoreFile(path, {
      masterKeys: config.masterKeys,
      env,
      requireClients: false,
      upstreamEnvPrefix: config.upstreamEnvPrefix,
    });
  } catch (error) {
    if (!(error instanceof KeystoreError)) throw error;
    throw new DetailedError(`${path} is not a valid keystore`, error.issues.map(formatIssue));
  }
}

/** Last use by client from the server's database, or undefined when there is none to read. */
function readUsage(dbPath: string): Map<string, ClientUsage> | undefined {
  if (dbPath === ":memory:" || !existsSync(dbPath)) return undefined;
  let store: KeystoreStore | undefined;
  try {
    store = KeystoreStore.open(dbPath);
    return new Map(
      store
        .listClients()
        .map((row) => [row.id, { lastUsedAt: row.lastUsedAt, useCount: row.useCount }]),
    );
  } catch (error) {
    note(`warning: cannot read last use from ${dbPath}: ${(error as Error).message}`);
    return undefined;
  } finally {
    store?.close();
  }
}

function describeDecryptFailure(
  why: "malformed" | "unknown_kid" | "auth_failed",
  kid: string | undefined,
): string {
  switch (why) {
    case "unknown_kid":
      return `master key ${quoted(kid ?? "")} is not loaded (KEYGATE_MASTER_KEY must list the old and the new key)`;
    case "auth_failed":
      return `does not decrypt with master key ${quoted(kid ?? "")} (a different key under that kid, or a value copied from another client)`;
    default:
      return "is malformed";
  }
}
