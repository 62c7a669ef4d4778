/**
 * The look-up phase of a Check: checksum, hash, one indexed SQLite read, and the
 * client's upstream key. Never throws: a store failure is reported so the caller denies.
 */

import type { Lookup } from "../auth/decide.js";
import type { Extraction } from "../auth/extract-credential.js";
import { hasValidChecksum } from "../crypto/token-format.js";
import { hashToken } from "../crypto/token-hash.js";
import { DEFAULTS_AAD, type TokenMatch } from "../keystore/format/model.js";
import type { UpstreamKeyResolver } from "../keystore/store/upstream-keys.js";

export interface DigestIndex {
  lookup(digest: string): TokenMatch | undefined;
}

const SKIPPED: Lookup = { kind: "skipped" };

/**
 * Looks the extracted token up.
 * @throws whatever the store throws (SQLite I/O); the Check handler turns it into a denial.
 */
export function lookupCredential(
  extraction: Extraction,
  index: DigestIndex,
  keys: UpstreamKeyResolver,
): Lookup {
  if (extraction.kind !== "token") return SKIPPED;
  const digest = hashToken(extraction.token);
  // A mistyped minted token is rejected without touching the store.
  if (!hasValidChecksum(extraction.token.trim())) return { kind: "checksum", digest };
  const match = index.lookup(digest);
  if (match === undefined) return { kind: "unknown", digest };
  // A client's enc: value is bound to its id; the shared default to DEFAULTS_AAD.
  const binding = match.upstreamKeyIsDefault ? DEFAULTS_AAD : match.clientId;
  return { kind: "found", digest, match, upstreamKey: keys.resolve(match.upstreamKey, binding) };
}
