/**
 * Upstream (provider) keys entering the CLI: read from stdin only, checked, and sealed
 * with a master key before anything is written. The key in clear lives only in this
 * process's memory.
 */
import { encryptSecret, type MasterKeys } from "../crypto/aes-gcm.js";
import { upstreamKeyValueProblem } from "../keystore/format/upstream-key-rules.js";
import { quoted } from "../shown-text.js";
import { readSecretFromStdin } from "./read-stdin.js";

const NO_MASTER_KEY =
  "no master key loaded: set KEYGATE_MASTER_KEY (or KEYGATE_MASTER_KEY_FILE) to kid:base64; keygate keygen makes one";

/**
 * The master key to seal with: `kid` when given, else the newest loaded, which is the
 * last one listed in KEYGATE_MASTER_KEY (append the new key when rotating).
 * @throws Error when no key is loaded or `kid` is not among them.
 */
export function sealingKey(keys: MasterKeys, kid?: string): { kid: string; key: Buffer } {
  const chosen = kid ?? [...keys.keys()].at(-1);
  if (chosen === undefined) throw new Error(NO_MASTER_KEY);
  const key = keys.get(chosen);
  if (key === undefined) {
    throw new Error(
      `master key ${quoted(chosen)} is not loaded (loaded: ${[...keys.keys()].join(", ") || "none"})`,
    );
  }
  return { kid: chosen, key };
}

/**
 * Reads an upstream key from stdin, trimmed (a pasted key's stray spaces and newline are
 * never part of a provider key), and holds it to the rules the server sends keys by: it
 * becomes an HTTP header value, so visible ASCII only, one key, one line.
 * @throws Error when stdin is empty or the key holds a character a header cannot carry.
 */
export async function readUpstreamKey(): Promise<string> {
  const key = (await readSecretFromStdin("upstream key")).trim();
  const problem = upstreamKeyValueProblem(key);
  if (problem !== undefined) {
    throw new Error(`the upstream key on stdin ${problem}; give one key, on one line`);
  }
  return key;
}

/** `enc:v1:<kid>:…` of `secret`, bound to `aad` (a client id, or DEFAULTS_AAD). */
export function seal(secret: string, aad: string, sealing: { kid: string; key: Buffer }): string {
  return encryptSecret(secret, aad, sealing.kid, sealing.key);
}
