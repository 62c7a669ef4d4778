/**
 * Warnings for upstream keys that will not resolve for a client. They never make the file
 * invalid (that client alone answers 503 KEY_UNAVAILABLE), but the operator should hear
 * about them at once: `keygate keystore check`, and the log after each reload. Never
 * prints a key, decrypted or sealed.
 */
import { createHash } from "node:crypto";
import { decryptSecret, ENC_PREFIX, type MasterKeys } from "../../crypto/aes-gcm.js";
import { quoted, shortened } from "../../shown-text.js";
import { clientName, showableId } from "./client-id.js";
import type { LoadOptions } from "./load.js";
import { DEFAULTS_AAD, type Keystore, type KeystoreClient } from "./model.js";
import type { Segment } from "./read-yaml.js";
import { envNameProblem, upstreamKeyValueProblem } from "./upstream-key-rules.js";

/** A problem at a path in the data, before it is given a position. */
export interface Finding {
  readonly path: readonly Segment[];
  readonly message: string;
}

/**
 * Upstream keys that will not resolve for a client: the file stays valid (that client
 * alone answers 503 KEY_UNAVAILABLE), but the operator should hear about it now. One
 * warning per reference and problem, naming the clients affected, never the value.
 */
export function upstreamKeyFindings(keystore: Keystore, options: LoadOptions): Finding[] {
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
 * What checking each `enc:` value found, kept from one load to the next by a caller that
 * loads again and again (the sync worker, while edits keep coming): a one-line edit to a
 * 100 000-client file would otherwise decrypt every key again (a quarter of the load). An
 * outcome depends only on the value, its binding and the master keys, so it is reused
 * only under the same keys. Holds the last load's values alone, and never a plaintext.
 */
export interface SealedKeyChecks {
  last?: { readonly keys: string; readonly byValue: Map<string, string | undefined> };
}

/** referenceProblem for one load, reusing the previous load's outcomes for `enc:` values. */
function referenceChecker(
  options: LoadOptions,
): (reference: string, binding: string) => string | undefined {
  const keys = masterKeysFingerprint(options.masterKeys);
  const memo = options.sealedKeyChecks ?? {};
  const previous = memo.last?.keys === keys ? memo.last.byValue : undefined;
  const byValue = new Map<string, string | undefined>();
  memo.last = { keys, byValue };
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
