/**
 * keystore.yaml's bytes as text: the one way they are decoded, so `keygate keystore check`
 * and the server refuse the same files. Strict UTF-8 (a byte that is not UTF-8 is refused
 * where it is, never read as a U+FFFD the file does not hold); a leading BOM is dropped.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { KeystoreError } from "./model.js";
import { positionsIn } from "./read-yaml.js";

/** keystore.yaml's text, decoded, and the SHA-256 of its bytes. */
export interface KeystoreText {
  readonly text: string;
  readonly sourceSha256: string;
}

const NOT_UTF8_MESSAGE = "cannot read the keystore: the file is not valid UTF-8 (save it as UTF-8)";
const BOM = "\uFEFF";
const REPLACEMENT = "\uFFFD";
/** Strict: a byte sequence that is not UTF-8 is an error, never a U+FFFD the file does not hold. */
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * keystore.yaml's text and the SHA-256 of its bytes.
 * @throws KeystoreError when the file is missing or unreadable (one issue at line 1,
 *   column 1) or not UTF-8 (one issue where the first byte that is not UTF-8 is).
 */
export function readKeystoreText(path: string): KeystoreText {
  const bytes = readKeystoreBytes(path);
  return { text: decodeKeystoreText(bytes, path), sourceSha256: sha256Hex(bytes) };
}

/**
 * keystore.yaml's bytes, for a caller that hashes them before it decodes them (the sync
 * skips bytes it has already seen).
 * @throws KeystoreError when the file is missing or unreadable: one issue at line 1, column 1.
 */
export function readKeystoreBytes(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new KeystoreError([{ file: path, line: 1, column: 1, message: readFailure(error) }]);
  }
}

/**
 * keystore.yaml's bytes as text, `file` naming it in the issue.
 * @throws KeystoreError when they are not UTF-8: one issue where the first bad byte is.
 */
export function decodeKeystoreText(bytes: Buffer, file: string): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    const { line, column } = firstNonUtf8(bytes);
    throw new KeystoreError([{ file, line, column, message: NOT_UTF8_MESSAGE }]);
  }
}

function readFailure(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "cannot read the keystore: no such file";
  if (code === "EACCES" || code === "EPERM") return "cannot read the keystore: permission denied";
  if (code === "EISDIR") return "cannot read the keystore: it is a directory, not a file";
  return `cannot read the keystore: ${(error as Error).message}`;
}

/** Where the first bytes that are not UTF-8 are, as an editor would show them. */
function firstNonUtf8(bytes: Buffer): { line: number; column: number } {
  // Decoded leniently, bad bytes become U+FFFD; one the file really holds is EF BF BD.
  const lenient = bytes.toString("utf8");
  let byte = 0;
  let from = 0;
  let at = lenient.indexOf(REPLACEMENT);
  for (; at !== -1; at = lenient.indexOf(REPLACEMENT, at + 1)) {
    byte += Buffer.byteLength(lenient.slice(from, at));
    from = at;
    if (bytes[byte] !== 0xef || bytes[byte + 1] !== 0xbf || bytes[byte + 2] !== 0xbd) break;
  }
  const bom = lenient.startsWith(BOM) ? 1 : 0;
  return positionsIn(lenient.slice(bom))((at === -1 ? lenient.length : at) - bom);
}

/** The lowercase hex SHA-256 a keystore generation records as its source (of the file's bytes, or of text as UTF-8). */
export function sha256Hex(bytes: Buffer | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}
