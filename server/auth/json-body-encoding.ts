/**
 * The encoding half of reading a request body as Python's `json.loads(bytes)` reads it:
 * UTF-8, UTF-16 or UTF-32, told apart by BOM or by the NUL bytes of the first four, and
 * turned into the UTF-8 bytes that read-json-body scans. A UTF-8 body (nearly every
 * body) is returned as a view of the same bytes, never copied.
 */
import { TextDecoder } from "node:util";

const decoders = new Map<string, TextDecoder>();

function decoderFor(encoding: string): TextDecoder {
  let decoder = decoders.get(encoding);
  if (decoder === undefined) {
    decoder = new TextDecoder(encoding, { ignoreBOM: false });
    decoders.set(encoding, decoder);
  }
  return decoder;
}

type Encoding = "utf-8" | "utf-16le" | "utf-16be" | "utf-32le" | "utf-32be";

/** Python's json.detect_encoding: BOMs first, then the pattern of NUL bytes. */
export function detectEncoding(bytes: Uint8Array): Encoding {
  const [b0, b1, b2, b3] = bytes;
  if (b0 === 0x00 && b1 === 0x00 && b2 === 0xfe && b3 === 0xff) return "utf-32be";
  if (b0 === 0xff && b1 === 0xfe && b2 === 0x00 && b3 === 0x00) return "utf-32le";
  if (b0 === 0xfe && b1 === 0xff) return "utf-16be";
  if (b0 === 0xff && b1 === 0xfe) return "utf-16le";
  if (bytes.length >= 4) {
    if (b0 === 0) return b1 !== 0 ? "utf-16be" : "utf-32be";
    if (b1 === 0) return b2 !== 0 || b3 !== 0 ? "utf-16le" : "utf-32le";
  } else if (bytes.length === 2) {
    if (b0 === 0) return "utf-16be";
    if (b1 === 0) return "utf-16le";
  }
  return "utf-8";
}

/** UTF-32 as Python's codec reads it with surrogatepass; undefined where Python's fails too. */
function decodeUtf32(bytes: Uint8Array, littleEndian: boolean): string | undefined {
  if (bytes.length % 4 !== 0) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const parts: string[] = [];
  let units: number[] = [];
  const start = view.byteLength >= 4 && view.getUint32(0, littleEndian) === 0xfeff ? 4 : 0;
  for (let offset = start; offset < view.byteLength; offset += 4) {
    const point = view.getUint32(offset, littleEndian);
    if (point > 0x10ffff) return undefined;
    units.push(point);
    if (units.length === 8192) {
      parts.push(String.fromCodePoint(...units));
      units = [];
    }
  }
  parts.push(String.fromCodePoint(...units));
  return parts.join("");
}

/**
 * The body as UTF-8 bytes, as the upstream's JSON parser would read it, or undefined when
 * it is UTF-32 that Python's codec refuses too. Nothing else is validated: bytes Python
 * would refuse make the upstream fail as well, so reading them leniently never lets more
 * through (a lone surrogate Python keeps becomes U+FFFD here, which no token contains).
 */
export function utf8JsonBytes(bytes: Uint8Array): Buffer | undefined {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const encoding = detectEncoding(bytes);
  if (encoding === "utf-8")
    return buffer[0] === 0xef && buffer[1] === 0xbb && buffer[2] === 0xbf
      ? buffer.subarray(3)
      : buffer;
  const text =
    encoding === "utf-32le" || encoding === "utf-32be"
      ? decodeUtf32(bytes, encoding === "utf-32le")
      : // The decoder drops a leading BOM of its own encoding, as Python's utf-16 codec does.
        decoderFor(encoding).decode(bytes);
  return text === undefined ? undefined : Buffer.from(text, "utf8");
}
