/**
 * The one token-hash function, shared by the server and the CLI and pinned by the
 * vectors in schemas/token-hash-vectors.json: lowercase hex SHA-256 of the UTF-8 token
 * after trimming surrounding whitespace.
 */
import { hash } from "node:crypto";

export const DIGEST_PATTERN = /^[0-9a-f]{64}$/;

/** Digest of a token as stored in keystore.yaml and SQLite. */
export function hashToken(token: string): string {
  // The one-shot hash (Node 20.12+) costs under half of a createHash object per Check.
  return hash("sha256", token.trim(), "hex");
}

/** The first 12 hex characters of a digest: enough to find a token in keystore.yaml, useless to an attacker. */
export function digestPrefix(digest: string): string {
  return digest.slice(0, 12);
}
