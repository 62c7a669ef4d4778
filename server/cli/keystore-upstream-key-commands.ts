/**
 * `keygate keystore set-upstream-key` and `reencrypt`: the commands that write sealed
 * (`enc:`) upstream keys. A secret is read from stdin before the editor's lock is taken,
 * and only ever written sealed under a master key.
 */
import { type Config, loadConfig } from "../config.js";
import { decryptSecret } from "../crypto/aes-gcm.js";
import {
  DEFAULTS_AAD,
  editKeystore,
  type KeystoreDraft,
  KeystoreEditError,
} from "../keystore/edit/keystore-editor.js";
import { quoted } from "../shown-text.js";
import { keystorePath, note, parseCommand, stringValue, UsageError } from "./args.js";
import {
  clientIdArgument,
  editOptions,
  KEYSTORE_OPTION,
  plural,
  reportWrite,
} from "./keystore-command-shared.js";
import { readUpstreamKey, seal, sealingKey } from "./upstream-key-input.js";

/**
 * Sets a client's upstream key, or `defaults.upstream_key`, from stdin, sealed.
 * @throws UsageError without exactly one of <id> and --defaults; Error for a missing
 *   master key, an unreadable secret, an internal or unknown client, or a refused edit.
 */
export async function setUpstreamKey(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
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

/**
 * Re-seals every `enc:` value under master key `--to`; all or nothing.
 * @throws UsageError without --to; Error when `--to` is not loaded or a value does not decrypt.
 */
export async function reencrypt(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("keystore reencrypt", args, {
    ...KEYSTORE_OPTION,
    to: { type: "string" },
  });
  const to = stringValue(parsed, "to");
  if (to === undefined) throw new UsageError("keystore reencrypt needs --to <kid>");
  const config = loadConfig(env);
  const target = sealingKey(config.masterKeys, to);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(config, env), (draft) =>
    reencryptAll(draft, config, to, target),
  );
  reportWrite(path, result);
  const { reencrypted, already } = result.value;
  note(
    `re-encrypted ${plural(reencrypted, "upstream key")} under master key "${to}" in ${path}` +
      (already > 0 ? ` (${already} already under "${to}")` : "") +
      ".",
  );
  return 0;
}

/**
 * The edit itself: opens every sealed value, then replaces those not already under `to`.
 * @throws KeystoreEditError listing every value that does not decrypt; nothing is replaced.
 */
function reencryptAll(
  draft: KeystoreDraft,
  config: Config,
  to: string,
  target: ReturnType<typeof sealingKey>,
): { reencrypted: number; already: number } {
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
