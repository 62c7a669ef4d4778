/**
 * Minted token format: `kg_` + 32 random bytes (base64url, 43 chars) + a 6-character
 * base62 CRC32 checksum of everything before it. The checksum lets keygate reject a
 * mistyped token without a lookup, and the fixed prefix lets secret scanners find leaks.
 */
import { randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";

export const TOKEN_PREFIX = "kg_";
const RANDOM_BYTES = 32;
const BODY_LENGTH = 43; // base64url of 32 bytes, unpadded
const CHECKSUM_LENGTH = 6;
export const MINTED_TOKEN_LENGTH = TOKEN_PREFIX.length + BODY_LENGTH + CHECKSUM_LENGTH;
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const MINTED_PATTERN = /^kg_[A-Za-z0-9_-]{43}[0-9A-Za-z]{6}$/;

function base62Checksum(text: string): string {
  let value = crc32(text);
  let out = "";
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62[value % 62] + out;
    value = Math.floor(value / 62);
  }
  return out;
}

/** A new random token in keygate's format. */
export function mintToken(): string {
  const body = TOKEN_PREFIX + randomBytes(RANDOM_BYTES).toString("base64url");
  return body + base62Checksum(body);
}

/**
 * Whether a token may be looked up. Tokens with the `kg_` prefix must be well-formed
 * with a valid checksum; any other string (a token an operator hashed by hand) passes.
 */
export function hasValidChecksum(token: string): boolean {
  if (!token.startsWith(TOKEN_PREFIX)) return true;
  if (!MINTED_PATTERN.test(token)) return false;
  const body = token.slice(0, -CHECKSUM_LENGTH);
  return base62Checksum(body) === token.slice(-CHECKSUM_LENGTH);
}
