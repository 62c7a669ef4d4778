/**
 * The protobuf wire format, just what keygate's few messages need: a reader that walks
 * fields by offset (no copies, unknown fields skipped) and a writer that produces a
 * gRPC length-prefixed message in one buffer. Field numbers live with the messages
 * (check-wire.ts, health-wire.ts); their round trip against the reference protos is
 * tested in test/unit/check-wire.test.ts.
 */

/** Wire types (https://protobuf.dev/programming-guides/encoding/). */
export const VARINT = 0;
export const FIXED64 = 1;
export const LENGTH_DELIMITED = 2;
export const FIXED32 = 5;

/** Bytes that are not a well-formed protobuf message. */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireError";
  }
}

/** Walks one message's fields: `next()` → field number, then read or `skip()` the value. */
export class WireReader {
  /** Wire type of the field `next()` returned. */
  wireType = 0;
  private pos: number;

  constructor(
    readonly buf: Buffer,
    start: number,
    private end: number,
  ) {
    this.pos = start;
  }

  /** The next field's number, or 0 at the end of the message. */
  next(): number {
    if (this.pos >= this.end) return 0;
    const key = this.varint();
    this.wireType = key & 7;
    const field = Math.floor(key / 8);
    if (field === 0) throw new WireError("field number 0");
    return field;
  }

  /** A varint as a number (exact up to 2^53; larger values only matter to skip them). */
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let index = 0; index < 10; index++) {
      if (this.pos >= this.end) throw new WireError("truncated varint");
      const byte = this.buf[this.pos++] as number;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    throw new WireError("varint longer than 10 bytes");
  }

  /** A double (FIXED64) field. */
  double(): number {
    if (this.end - this.pos < 8) throw new WireError("truncated fixed-width field");
    const value = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return value;
  }

  /** Reads a length-delimited field's length and checks it fits; the value starts at `pos`. */
  private length(): number {
    const length = this.varint();
    if (length > this.end - this.pos) throw new WireError("length beyond the message");
    return length;
  }

  string(): string {
    const length = this.length();
    const start = this.pos;
    this.pos += length;
    return this.buf.toString("utf8", start, this.pos);
  }

  /** A bytes field as a view of the input (no copy). */
  bytes(): Buffer {
    const length = this.length();
    const start = this.pos;
    this.pos += length;
    return this.buf.subarray(start, this.pos);
  }

  /**
   * Narrows the reader to the embedded message at the cursor (no new reader, no copy);
   * read its fields with `next()` until 0, then `leave(outer)`.
   */
  enter(): number {
    const length = this.length();
    const outer = this.end;
    this.end = this.pos + length;
    return outer;
  }

  /** Returns from the embedded message `enter` narrowed to, skipping what was not read. */
  leave(outer: number): void {
    this.pos = this.end;
    this.end = outer;
  }

  /** Skips the value of the field `next()` returned. */
  skip(): void {
    switch (this.wireType) {
      case VARINT:
        this.varint();
        return;
      case FIXED64:
        this.advance(8);
        return;
      case LENGTH_DELIMITED:
        this.advance(this.length());
        return;
      case FIXED32:
        this.advance(4);
        return;
      default:
        throw new WireError(`unsupported wire type ${this.wireType}`);
    }
  }

  private advance(bytes: number): void {
    if (bytes > this.end - this.pos) throw new WireError("truncated fixed-width field");
    this.pos += bytes;
  }
}

/** Strings up to this many UTF-16 units are tried as ASCII first (WireWriter.string). */
const SHORT_STRING = 256;

/** gRPC's message prefix: a compressed flag byte and a 4-byte big-endian length. */
export const GRPC_PREFIX_BYTES = 5;

/**
 * Writes one message into a growing buffer whose first 5 bytes are kept for the gRPC
 * prefix; `framed()` fills it in. Embedded messages are written in place after a
 * one-byte length slot, widened if the message turns out longer than 127 bytes.
 */
export class WireWriter {
  private buf: Buffer;
  private pos = GRPC_PREFIX_BYTES;

  constructor(initialBytes = 512) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  private ensure(bytes: number): void {
    if (this.pos + bytes <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + bytes));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  private rawVarint(value: number): void {
    this.ensure(10);
    let rest = value;
    while (rest >= 0x80) {
      this.buf[this.pos++] = (rest % 128) | 0x80;
      rest = Math.floor(rest / 128);
    }
    this.buf[this.pos++] = rest;
  }

  private key(field: number, wireType: number): void {
    this.rawVarint(field * 8 + wireType);
  }

  /** A non-negative integer or enum field (negative int32 values are not needed here). */
  varint(field: number, value: number): void {
    if (value < 0 || !Number.isInteger(value)) throw new RangeError(`varint ${value}`);
    this.key(field, VARINT);
    this.rawVarint(value);
  }

  bool(field: number, value: boolean): void {
    this.varint(field, value ? 1 : 0);
  }

  double(field: number, value: number): void {
    this.key(field, FIXED64);
    this.ensure(8);
    this.buf.writeDoubleLE(value, this.pos);
    this.pos += 8;
  }

  string(field: number, value: string): void {
    this.key(field, LENGTH_DELIMITED);
    if (value.length <= SHORT_STRING && this.ascii(value)) return;
    const length = Buffer.byteLength(value, "utf8");
    this.rawVarint(length);
    this.ensure(length);
    this.pos += this.buf.write(value, this.pos, length, "utf8");
  }

  /**
   * Writes a short string's length and bytes when it is all ASCII (header names and
   * values, ids: nearly every string keygate writes) and says whether it did; a loop
   * here costs less than the two native calls of the general path.
   */
  private ascii(value: string): boolean {
    const start = this.pos;
    this.ensure(value.length + 2);
    this.rawVarint(value.length);
    const { buf } = this;
    let at = this.pos;
    for (let i = 0; i < value.length; i++) {
      const code = value.charCodeAt(i);
      if (code > 0x7f) {
        this.pos = start;
        return false;
      }
      buf[at++] = code;
    }
    this.pos = at;
    return true;
  }

  /** Starts an embedded message; pass the result to `end`. */
  begin(field: number): number {
    this.key(field, LENGTH_DELIMITED);
    this.ensure(1);
    return this.pos++;
  }

  /** Closes the embedded message `begin` opened: writes its length before it. */
  end(slot: number): void {
    const length = this.pos - slot - 1;
    if (length < 0x80) {
      this.buf[slot] = length;
      return;
    }
    let width = 1;
    for (let rest = length; rest >= 0x80; rest = Math.floor(rest / 128)) width++;
    this.ensure(width - 1);
    this.buf.copyWithin(slot + width, slot + 1, this.pos);
    this.pos += width - 1;
    let rest = length;
    let at = slot;
    while (rest >= 0x80) {
      this.buf[at++] = (rest % 128) | 0x80;
      rest = Math.floor(rest / 128);
    }
    this.buf[at] = rest;
  }

  /** The message with its gRPC prefix (uncompressed), ready to write to the stream. */
  framed(): Buffer {
    this.buf[0] = 0;
    this.buf.writeUInt32BE(this.pos - GRPC_PREFIX_BYTES, 1);
    return this.buf.subarray(0, this.pos);
  }
}
