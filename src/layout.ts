import { KvtcError } from './errors.js';

/** Element type of a cache. f16/bf16 values travel as their raw 16-bit patterns in Uint16Arrays. */
export type DType = 'f32' | 'f16' | 'bf16';

/**
 * Rotary position embedding applied to the keys. kvtc removes it before the transform (keys are
 * far more compressible without the position-dependent rotation) and re-applies it after decoding.
 */
export interface RopeSpec {
  /** Base of the inverse frequencies: freq_i = theta^(-2i/dims). */
  theta: number;
  /** Rotated dimensions per head (partial rotary); default: headDim. Must be even. */
  dims?: number;
  /** 'interleaved': pairs (2i, 2i+1) (llama.cpp normal mode, llama2.c); 'neox': pairs (i, i+dims/2). */
  style: 'interleaved' | 'neox';
  /** Explicit inverse frequencies (dims/2 of them), e.g. for scaled RoPE; overrides theta. */
  freqs?: Float32Array;
}

/** Shape of one model's KV cache. */
export interface KvLayout {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: DType;
  rope?: RopeSpec;
}

/** One sequence's KV cache: per layer, token-major arrays of shape [tokens][kvHeads][headDim]. */
export interface KvCache {
  layout: KvLayout;
  tokens: number;
  /** Absolute positions of the tokens (used to undo RoPE); default 0..tokens-1. */
  positions?: Int32Array;
  /** One per layer: Float32Array for f32, Uint16Array (raw bits) for f16/bf16. */
  keys: ArrayBufferView[];
  values: ArrayBufferView[];
}

export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16'];

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: DType): number {
  return dtype === 'f32' ? 4 : 2;
}

/** Values per token per layer per stream (K or V). */
export function rowValues(layout: KvLayout): number {
  return layout.kvHeads * layout.headDim;
}

/** Bytes of the raw cache (keys and values, every layer) in its own dtype. */
export function cacheBytes(layout: KvLayout, tokens: number): number {
  return 2 * layout.layers * tokens * rowValues(layout) * dtypeBytes(layout.dtype);
}

const MAX_DIM = 1 << 16;

function positiveInt(v: unknown, field: string, max = MAX_DIM): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > max) {
    throw new KvtcError('E_LAYOUT', `${field} must be an integer in 1..${max}, got ${String(v)}`);
  }
  return v;
}

/** Throws E_LAYOUT naming the first bad field; returns the layout unchanged when it is valid. */
export function validateLayout(layout: unknown, field = 'layout'): KvLayout {
  if (typeof layout !== 'object' || layout === null) {
    throw new KvtcError('E_LAYOUT', `${field} must be an object, got ${String(layout)}`);
  }
  const l = layout as Partial<KvLayout>;
  positiveInt(l.layers, `${field}.layers`, 4096);
  positiveInt(l.kvHeads, `${field}.kvHeads`, 4096);
  positiveInt(l.headDim, `${field}.headDim`, 8192);
  if (!DTYPES.includes(l.dtype as DType)) {
    throw new KvtcError('E_LAYOUT', `${field}.dtype must be one of ${DTYPES.join(', ')}, got ${String(l.dtype)}`);
  }
  if (l.rope !== undefined) validateRope(l.rope, l.headDim as number, `${field}.rope`);
  return l as KvLayout;
}

function validateRope(rope: RopeSpec, headDim: number, field: string): void {
  if (typeof rope !== 'object' || rope === null) {
    throw new KvtcError('E_LAYOUT', `${field} must be an object, got ${String(rope)}`);
  }
  if (rope.style !== 'interleaved' && rope.style !== 'neox') {
    throw new KvtcError('E_LAYOUT', `${field}.style must be 'interleaved' or 'neox', got ${String(rope.style)}`);
  }
  const dims = rope.dims ?? headDim;
  if (!Number.isInteger(dims) || dims <= 0 || dims > headDim || dims % 2 !== 0) {
    throw new KvtcError('E_LAYOUT', `${field}.dims must be an even integer in 2..${headDim}, got ${String(rope.dims)}`);
  }
  if (rope.freqs !== undefined) {
    if (!(rope.freqs instanceof Float32Array) || rope.freqs.byteLength !== 2 * dims) {
      throw new KvtcError('E_LAYOUT', `${field}.freqs must be a Float32Array of ${dims / 2} values`);
    }
    if (!rope.freqs.every(Number.isFinite)) throw new KvtcError('E_LAYOUT', `${field}.freqs must be finite`);
  } else if (typeof rope.theta !== 'number' || !Number.isFinite(rope.theta) || rope.theta <= 1) {
    throw new KvtcError('E_LAYOUT', `${field}.theta must be a finite number > 1, got ${String(rope.theta)}`);
  }
}

/** The inverse frequencies a RoPE spec stands for (dims/2 values). */
export function ropeFreqs(rope: RopeSpec, headDim: number): Float32Array {
  const dims = rope.dims ?? headDim;
  if (rope.freqs) return rope.freqs;
  const out = new Float32Array(dims / 2);
  for (let i = 0; i < dims / 2; i++) out[i] = Math.pow(rope.theta, (-2 * i) / dims);
  return out;
}

/** True when two layouts describe the same model shape (dtype may differ). */
export function sameShape(a: KvLayout, b: KvLayout): boolean {
  const ra = a.rope;
  const rb = b.rope;
  if (a.layers !== b.layers || a.kvHeads !== b.kvHeads || a.headDim !== b.headDim) return false;
  if (!ra || !rb) return !ra && !rb;
  if (ra.style !== rb.style || (ra.dims ?? a.headDim) !== (rb.dims ?? b.headDim)) return false;
  const fa = ropeFreqs(ra, a.headDim);
  const fb = ropeFreqs(rb, b.headDim);
  return fa.every((v, i) => Math.abs(v - fb[i]!) <= 1e-6 * Math.max(1, Math.abs(v)));
}

/**
 * Checks that a cache is what its layout says: per-layer arrays of the right type and length,
 * positions matching the token count. Throws E_LAYOUT naming the field.
 */
export function validateCache(cache: unknown, field = 'cache'): KvCache {
  if (typeof cache !== 'object' || cache === null) {
    throw new KvtcError('E_LAYOUT', `${field} must be an object, got ${String(cache)}`);
  }
  const c = cache as Partial<KvCache>;
  const layout = validateLayout(c.layout, `${field}.layout`);
  if (typeof c.tokens !== 'number' || !Number.isInteger(c.tokens) || c.tokens < 0 || c.tokens > 0x7fffffff) {
    throw new KvtcError('E_LAYOUT', `${field}.tokens must be a non-negative integer, got ${String(c.tokens)}`);
  }
  const n = c.tokens;
  const want = n * rowValues(layout);
  const ctor = layout.dtype === 'f32' ? Float32Array : Uint16Array;
  for (const stream of ['keys', 'values'] as const) {
    const arrs = c[stream];
    if (!Array.isArray(arrs) || arrs.length !== layout.layers) {
      throw new KvtcError('E_LAYOUT', `${field}.${stream} must be an array of ${layout.layers} per-layer arrays, got ${Array.isArray(arrs) ? arrs.length : String(arrs)}`);
    }
    arrs.forEach((a, i) => {
      if (!(a instanceof ctor)) {
        throw new KvtcError('E_LAYOUT', `${field}.${stream}[${i}] must be a ${ctor.name} for dtype ${layout.dtype}, got ${a?.constructor?.name ?? String(a)}`);
      }
      // By bytes, as the native side reads it: a typed array's `length` can be redefined.
      const count = a.byteLength / ctor.BYTES_PER_ELEMENT;
      if (count !== want) {
        throw new KvtcError('E_LAYOUT', `${field}.${stream}[${i}] must hold tokens*kvHeads*headDim = ${want} values, got ${count}`);
      }
    });
  }
  if (c.positions !== undefined) {
    if (!(c.positions instanceof Int32Array) || c.positions.byteLength !== 4 * n) {
      throw new KvtcError('E_LAYOUT', `${field}.positions must be an Int32Array of ${n} values (one per token), got ${c.positions instanceof Int32Array ? c.positions.byteLength / 4 : String(c.positions)}`);
    }
  }
  return c as KvCache;
}
