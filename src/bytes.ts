/**
 * The one reader of little-endian binary formats on the TypeScript side (raw blobs, llama.cpp
 * sequence states, the adapter's attachments): sequential fields with a bounds check each, so a
 * short or damaged input fails with the format's own error instead of reading past its end.
 */
import type { KvtcError } from './errors.js';

export class ByteReader {
  readonly bytes: Uint8Array;
  readonly #dv: DataView;
  /** The next byte to read. */
  offset = 0;

  /**
   * @param short builds the error for a field that does not fit: what it is, the bytes it needs,
   *   the offset and the bytes left
   */
  constructor(bytes: Uint8Array, readonly short: (what: string, need: number, offset: number, left: number) => KvtcError) {
    this.bytes = bytes;
    this.#dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get left(): number {
    return this.bytes.length - this.offset;
  }

  /** Fails unless `n` more bytes are there. */
  need(n: number, what: string): void {
    if (n > this.left) throw this.short(what, n, this.offset, this.left);
  }

  u16(what: string): number {
    this.need(2, what);
    const v = this.#dv.getUint16(this.offset, true);
    this.offset += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.#dv.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }

  i32(what: string): number {
    this.need(4, what);
    const v = this.#dv.getInt32(this.offset, true);
    this.offset += 4;
    return v;
  }

  u64(what: string): bigint {
    this.need(8, what);
    const v = this.#dv.getBigUint64(this.offset, true);
    this.offset += 8;
    return v;
  }

  /** `n` bytes as a view of the input (not a copy). */
  view(n: number, what: string): Uint8Array {
    this.need(n, what);
    const v = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return v;
  }

  /** `n` little-endian int32 values, copied. */
  int32s(n: number, what: string): Int32Array {
    this.need(4 * n, what);
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.#dv.getInt32(this.offset + 4 * i, true);
    this.offset += 4 * n;
    return out;
  }

  skip(n: number, what: string): void {
    this.need(n, what);
    this.offset += n;
  }

  /** A field at an absolute position, without moving (bounds-checked). */
  u32At(at: number, what: string): number {
    if (at < 0 || at + 4 > this.bytes.length) throw this.short(what, 4, at, Math.max(0, this.bytes.length - at));
    return this.#dv.getUint32(at, true);
  }

  i32At(at: number, what: string): number {
    if (at < 0 || at + 4 > this.bytes.length) throw this.short(what, 4, at, Math.max(0, this.bytes.length - at));
    return this.#dv.getInt32(at, true);
  }
}
