/**
 * The uncompressed blob format, used when a store is configured with `compression: 'none'` (the
 * baseline the store benchmark compares against). Same integrity rules as kvtc blobs: magic,
 * version, layout, positions and a CRC-32C over everything; any damage is E_CORRUPT.
 *
 *   u32 magic "KVRW" | u32 version | u32 headerLength | header JSON | keys | values | positions | u32 crc
 */
import { crc32c } from '../binding.js';
import { ByteReader } from '../bytes.js';
import { KvtcError } from '../errors.js';
import { type KvCache, type KvLayout, dtypeBytes, rowValues } from '../layout.js';
import type { OutputSlice } from '../codec/codec.js';

const MAGIC = 0x5752564b; // "KVRW"
const VERSION = 1;

interface RawHeader {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: KvLayout['dtype'];
  tokens: number;
}

/** Serializes a cache uncompressed. */
export function encodeRaw(cache: KvCache): Uint8Array {
  const { layout, tokens } = cache;
  const header = new TextEncoder().encode(
    JSON.stringify({ layers: layout.layers, kvHeads: layout.kvHeads, headDim: layout.headDim, dtype: layout.dtype, tokens } satisfies RawHeader),
  );
  const perLayer = tokens * rowValues(layout) * dtypeBytes(layout.dtype);
  const total = 12 + header.length + 2 * layout.layers * perLayer + 4 * tokens + 4;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, VERSION, true);
  dv.setUint32(8, header.length, true);
  out.set(header, 12);
  let off = 12 + header.length;
  for (const stream of [cache.keys, cache.values]) {
    for (const a of stream) {
      out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off);
      off += a.byteLength;
    }
  }
  const positions = cache.positions ?? Int32Array.from({ length: tokens }, (_, i) => i);
  out.set(new Uint8Array(positions.buffer, positions.byteOffset, positions.byteLength), off);
  off += 4 * tokens;
  dv.setUint32(off, crc32c(out.subarray(0, off)), true);
  return out;
}

/** Parses a raw blob into a cache with the given model layout; throws E_CORRUPT on any damage. */
function decodeRaw(blob: Uint8Array, modelLayout: KvLayout): KvCache {
  const corrupt = (why: string) => new KvtcError('E_CORRUPT', `corrupt raw blob: ${why}`);
  if (blob.length < 16) throw corrupt('too short');
  const r = new ByteReader(blob, (what) => corrupt(`${what} past the end`));
  if (r.u32('magic') !== MAGIC) throw corrupt('bad magic');
  if (r.u32('version') !== VERSION) throw corrupt('unsupported version');
  if (crc32c(blob.subarray(0, blob.length - 4)) !== r.u32At(blob.length - 4, 'checksum')) {
    throw corrupt('checksum mismatch');
  }
  const hlen = r.u32('header length');
  if (12 + hlen > blob.length - 4) throw corrupt('header length');
  let h: RawHeader;
  try {
    h = JSON.parse(new TextDecoder().decode(blob.subarray(12, 12 + hlen))) as RawHeader;
  } catch {
    throw corrupt('header');
  }
  if (h.layers !== modelLayout.layers || h.kvHeads !== modelLayout.kvHeads || h.headDim !== modelLayout.headDim) {
    throw corrupt('layout does not match the store');
  }
  const layout: KvLayout = { ...modelLayout, dtype: h.dtype };
  const perLayer = h.tokens * rowValues(layout) * dtypeBytes(layout.dtype);
  if (12 + hlen + 2 * h.layers * perLayer + 4 * h.tokens + 4 !== blob.length) throw corrupt('size');
  const data = new Uint8Array(2 * h.layers * perLayer + 4 * h.tokens);
  data.set(blob.subarray(12 + hlen, blob.length - 4));
  const n = perLayer / dtypeBytes(layout.dtype);
  const view = (i: number) =>
    layout.dtype === 'f32' ? new Float32Array(data.buffer, i * perLayer, n) : new Uint16Array(data.buffer, i * perLayer, n);
  return {
    layout,
    tokens: h.tokens,
    keys: Array.from({ length: h.layers }, (_, l) => view(l)),
    values: Array.from({ length: h.layers }, (_, l) => view(h.layers + l)),
    positions: new Int32Array(data.buffer, 2 * h.layers * perLayer, h.tokens),
  };
}

/** Parses a raw blob of exactly `expectTokens` tokens into its place in a larger output (see decodeSlice). */
export function decodeRawSlice(blob: Uint8Array, modelLayout: KvLayout, out: OutputSlice, expectTokens: number): void {
  const c = decodeRaw(blob, modelLayout);
  if (c.tokens !== expectTokens || c.layout.dtype !== out.dtype) {
    throw new KvtcError('E_CORRUPT', `chunk holds ${c.tokens} ${c.layout.dtype} tokens, its session expects ${expectTokens} ${out.dtype} tokens`);
  }
  const rb = rowValues(c.layout) * dtypeBytes(c.layout.dtype);
  const layerBytes = out.tokens * rb;
  c.keys.forEach((a, l) => out.keys.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), l * layerBytes + out.offset * rb));
  c.values.forEach((a, l) => out.values.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), l * layerBytes + out.offset * rb));
  out.positions.set(c.positions!, out.offset);
}
