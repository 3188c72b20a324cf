/**
 * The uncompressed blob format, used when a store is configured with `compression: 'none'` (the
 * baseline the store benchmark compares against). Same integrity rules as kvtc blobs: magic,
 * version, layout, positions and a CRC-32C over everything; any damage is E_CORRUPT.
 *
 *   u32 magic "KVRW" | u32 version | u32 headerLength | header JSON | keys | values | positions | u32 crc
 */
import { copyBytes, crc32c } from '../binding.js';
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

/**
 * Checks a raw blob against the model layout (E_CORRUPT on any damage) and locates its data: a
 * view into the blob of keys, values and positions, nothing copied.
 */
function readRaw(blob: Uint8Array, modelLayout: KvLayout): { dtype: KvLayout['dtype']; layers: number; tokens: number; perLayer: number; data: Uint8Array } {
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
  const perLayer = h.tokens * rowValues(modelLayout) * dtypeBytes(h.dtype);
  if (12 + hlen + 2 * h.layers * perLayer + 4 * h.tokens + 4 !== blob.length) throw corrupt('size');
  return { dtype: h.dtype, layers: h.layers, tokens: h.tokens, perLayer, data: blob.subarray(12 + hlen, blob.length - 4) };
}

/** Parses a raw blob of exactly `expectTokens` tokens into its place in a larger output (see decodeSlice). */
export function decodeRawSlice(blob: Uint8Array, modelLayout: KvLayout, out: OutputSlice, expectTokens: number): void {
  const c = readRaw(blob, modelLayout);
  if (c.tokens !== expectTokens || c.dtype !== out.dtype) {
    throw new KvtcError('E_CORRUPT', `chunk holds ${c.tokens} ${c.dtype} tokens, its session expects ${expectTokens} ${out.dtype} tokens`);
  }
  // Straight from the blob into the (shared) output, by native memcpy.
  const rb = c.tokens > 0 ? c.perLayer / c.tokens : 0;
  const layerBytes = out.tokens * rb;
  const at = (dst: Uint8Array, layer: number) => dst.subarray(layer * layerBytes + out.offset * rb, layer * layerBytes + (out.offset + c.tokens) * rb);
  for (let l = 0; l < c.layers; l++) {
    copyBytes(at(out.keys, l), c.data.subarray(l * c.perLayer, (l + 1) * c.perLayer));
    copyBytes(at(out.values, l), c.data.subarray((c.layers + l) * c.perLayer, (c.layers + l + 1) * c.perLayer));
  }
  const positions = new Uint8Array(out.positions.buffer, out.positions.byteOffset + 4 * out.offset, 4 * c.tokens);
  copyBytes(positions, c.data.subarray(2 * c.layers * c.perLayer));
}
