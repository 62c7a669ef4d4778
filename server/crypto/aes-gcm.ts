/**
 * Upstream keys at rest: `enc:v1:<kid>:<base64(iv ‖ ciphertext ‖ tag)>`, AES-256-GCM
 * with the client id as additional authenticated data, so a value copied onto another
 * client does not decrypt. Several master keys (kids) may be loaded at once for rotation.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";

export const ENC_PREFIX = "enc:v1:";
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
export const KID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
/** Shape of a well-formed enc value; checked by the keystore schema too. */
export const ENC_PATTERN = /^enc:v1:([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/]+={0,2})$/;

/** Loaded master keys by kid. */
export type MasterKeys = ReadonlyMap<string, Buffer>;

export class MasterKeyError extends Error {}

/**
 * Parses `kid:base64[,kid:base64]`.
 * @throws MasterKeyError naming the entry that is wrong (never printing key material).
 */
export function parseMasterKeys(spec: string): MasterKeys {
  const keys = new Map<string, Buffer>();
  const entries = spec
    .split(/[,\n]/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (entries.length === 0)
    throw new MasterKeyError("no key given; expected kid:base64[,kid:base64]");
  entries.forEach((entry, index) => {
    const colon = entry.indexOf(":");
    const kid = colon > 0 ? entry.slice(0, colon) : "";
    if (!KID_PATTERN.test(kid)) {
      throw new MasterKeyError(
        `entry ${index + 1}: expected kid:base64 with kid matching ${KID_PATTERN.source}`,
      );
    }
    const key = Buffer.from(entry.slice(colon + 1), "base64");
    if (key.length !== KEY_BYTES) {
      throw new MasterKeyError(
        `key "${kid}": must be ${KEY_BYTES} bytes of base64, got ${key.length}`,
      );
    }
    if (keys.has(kid)) throw new MasterKeyError(`key "${kid}" is given twice`);
    keys.set(kid, key);
  });
  return keys;
}

/** A new master key as `kid:base64`. */
export function generateMasterKey(kid: string): string {
  if (!KID_PATTERN.test(kid)) throw new MasterKeyError(`kid must match ${KID_PATTERN.source}`);
  return `${kid}:${randomBytes(KEY_BYTES).toString("base64")}`;
}

/** Encrypts a secret for one client under one master key. */
export function encryptSecret(secret: string, clientId: string, kid: string, key: Buffer): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(clientId, "utf8"));
  const ciphertext = Buffer.concat([cipher.update(secret, "utf8"), cipher.final()]);
  const packed = Buffer.concat([iv, ciphertext, cipher.getAuthTag()]);
  return `${ENC_PREFIX}${kid}:${packed.toString("base64")}`;
}

export type DecryptResult =
  | { readonly ok: true; readonly value: string; readonly kid: string }
  | {
      readonly ok: false;
      readonly kid: string | undefined;
      readonly why: "malformed" | "unknown_kid" | "auth_failed";
    };

/** Decrypts an `enc:v1:` value bound to clientId; never throws. */
export function decryptSecret(value: string, clientId: string, keys: MasterKeys): DecryptResult {
  const match = ENC_PATTERN.exec(value);
  if (!match) return { ok: false, kid: undefined, why: "malformed" };
  const kid = match[1] as string;
  const key = keys.get(kid);
  if (!key) return { ok: false, kid, why: "unknown_kid" };
  const packed = Buffer.from(match[2] as string, "base64");
  if (packed.length <= IV_BYTES + TAG_BYTES) return { ok: false, kid, why: "malformed" };
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, packed.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(clientId, "utf8"));
    decipher.setAuthTag(packed.subarray(packed.length - TAG_BYTES));
    const plain = Buffer.concat([
      decipher.update(packed.subarray(IV_BYTES, packed.length - TAG_BYTES)),
      decipher.final(),
    ]);
    return { ok: true, value: plain.toString("utf8"), kid };
  } catch {
    return { ok: false, kid, why: "auth_failed" };
  }
}
