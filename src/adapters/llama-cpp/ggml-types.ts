/**
 * The ggml element types a llama.cpp KV cache can hold (`--cache-type-k/v`) and how a row of
 * each decodes to float32 and encodes back. Plain types (F32, F16, BF16) map onto kvtc dtypes
 * bit for bit; the block-quantized ones (Q8_0, Q4_0) are decoded to float32 for kvtc and
 * re-quantized with ggml's reference rounding when a state is written.
 *
 * Block formats (32 values per block, little-endian):
 *   Q8_0: f16 scale d, 32 x int8 q            value = q * d                   (34 bytes)
 *   Q4_0: f16 scale d, 16 bytes of nibbles     value j    = ((qs[j] & 15) - 8) * d,
 *                                              value j+16 = ((qs[j] >> 4) - 8) * d   (18 bytes)
 *
 * Re-quantizing values decoded from such a block reproduces the block exactly (its scale is the
 * extreme value over 127, resp. -8, so the same scale and codes come back); values changed by
 * lossy coding gain extra error when re-quantized: Q8_0 at most half a step (amax / 254 of the
 * block, plus the f16 rounding of the scale), Q4_0 half a step (amax / 16), except values of the
 * other sign than the block's extreme, which clamp at code 15: up to a full step (amax / 8).
 */
import { KvtcError } from '../../errors.js';
import { f16BitsToF32, f32ToF16Bits } from '../../half.js';
import type { DType } from '../../layout.js';

export const GGML_TYPE_F32 = 0;
export const GGML_TYPE_F16 = 1;
export const GGML_TYPE_Q4_0 = 2;
export const GGML_TYPE_Q8_0 = 8;
export const GGML_TYPE_BF16 = 30;

/** Names of ggml types (ggml.h `enum ggml_type`), for messages naming what is refused. */
const NAMES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1',
  10: 'Q2_K', 11: 'Q3_K', 12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 20: 'IQ4_NL',
  24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64', 30: 'BF16',
};

export function ggmlTypeName(type: number): string {
  return NAMES[type] ?? `#${type}`;
}

/** A KV element type this adapter reads and writes. */
export interface KvElementType {
  id: number;
  name: string;
  /** The kvtc dtype holding the decoded values: the same type for plain ones, f32 for quantized. */
  dtype: DType;
  /** Values per block (1 for plain types) and bytes per block. */
  blockValues: number;
  blockBytes: number;
  quantized: boolean;
}

const TYPES: Record<number, KvElementType> = {
  [GGML_TYPE_F32]: { id: GGML_TYPE_F32, name: 'F32', dtype: 'f32', blockValues: 1, blockBytes: 4, quantized: false },
  [GGML_TYPE_F16]: { id: GGML_TYPE_F16, name: 'F16', dtype: 'f16', blockValues: 1, blockBytes: 2, quantized: false },
  [GGML_TYPE_BF16]: { id: GGML_TYPE_BF16, name: 'BF16', dtype: 'bf16', blockValues: 1, blockBytes: 2, quantized: false },
  [GGML_TYPE_Q8_0]: { id: GGML_TYPE_Q8_0, name: 'Q8_0', dtype: 'f32', blockValues: 32, blockBytes: 34, quantized: true },
  [GGML_TYPE_Q4_0]: { id: GGML_TYPE_Q4_0, name: 'Q4_0', dtype: 'f32', blockValues: 32, blockBytes: 18, quantized: true },
};

/** The element type with this ggml id, or undefined when the adapter does not handle it. */
export function kvElementType(id: number): KvElementType | undefined {
  return TYPES[id];
}

/** The plain ggml type of a kvtc dtype. */
export function ggmlTypeOfDtype(dtype: DType): number {
  return dtype === 'f32' ? GGML_TYPE_F32 : dtype === 'f16' ? GGML_TYPE_F16 : GGML_TYPE_BF16;
}

export const SUPPORTED_KV_TYPES = 'F32, F16, BF16, Q8_0, Q4_0';

/** Bytes of a row of `values` values of type `t` (values must be a whole number of blocks). */
export function rowBytesOf(t: KvElementType, values: number): number {
  return (values / t.blockValues) * t.blockBytes;
}

/** ggml's roundf: halves away from zero. */
function roundAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/**
 * Decodes `out.length` values (whole blocks) of quantized type `t` from `bytes[off..]`.
 * @param out destination, float32 values.
 */
export function dequantize(t: KvElementType, bytes: Uint8Array, off: number, out: Float32Array): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const blocks = out.length / 32;
  if (t.id === GGML_TYPE_Q8_0) {
    for (let b = 0, p = off; b < blocks; b++, p += 34) {
      const d = f16BitsToF32(dv.getUint16(p, true));
      for (let j = 0; j < 32; j++) out[b * 32 + j] = dv.getInt8(p + 2 + j) * d;
    }
  } else if (t.id === GGML_TYPE_Q4_0) {
    for (let b = 0, p = off; b < blocks; b++, p += 18) {
      const d = f16BitsToF32(dv.getUint16(p, true));
      for (let j = 0; j < 16; j++) {
        const q = bytes[p + 2 + j]!;
        out[b * 32 + j] = ((q & 15) - 8) * d;
        out[b * 32 + j + 16] = ((q >> 4) - 8) * d;
      }
    }
  } else {
    throw new KvtcError('E_INTERNAL', `dequantize: ${t.name} is not a quantized type`);
  }
}

/**
 * Encodes `src.length` values (whole blocks) as quantized type `t` into `bytes[off..]`, with
 * ggml's reference rounding (float32 arithmetic, f16 scales rounded to nearest even).
 */
export function quantize(t: KvElementType, src: Float32Array, bytes: Uint8Array, off: number): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const f = Math.fround;
  const blocks = src.length / 32;
  if (t.id === GGML_TYPE_Q8_0) {
    for (let b = 0, p = off; b < blocks; b++, p += 34) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(src[b * 32 + j]!));
      const d = f(amax / 127);
      const id = d !== 0 ? f(1 / d) : 0;
      dv.setUint16(p, f32ToF16Bits(d), true);
      for (let j = 0; j < 32; j++) dv.setInt8(p + 2 + j, Math.max(-128, Math.min(127, roundAway(f(src[b * 32 + j]! * id)))));
    }
  } else if (t.id === GGML_TYPE_Q4_0) {
    for (let b = 0, p = off; b < blocks; b++, p += 18) {
      // The scale is the signed value of largest magnitude over -8, so that value codes as 0.
      let amax = 0;
      let max = 0;
      for (let j = 0; j < 32; j++) {
        const v = src[b * 32 + j]!;
        if (amax < Math.abs(v)) {
          amax = Math.abs(v);
          max = v;
        }
      }
      const d = f(max / -8);
      const id = d !== 0 ? f(1 / d) : 0;
      dv.setUint16(p, f32ToF16Bits(d), true);
      const code = (v: number): number => Math.min(15, Math.trunc(f(f(v * id) + 8.5)));
      for (let j = 0; j < 16; j++) bytes[p + 2 + j] = code(src[b * 32 + j]!) | (code(src[b * 32 + j + 16]!) << 4);
    }
  } else {
    throw new KvtcError('E_INTERNAL', `quantize: ${t.name} is not a quantized type`);
  }
}
