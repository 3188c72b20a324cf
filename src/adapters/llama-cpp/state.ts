/**
 * Reader and writer for llama.cpp sequence-state files: what `llama_state_seq_save_file`
 * (node-llama-cpp: `LlamaContextSequence.saveStateToFile`) writes. Magic `ggsq`, version 3.
 *
 * Layout (all little-endian), as written by llama.cpp's `llama_kv_cache::state_write`:
 *
 *   u32 magic (0x67677371), u32 version (3), u32 n_tokens, i32 tokens[n_tokens]
 *   u32 n_stream                                  -- only 1 is supported here
 *   per stream:
 *     u32 cell_count                              -- 0: nothing else follows for this stream
 *     cell_count x { i32 pos; u32 n_seq_id; i32 seq_id[n_seq_id] }
 *     u32 v_trans, u32 n_layer
 *     n_layer x K:  i32 ggml_type, u64 row_bytes, cell_count rows of row_bytes
 *     n_layer x V:  v_trans = 0: same as K
 *                   v_trans = 1: i32 ggml_type, u32 el_bytes, u32 kv_dim, then kv_dim runs of
 *                                cell_count elements (the transposed V cache)
 *
 * The file has no head count or head size, only the row width (kv_dim = n_kv_heads * head_dim),
 * so the caller supplies the split (and the RoPE spec) to build a `KvCache`. K and V each have
 * one ggml type over all layers (F32, F16, BF16, Q8_0 or Q4_0, see ggml-types.ts); K and V may
 * differ (e.g. `--cache-type-k q8_0` with an F16 V).
 */
import { ByteReader } from '../../bytes.js';
import { KvtcError } from '../../errors.js';
import type { DType, KvCache, KvLayout, RopeSpec } from '../../layout.js';
import { rowValues, validateCache, validateLayout } from '../../layout.js';
import { toFloat32, fromFloat32 } from '../../half.js';
import {
  type KvElementType,
  SUPPORTED_KV_TYPES,
  dequantize,
  ggmlTypeName as typeName,
  ggmlTypeOfDtype,
  kvElementType,
  quantize,
  rowBytesOf,
} from './ggml-types.js';

/** `ggsq` read as a little-endian u32 (LLAMA_STATE_SEQ_MAGIC). */
export const LLAMA_STATE_SEQ_MAGIC = 0x67677371;
/** The only sequence-state version this module reads and writes (LLAMA_STATE_SEQ_VERSION). */
export const LLAMA_STATE_SEQ_VERSION = 3;

/**
 * The KV cells of the one stream in the file, in file order, in compact (CSR) form so that
 * parsing long caches allocates a few typed arrays rather than one object per cell.
 */
export interface LlamaSequenceCells {
  /** Position of each cell (cell_count values). */
  pos: Int32Array;
  /** Cell i's sequence ids are `seqIds[seqIdStart[i] .. seqIdStart[i + 1])` (cell_count + 1 values). */
  seqIdStart: Uint32Array;
  /** All cells' sequence ids, concatenated. */
  seqIds: Int32Array;
}

/** A parsed llama.cpp sequence-state file. */
export interface LlamaSequenceState {
  /** File format version (always 3). */
  version: number;
  /**
   * The token ids from the file header (node-llama-cpp's `contextTokens`). Their count can
   * differ from the number of KV cells, so both are kept.
   */
  tokens: Int32Array;
  /** Metadata of the KV cells; `cache.tokens` equals their count. */
  cells: LlamaSequenceCells;
  /** 1 when llama.cpp stored V transposed (flash attention off), 0 otherwise. */
  vTrans: 0 | 1;
  /** Values per cell per layer for K and for V (n_kv_heads * head_dim). */
  kvDim: number;
  /**
   * ggml types of the K and V cache in the file (ggml.h ids: 0 F32, 1 F16, 30 BF16, 8 Q8_0,
   * 2 Q4_0). When both are the same plain type the cache holds the file's bits in that dtype;
   * otherwise (quantized, or K and V of different types) it holds float32 values, and
   * writeSequenceState converts (re-quantizes) back to these types. Absent: the cache's dtype.
   */
  kType?: number;
  vType?: number;
  /**
   * The KV data, token-major `[cell][kvDim]` per layer (V un-transposed when `vTrans` is 1),
   * positions copied from the cells. May be replaced by another cache of the same layout and
   * token count before `writeSequenceState`.
   */
  cache: KvCache;
}

/**
 * How to split kv_dim into heads. Give both, or one of them (the other is derived and must
 * divide kv_dim); with neither, the cache is read as one head of kv_dim values.
 */
export interface LlamaStateShape {
  kvHeads?: number;
  headDim?: number;
}

// The bulk copies below move raw bytes between the file and typed arrays, which is only a
// correct decoding of a little-endian file when the host is little-endian too. Every platform
// Node ships for today is, but keep an element-wise DataView path so a big-endian host stays correct.
const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function layoutError(message: string): KvtcError {
  return new KvtcError('E_LAYOUT', `llama sequence state: ${message}`);
}

/** New typed array of `count` elements of `el` bytes (raw bits for 16-bit types). */
function newElems(el: number, count: number): Float32Array | Uint16Array {
  return el === 4 ? new Float32Array(count) : new Uint16Array(count);
}

/** Integer view of a 4- or 2-byte element array, so transposes move bits, never floats (NaN payloads survive). */
function bitsView(a: ArrayBufferView, el: number): Uint32Array | Uint16Array {
  return el === 4
    ? new Uint32Array(a.buffer, a.byteOffset, a.byteLength >>> 2)
    : new Uint16Array(a.buffer, a.byteOffset, a.byteLength >>> 1);
}

/** Copies `out.length` little-endian elements from `bytes[off..]` into `out` (any alignment). */
function readElems(bytes: Uint8Array, off: number, out: Uint32Array | Uint16Array | Int32Array): void {
  const el = out.BYTES_PER_ELEMENT;
  if (HOST_LE) {
    new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes.subarray(off, off + out.byteLength));
    return;
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset + off, out.byteLength);
  if (el === 4) for (let i = 0; i < out.length; i++) out[i] = dv.getUint32(4 * i, true);
  else for (let i = 0; i < out.length; i++) out[i] = dv.getUint16(2 * i, true);
}

/** Copies the elements of `src` to `bytes[off..]` as little-endian values. */
function writeElems(bytes: Uint8Array, off: number, src: Uint32Array | Uint16Array | Int32Array): void {
  if (HOST_LE) {
    bytes.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), off);
    return;
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset + off, src.byteLength);
  if (src.BYTES_PER_ELEMENT === 4) for (let i = 0; i < src.length; i++) dv.setUint32(4 * i, src[i]!, true);
  else for (let i = 0; i < src.length; i++) dv.setUint16(2 * i, src[i]!, true);
}

/** `dst[c * dim + j] = src[j * cells + c]`: llama.cpp's transposed V back to token-major. */
function untranspose(src: Uint32Array | Uint16Array, dst: Uint32Array | Uint16Array, cells: number, dim: number): void {
  for (let j = 0; j < dim; j++) {
    const base = j * cells;
    for (let c = 0, d = j; c < cells; c++, d += dim) dst[d] = src[base + c]!;
  }
}

/** `dst[j * cells + c] = src[c * dim + j]`: token-major V to llama.cpp's transposed runs. */
function transpose(src: Uint32Array | Uint16Array, dst: Uint32Array | Uint16Array, cells: number, dim: number): void {
  for (let j = 0; j < dim; j++) {
    const base = j * cells;
    for (let c = 0, s = j; c < cells; c++, s += dim) dst[base + c] = src[s]!;
  }
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** Splits kv_dim into heads per the caller's shape hint, refusing splits that do not add up. */
function resolveShape(kvDim: number, shape: LlamaStateShape | undefined): { kvHeads: number; headDim: number } {
  const { kvHeads, headDim } = shape ?? {};
  if (kvHeads !== undefined && !isPositiveInt(kvHeads)) {
    throw layoutError(`shape.kvHeads must be a positive integer, got ${String(kvHeads)}`);
  }
  if (headDim !== undefined && !isPositiveInt(headDim)) {
    throw layoutError(`shape.headDim must be a positive integer, got ${String(headDim)}`);
  }
  if (kvHeads !== undefined && headDim !== undefined) {
    if (kvHeads * headDim !== kvDim) {
      throw layoutError(`shape kvHeads ${kvHeads} x headDim ${headDim} = ${kvHeads * headDim} does not match the file's kv_dim ${kvDim}`);
    }
    return { kvHeads, headDim };
  }
  if (kvHeads !== undefined) {
    if (kvDim % kvHeads !== 0) throw layoutError(`kv_dim ${kvDim} is not divisible by shape.kvHeads ${kvHeads}`);
    return { kvHeads, headDim: kvDim / kvHeads };
  }
  if (headDim !== undefined) {
    if (kvDim % headDim !== 0) throw layoutError(`kv_dim ${kvDim} is not divisible by shape.headDim ${headDim}`);
    return { kvHeads: kvDim / headDim, headDim };
  }
  return { kvHeads: 1, headDim: kvDim };
}

/**
 * One layer's K or V data from the file as a cache array of `dtype`: the file's bits when its
 * type is that plain dtype, else float32 values (converted exactly, or dequantized).
 * @param raw the layer's bytes; `count` = cells x kvDim values; `vTrans` 1: kvDim runs of cells.
 */
function decodeStream(raw: Uint8Array, t: KvElementType, dtype: DType, count: number, vTrans: 0 | 1, kvDim: number): Float32Array | Uint16Array {
  if (t.quantized) {
    const out = new Float32Array(count);
    dequantize(t, raw, 0, out);
    return out;
  }
  const el = t.blockBytes;
  const arr = newElems(el, count);
  if (vTrans) {
    const scratch = bitsView(newElems(el, count), el);
    readElems(raw, 0, scratch);
    untranspose(scratch, bitsView(arr, el), count / kvDim, kvDim);
  } else {
    readElems(raw, 0, bitsView(arr, el));
  }
  return t.dtype === dtype ? arr : toFloat32(arr, t.dtype);
}

/** Writes a cache array of `dtype` as `n` cells of ggml type `t` at `out[off..]` (transposed when vTrans). */
function encodeStream(arr: ArrayBufferView, dtype: DType, t: KvElementType, vTrans: 0 | 1, n: number, kvDim: number, out: Uint8Array, off: number): void {
  if (t.quantized) {
    quantize(t, dtype === 'f32' ? (arr as Float32Array) : toFloat32(arr, dtype), out, off);
    return;
  }
  const el = t.blockBytes;
  const src = t.dtype === dtype ? arr : fromFloat32(dtype === 'f32' ? (arr as Float32Array) : toFloat32(arr, dtype), t.dtype);
  const bits = bitsView(src, el);
  if (vTrans) {
    const scratch = bitsView(newElems(el, n * kvDim), el);
    transpose(bits, scratch, n, kvDim);
    writeElems(out, off, scratch);
  } else {
    writeElems(out, off, bits);
  }
}

/** The element type a state's K or V is written as: its recorded ggml type, else the cache dtype's. */
function writeType(id: number | undefined, dtype: DType, field: string, kvDim: number): KvElementType {
  const t = kvElementType(id ?? ggmlTypeOfDtype(dtype));
  if (!t) throw layoutError(`state.${field} ${typeName(id!)} is not a type this adapter writes (${SUPPORTED_KV_TYPES})`);
  if (kvDim % t.blockValues !== 0) throw layoutError(`kv_dim ${kvDim} is not a whole number of ${t.name} blocks (${t.blockValues} values)`);
  return t;
}

/**
 * Parses a llama.cpp sequence-state file (version 3, one stream) into its header tokens, cell
 * metadata and a token-major `KvCache`.
 *
 * @param bytes the whole file.
 * @param rope RoPE spec of the model, stored in the cache layout (llama.cpp keeps K after RoPE).
 *   stories260K: `{ theta: 10000, style: 'interleaved' }`.
 * @param shape how kv_dim splits into heads (default one head of kv_dim values).
 *   stories260K: `{ kvHeads: 4, headDim: 8 }`.
 * @throws KvtcError E_LAYOUT on a bad magic or version, n_stream != 1, an empty state, a ggml
 *   type other than F32/F16/BF16/Q8_0/Q4_0 (named), types or row sizes that differ between
 *   layers, K and V rows of different widths, transposed quantized V, a truncated buffer,
 *   trailing bytes, or a shape that does not match kv_dim.
 */
export function parseSequenceState(bytes: Uint8Array, rope?: RopeSpec, shape?: LlamaStateShape): LlamaSequenceState {
  if (!(bytes instanceof Uint8Array)) {
    throw layoutError(`expected a Uint8Array, got ${(bytes as unknown as object)?.constructor?.name ?? String(bytes)}`);
  }
  const len = bytes.length;
  const r = new ByteReader(bytes, (what, n, at, left) =>
    layoutError(`truncated: ${what} needs ${n} bytes at offset ${at}, only ${left} left (file is ${len} bytes)`),
  );
  const need = (n: number, what: string): void => r.need(n, what);
  const u32 = (what: string): number => r.u32(what);
  const i32 = (what: string): number => r.i32(what);

  const magic = u32('magic');
  if (magic !== LLAMA_STATE_SEQ_MAGIC) {
    throw layoutError(`bad magic 0x${magic.toString(16).padStart(8, '0')}, expected 0x67677371 ('ggsq')`);
  }
  const version = u32('version');
  if (version !== LLAMA_STATE_SEQ_VERSION) {
    throw layoutError(`unsupported version ${version}, only version ${LLAMA_STATE_SEQ_VERSION} is supported`);
  }
  const nTokens = u32('n_tokens');
  const tokens = r.int32s(nTokens, `${nTokens} header tokens`);

  const nStream = u32('n_stream');
  if (nStream !== 1) throw layoutError(`n_stream is ${nStream}, only single-stream (n_stream = 1) states are supported`);

  const cellCount = u32('cell_count');
  if (cellCount === 0) {
    throw layoutError('cell_count is 0: the state holds no KV cells, so it carries no layer count, type or row size to build a cache from');
  }
  // Each cell takes at least 8 bytes; refuse impossible counts before allocating for them.
  need(8 * cellCount, `${cellCount} cells`);

  // Cells: a first pass finds how many seq ids there are (bounds-checked), a second fills arrays.
  const cellsStart = r.offset;
  let totalSeqIds = 0;
  for (let i = 0; i < cellCount; i++) {
    r.skip(4, `cell ${i} pos`);
    const n = u32(`cell ${i} n_seq_id`);
    r.skip(4 * n, `${n} seq ids of cell ${i}`);
    totalSeqIds += n;
  }
  const pos = new Int32Array(cellCount);
  const seqIdStart = new Uint32Array(cellCount + 1);
  const seqIds = new Int32Array(totalSeqIds);
  r.offset = cellsStart;
  for (let i = 0, k = 0; i < cellCount; i++) {
    pos[i] = i32(`cell ${i} pos`);
    const n = u32(`cell ${i} n_seq_id`);
    seqIdStart[i] = k;
    for (let j = 0; j < n; j++) seqIds[k++] = i32(`cell ${i} seq id`);
    seqIdStart[i + 1] = k;
  }

  const vTransRaw = u32('v_trans');
  if (vTransRaw !== 0 && vTransRaw !== 1) throw layoutError(`v_trans must be 0 or 1, got ${vTransRaw}`);
  const vTrans = vTransRaw as 0 | 1;
  const nLayer = u32('n_layer');
  if (nLayer === 0) throw layoutError('n_layer is 0');
  // Each layer needs two 12-byte headers (K and V) at least; bound n_layer before looping.
  need(24 * nLayer, `${nLayer} layer headers`);

  // K rows first: each layer's header and raw bytes (decoded once the V type is known too).
  let kt: KvElementType | undefined;
  let kRowBytes = 0;
  let kvDim = 0;
  let heads = { kvHeads: 0, headDim: 0 };
  const kRaw: Uint8Array[] = [];
  for (let l = 0; l < nLayer; l++) {
    const type = i32(`layer ${l} K type`);
    const rb = r.u64(`layer ${l} K row_bytes`);
    if (l === 0) {
      kt = kvElementType(type);
      if (!kt) throw layoutError(`layer 0 K has unsupported ggml type ${typeName(type)} (${type}; supported: ${SUPPORTED_KV_TYPES})`);
      if (rb === 0n || rb % BigInt(kt.blockBytes) !== 0n || rb > BigInt(len)) {
        throw layoutError(`layer 0 K row_bytes ${rb} is not a positive multiple of the ${kt.name} block size ${kt.blockBytes} that fits the file`);
      }
      kRowBytes = Number(rb);
      kvDim = (kRowBytes / kt.blockBytes) * kt.blockValues;
      heads = resolveShape(kvDim, shape);
    } else if (type !== kt!.id) {
      throw layoutError(`layer ${l} K type ${typeName(type)} differs from layer 0 K type ${kt!.name} (mixed types are not supported)`);
    } else if (rb !== BigInt(kRowBytes)) {
      throw layoutError(`layer ${l} K row_bytes ${rb} differs from layer 0 row_bytes ${kRowBytes} (mixed row sizes are not supported)`);
    }
    const size = cellCount * kRowBytes;
    kRaw.push(r.view(size, `layer ${l} K data (${cellCount} rows of ${kRowBytes} bytes)`));
  }

  let vt: KvElementType | undefined;
  const vRaw: Uint8Array[] = [];
  for (let l = 0; l < nLayer; l++) {
    const type = i32(`layer ${l} V type`);
    if (l === 0) {
      vt = kvElementType(type);
      if (!vt) throw layoutError(`layer 0 V has unsupported ggml type ${typeName(type)} (${type}; supported: ${SUPPORTED_KV_TYPES})`);
      if (kvDim % vt.blockValues !== 0) throw layoutError(`kv_dim ${kvDim} is not a whole number of ${vt.name} blocks`);
    } else if (type !== vt!.id) {
      throw layoutError(`layer ${l} V type ${typeName(type)} differs from layer 0 V type ${vt!.name} (mixed types are not supported)`);
    }
    const vRowBytes = rowBytesOf(vt!, kvDim);
    if (!vTrans) {
      const rb = r.u64(`layer ${l} V row_bytes`);
      if (rb !== BigInt(vRowBytes)) {
        throw layoutError(`layer ${l} V row_bytes ${rb} differs from the ${vt!.name} row of kv_dim ${kvDim} values (${vRowBytes} bytes; K and V must have the same width)`);
      }
    } else {
      // llama.cpp transposes V only without flash attention, which it refuses for quantized V.
      if (vt!.quantized) throw layoutError(`layer ${l} V is ${vt!.name} stored transposed (v_trans 1), which llama.cpp does not write`);
      const elBytes = u32(`layer ${l} V el_bytes`);
      if (elBytes !== vt!.blockBytes) throw layoutError(`layer ${l} V el_bytes ${elBytes} does not match the ${vt!.name} element size ${vt!.blockBytes}`);
      const vDim = u32(`layer ${l} V kv_dim`);
      if (vDim !== kvDim) throw layoutError(`layer ${l} V kv_dim ${vDim} differs from K kv_dim ${kvDim} (K and V must have the same width)`);
    }
    const size = cellCount * vRowBytes;
    vRaw.push(r.view(size, `layer ${l} V data (${cellCount} x ${kvDim} values)`));
  }
  if (r.left !== 0) {
    throw layoutError(`${r.left} trailing bytes after the KV data at offset ${r.offset} (file is ${len} bytes; multi-cache states such as iSWA are not supported)`);
  }

  // One plain type for K and V: the cache keeps the file's bits. Otherwise float32 values.
  const plain = kt!.id === vt!.id && !kt!.quantized;
  const dtype: DType = plain ? kt!.dtype : 'f32';
  const layout: KvLayout = { layers: nLayer, kvHeads: heads.kvHeads, headDim: heads.headDim, dtype };
  if (rope !== undefined) layout.rope = rope;
  validateLayout(layout, 'llama sequence state layout');

  const count = cellCount * kvDim;
  const keys = kRaw.map((raw) => decodeStream(raw, kt!, dtype, count, 0, kvDim));
  const values = vRaw.map((raw) => decodeStream(raw, vt!, dtype, count, vTrans, kvDim));
  const cache: KvCache = { layout, tokens: cellCount, positions: pos.slice(), keys, values };
  return { version, tokens, cells: { pos, seqIdStart, seqIds }, vTrans, kvDim, kType: kt!.id, vType: vt!.id, cache };
}

/**
 * Writes a sequence state back in llama.cpp's format (version 3, one stream). For a state from
 * `parseSequenceState` the output is byte-identical to the parsed file. `state.cache` may be
 * replaced by another cache of the same token count and row width (e.g. a decoded one); its
 * dtype decides the ggml type and row sizes written. Cell metadata and header tokens come from
 * `state`; when the cache carries positions they must equal the cells' positions.
 *
 * A cache with 0 tokens is written as llama.cpp writes an empty stream (cell_count 0 and
 * nothing after it); `parseSequenceState` refuses such files since they carry no layout.
 *
 * @throws KvtcError E_LAYOUT when the cache is invalid or does not match the cells / kvDim.
 */
export function writeSequenceState(state: LlamaSequenceState): Uint8Array {
  if (typeof state !== 'object' || state === null) throw layoutError(`state must be an object, got ${String(state)}`);
  if (state.version !== LLAMA_STATE_SEQ_VERSION) {
    throw layoutError(`unsupported version ${String(state.version)}, only version ${LLAMA_STATE_SEQ_VERSION} can be written`);
  }
  if (state.vTrans !== 0 && state.vTrans !== 1) throw layoutError(`vTrans must be 0 or 1, got ${String(state.vTrans)}`);
  if (!(state.tokens instanceof Int32Array)) throw layoutError('tokens must be an Int32Array');
  const cache = validateCache(state.cache, 'state.cache');
  const { layout } = cache;
  const kvDim = rowValues(layout);
  if (state.kvDim !== kvDim) {
    throw layoutError(`state.kvDim ${String(state.kvDim)} does not match the cache's kvHeads x headDim = ${kvDim}`);
  }
  const n = cache.tokens;
  const { pos, seqIdStart, seqIds } = state.cells ?? ({} as Partial<LlamaSequenceCells>);
  if (!(pos instanceof Int32Array) || !(seqIdStart instanceof Uint32Array) || !(seqIds instanceof Int32Array)) {
    throw layoutError('cells must hold pos (Int32Array), seqIdStart (Uint32Array) and seqIds (Int32Array)');
  }
  if (pos.length !== n || seqIdStart.length !== n + 1) {
    throw layoutError(`cells describe ${pos.length} cells (seqIdStart has ${seqIdStart.length} entries) but the cache holds ${n} tokens`);
  }
  if (seqIdStart[0] !== 0 || seqIdStart[n] !== seqIds.length) {
    throw layoutError(`cells.seqIdStart must run from 0 to seqIds.length ${seqIds.length}, got ${seqIdStart[0]}..${seqIdStart[n]}`);
  }
  for (let i = 0; i < n; i++) {
    if (seqIdStart[i + 1]! < seqIdStart[i]!) throw layoutError(`cells.seqIdStart decreases at cell ${i}`);
  }
  if (cache.positions !== undefined) {
    for (let i = 0; i < n; i++) {
      if (cache.positions[i] !== pos[i]) {
        throw layoutError(`cache.positions[${i}] = ${cache.positions[i]} differs from the cell position ${pos[i]}`);
      }
    }
  }

  const kt = writeType(state.kType, layout.dtype, 'kType', kvDim);
  const vt = writeType(state.vType, layout.dtype, 'vType', kvDim);
  if (state.vTrans && vt.quantized) throw layoutError(`V of type ${vt.name} cannot be written transposed (v_trans 1)`);
  const kRowBytes = rowBytesOf(kt, kvDim);
  const vRowBytes = rowBytesOf(vt, kvDim);
  const layers = layout.layers;
  const nTokens = state.tokens.length;
  let size = 12 + 4 * nTokens + 8; // magic, version, n_tokens, tokens, n_stream, cell_count
  if (n > 0) size += 8 * n + 4 * seqIds.length + 8 + layers * (24 + n * (kRowBytes + vRowBytes));

  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let off = 0;
  const putU32 = (v: number): void => {
    dv.setUint32(off, v, true);
    off += 4;
  };
  putU32(LLAMA_STATE_SEQ_MAGIC);
  putU32(LLAMA_STATE_SEQ_VERSION);
  putU32(nTokens);
  writeElems(out, off, state.tokens);
  off += 4 * nTokens;
  putU32(1); // n_stream
  putU32(n);
  if (n > 0) {
    for (let i = 0; i < n; i++) {
      dv.setInt32(off, pos[i]!, true);
      const a = seqIdStart[i]!;
      const b = seqIdStart[i + 1]!;
      dv.setUint32(off + 4, b - a, true);
      off += 8;
      for (let j = a; j < b; j++, off += 4) dv.setInt32(off, seqIds[j]!, true);
    }
    putU32(state.vTrans);
    putU32(layers);
    for (let l = 0; l < layers; l++) {
      dv.setInt32(off, kt.id, true);
      dv.setBigUint64(off + 4, BigInt(kRowBytes), true);
      off += 12;
      encodeStream(cache.keys[l]!, layout.dtype, kt, 0, n, kvDim, out, off);
      off += n * kRowBytes;
    }
    for (let l = 0; l < layers; l++) {
      dv.setInt32(off, vt.id, true);
      if (state.vTrans) {
        dv.setUint32(off + 4, vt.blockBytes, true);
        dv.setUint32(off + 8, kvDim, true);
      } else {
        dv.setBigUint64(off + 4, BigInt(vRowBytes), true);
      }
      off += 12;
      encodeStream(cache.values[l]!, layout.dtype, vt, state.vTrans, n, kvDim, out, off);
      off += n * vRowBytes;
    }
  }
  if (off !== size) throw new KvtcError('E_INTERNAL', `llama sequence state writer: wrote ${off} bytes, expected ${size}`);
  return out;
}
