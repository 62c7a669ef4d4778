/**
 * Resolves upstream key references (`enc:v1:…`, `env:VAR`) to the key sent upstream.
 * Results are memoised per client and reference so a Check decrypts at most once per
 * generation; the memo is cleared whenever a new generation is applied.
 */

import type { UpstreamKey } from "../auth/decide.js";
import { decryptSecret, type MasterKeys } from "../crypto/aes-gcm.js";

const UNAVAILABLE: UpstreamKey = { kind: "unavailable" };
const NONE: UpstreamKey = { kind: "none" };
/** A header value may not carry CR, LF or NUL; such a key would be rejected by Envoy anyway. */
const UNSAFE_HEADER_VALUE = /[\r\n\0]/;

export class UpstreamKeyResolver {
  /** binding → reference → key; nested so a hit hashes the two (cached) strings, not a fresh concatenation. */
  private readonly memo = new Map<string, Map<string, UpstreamKey>>();

  constructor(
    private readonly masterKeys: MasterKeys,
    private readonly env: Readonly<Record<string, string | undefined>>,
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
    if (reference.startsWith("env:")) value = this.env[reference.slice("env:".length)];
    else if (reference.startsWith("enc:")) {
      const decrypted = decryptSecret(reference, binding, this.masterKeys);
      value = decrypted.ok ? decrypted.value : undefined;
    }
    if (value === undefined || value.trim() === "" || UNSAFE_HEADER_VALUE.test(value))
      return UNAVAILABLE;
    return { kind: "value", value: value.trim() };
  }
}
