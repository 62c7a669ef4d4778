/**
 * Resolves upstream key references (`enc:v1:…`, `env:VAR`) to the key sent upstream.
 * Results are memoised per client and reference so a Check decrypts at most once per
 * generation; the memo is cleared whenever a new generation is applied. The loader has
 * refused what it can see in the file; the same rules are applied again here, where the
 * key is about to leave, so a key that could not be checked at load (an environment
 * variable, a master key loaded since) is still never sent malformed or from KEYGATE_*.
 */

import { decryptSecret, type MasterKeys } from "../../crypto/aes-gcm.js";
import { envNameProblem, upstreamKeyValueProblem } from "../format/upstream-key-rules.js";

/** A client's upstream key as resolved for a request. */
export type UpstreamKey =
  | { readonly kind: "value"; readonly value: string }
  | { readonly kind: "none" }
  | { readonly kind: "unavailable" };

const UNAVAILABLE: UpstreamKey = { kind: "unavailable" };
const NONE: UpstreamKey = { kind: "none" };

export class UpstreamKeyResolver {
  /** binding → reference → key; nested so a hit hashes the two (cached) strings, not a fresh concatenation. */
  private readonly memo = new Map<string, Map<string, UpstreamKey>>();

  /** @param upstreamEnvPrefix KEYGATE_UPSTREAM_ENV_PREFIX: `env:` names without it are unavailable. */
  constructor(
    private readonly masterKeys: MasterKeys,
    private readonly env: Readonly<Record<string, string | undefined>>,
    private readonly upstreamEnvPrefix: string | null = null,
  ) {}

  /**
   * The key for a reference; `binding` is the AAD an `enc:` value is bound to (the client
   * id, or DEFAULTS_AAD for the shared default). Never throws; unresolvable is "unavailable".
   */
  resolve(reference: string | null, binding: string): UpstreamKey {
    if (reference === null) return NONE;
    let byReference = this.memo.get(binding);
    if (byReference === undefined) {
      byReference = new Map();
      this.memo.set(binding, byReference);
    }
    let resolved = byReference.get(reference);
    if (resolved === undefined) {
      resolved = this.resolveUncached(reference, binding);
      byReference.set(reference, resolved);
    }
    return resolved;
  }

  /** Forgets memoised keys, e.g. when a new keystore generation is applied. */
  clear(): void {
    this.memo.clear();
  }

  private resolveUncached(reference: string, binding: string): UpstreamKey {
    let value: string | undefined;
    if (reference.startsWith("env:")) {
      const name = reference.slice("env:".length);
      if (envNameProblem(name, this.upstreamEnvPrefix) === undefined) value = this.env[name];
    } else if (reference.startsWith("enc:")) {
      const decrypted = decryptSecret(reference, binding, this.masterKeys);
      value = decrypted.ok ? decrypted.value : undefined;
    }
    if (value === undefined || upstreamKeyValueProblem(value) !== undefined) return UNAVAILABLE;
    return { kind: "value", value };
  }
}
