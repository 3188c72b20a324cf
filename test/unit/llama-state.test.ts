import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSequenceState, writeSequenceState } from '../../src/adapters/llama-cpp/state.js';
import type { LlamaSequenceState, LlamaStateShape } from '../../src/adapters/llama-cpp/state.js';
import { KvtcError } from '../../src/errors.js';
import { validateCache } from '../../src/layout.js';
import type { KvCache, RopeSpec } from '../../src/layout.js';
import { disposeModel, loadPrompts, realStates, STORIES_LAYOUT } from '../helpers/real-kv.js';
import type { RealState } from '../helpers/real-kv.js';

const ROPE: RopeSpec = { theta: 10000, style: 'interleaved' };
const SHAPE: LlamaStateShape = { kvHeads: 4, headDim: 8 };
const TOKENS = 200;

/** IEEE half bits to a number (the cache keeps f16 as raw bits). */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return sign * f * 2 ** -24;
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (1 + f / 1024) * 2 ** (e - 15);
}

function asFloats(a: ArrayBufferView): Float64Array {
  if (a instanceof Float32Array) return Float64Array.from(a);
  const u = a as Uint16Array;
  const out = new Float64Array(u.length);
  for (let i = 0; i < u.length; i++) out[i] = halfToFloat(u[i]!);
  return out;
}

function maxAbs(arrs: ArrayBufferView[]): { max: number; finite: boolean } {
  let max = 0;
  let finite = true;
  for (const a of arrs) {
    for (const x of asFloats(a)) {
      if (!Number.isFinite(x)) finite = false;
      else max = Math.max(max, Math.abs(x));
    }
  }
  return { max, finite };
}

function expectLayoutError(fn: () => unknown, message?: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(KvtcError);
  expect((caught as KvtcError).code).toBe('E_LAYOUT');
  if (message) expect((caught as KvtcError).message).toMatch(message);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Byte offsets of the fixed fields of a single-stream file (every cell with one seq id, as in these files). */
function offsets(bytes: Uint8Array, layers = 5): { nStream: number; vTrans: number; kHeader: (l: number) => number; vHeader: (l: number) => number } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const nTokens = dv.getUint32(8, true);
  const nStream = 12 + 4 * nTokens;
  const cells = dv.getUint32(nStream + 4, true);
  const vTrans = nStream + 8 + cells * 12;
  const rowBytes = Number(dv.getBigUint64(vTrans + 8 + 4, true));
  const kHeader = (l: number): number => vTrans + 8 + l * (12 + cells * rowBytes);
  const vHeader = (l: number): number => kHeader(layers) + l * (12 + cells * rowBytes);
  return { nStream, vTrans, kHeader, vHeader };
}

function patched(bytes: Uint8Array, edit: (dv: DataView) => void): Uint8Array {
  const copy = bytes.slice();
  edit(new DataView(copy.buffer));
  return copy;
}

function cloneCache(c: KvCache): KvCache {
  const out: KvCache = {
    layout: { ...c.layout },
    tokens: c.tokens,
    keys: c.keys.map((a) => (a as Float32Array | Uint16Array).slice()),
    values: c.values.map((a) => (a as Float32Array | Uint16Array).slice()),
  };
  if (c.positions) out.positions = c.positions.slice();
  return out;
}

type Config = { cacheType: 'f32' | 'f16'; flashAttention: boolean; vTrans: 0 | 1 };
const CONFIGS: Config[] = [
  { cacheType: 'f32', flashAttention: false, vTrans: 1 },
  { cacheType: 'f32', flashAttention: true, vTrans: 0 },
  { cacheType: 'f16', flashAttention: false, vTrans: 1 },
  { cacheType: 'f16', flashAttention: true, vTrans: 0 },
];
const name = (c: Config): string => `${c.cacheType}, flash attention ${c.flashAttention ? 'on' : 'off'}`;

const states = new Map<string, RealState[]>();
const get = (c: Config): RealState[] => states.get(name(c))!;

beforeAll(async () => {
  const prompts = loadPrompts().slice(0, 3);
  for (const c of CONFIGS) {
    states.set(name(c), await realStates({ prompts, tokens: TOKENS, cacheType: c.cacheType, flashAttention: c.flashAttention }));
  }
}, 120_000);

afterAll(async () => {
  await disposeModel();
});

describe('llama.cpp sequence state: real files from stories260K', () => {
  for (const c of CONFIGS) {
    describe(name(c), () => {
      it(`has v_trans ${c.vTrans}, and parse -> write is byte-identical`, () => {
        for (const { bytes, state } of get(c)) {
          expect(state.vTrans).toBe(c.vTrans);
          expect(state.version).toBe(3);
          expect(sameBytes(writeSequenceState(state), bytes)).toBe(true);
          // Parsing must not depend on the buffer starting at offset 0 of its ArrayBuffer.
          const shifted = new Uint8Array(bytes.length + 3);
          shifted.set(bytes, 3);
          const again = parseSequenceState(shifted.subarray(3), ROPE, SHAPE);
          expect(sameBytes(writeSequenceState(again), bytes)).toBe(true);
        }
      });

      it('gives a valid cache of the right shape', () => {
        for (const { state } of get(c)) {
          const cache = validateCache(state.cache);
          expect(cache.layout).toEqual({ ...STORIES_LAYOUT, dtype: c.cacheType });
          expect(state.kvDim).toBe(32);
          expect(cache.tokens).toBe(TOKENS);
          expect(state.cells.pos.length).toBe(TOKENS);
          expect(Array.from(cache.positions!)).toEqual(Array.from({ length: TOKENS }, (_, i) => i));
          expect(Array.from(state.cells.seqIds)).toEqual(new Array(TOKENS).fill(0));
          expect(Array.from(state.cells.seqIdStart)).toEqual(Array.from({ length: TOKENS + 1 }, (_, i) => i));
          // The header tokens start with BOS (1) and hold one id per evaluated token here.
          expect(state.tokens[0]).toBe(1);
          expect(state.tokens.length).toBe(TOKENS);
          expect(cache.keys[0]).toBeInstanceOf(c.cacheType === 'f32' ? Float32Array : Uint16Array);
        }
      });

      it('holds finite K and V in the documented ranges', () => {
        const k = maxAbs(get(c).flatMap((s) => s.state.cache.keys));
        const v = maxAbs(get(c).flatMap((s) => s.state.cache.values));
        expect(k.finite).toBe(true);
        expect(v.finite).toBe(true);
        expect(k.max).toBeGreaterThan(5);
        expect(k.max).toBeLessThan(40);
        expect(v.max).toBeGreaterThan(0.5);
        expect(v.max).toBeLessThan(6);
      });
    });
  }

  it('reads transposed V (v_trans 1) in the same token-major order as v_trans 0', () => {
    // Same prompt and greedy tokens; the two runs differ only by flash-attention rounding.
    for (const cacheType of ['f32', 'f16'] as const) {
      const a = get({ cacheType, flashAttention: false, vTrans: 1 });
      const b = get({ cacheType, flashAttention: true, vTrans: 0 });
      for (let p = 0; p < a.length; p++) {
        const sa = a[p]!.state;
        const sb = b[p]!.state;
        // Greedy decoding can pick another token once rounding tips a near-tie; cell i depends
        // only on tokens 0..i, so compare the cells before the first divergence.
        let same = 0;
        while (same < TOKENS && sa.tokens[same] === sb.tokens[same]) same++;
        expect(same).toBeGreaterThanOrEqual(16);
        for (let l = 0; l < 5; l++) {
          for (const stream of ['keys', 'values'] as const) {
            const x = asFloats(sa.cache[stream][l]!);
            const y = asFloats(sb.cache[stream][l]!);
            let worst = 0;
            for (let i = 0; i < same * 32; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!) / (1 + Math.abs(x[i]!)));
            expect(worst, `${cacheType} layer ${l} ${stream}`).toBeLessThan(0.02);
          }
        }
      }
    }
  });

  it('F16 caches hold the F32 values up to half-precision rounding', () => {
    const a = get(CONFIGS[0]!);
    const b = get(CONFIGS[2]!);
    const sa = a[0]!.state;
    const sb = b[0]!.state;
    // Compare the prompt part only: sampled continuations may diverge after rounding.
    const n = 8 * 32;
    for (let l = 0; l < 5; l++) {
      const x = asFloats(sa.cache.keys[l]!);
      const y = asFloats(sb.cache.keys[l]!);
      for (let i = 0; i < n; i++) expect(Math.abs(x[i]! - y[i]!)).toBeLessThan(0.05 + 0.01 * Math.abs(x[i]!));
    }
  });

  it('writes a replaced cache of the same layout (values round-trip through the file)', () => {
    for (const c of [CONFIGS[0]!, CONFIGS[1]!, CONFIGS[2]!]) {
      const { state } = get(c)[0]!;
      const cache = cloneCache(state.cache);
      // Write distinct recognisable bit patterns so a misplaced element cannot go unnoticed.
      for (let l = 0; l < 5; l++) {
        const k = cache.keys[l] as Float32Array | Uint16Array;
        const v = cache.values[l] as Float32Array | Uint16Array;
        for (let i = 0; i < k.length; i++) {
          k[i] = c.cacheType === 'f32' ? l * 1e5 + i : (l * 1000 + i) & 0x7bff;
          v[i] = c.cacheType === 'f32' ? -(l * 1e5 + i) : (l * 777 + i * 3) & 0x7bff;
        }
      }
      const replaced: LlamaSequenceState = { ...state, cache };
      const bytes = writeSequenceState(replaced);
      expect(bytes.length).toBe(get(c)[0]!.bytes.length);
      const back = parseSequenceState(bytes, ROPE, SHAPE);
      expect(back.vTrans).toBe(state.vTrans);
      for (let l = 0; l < 5; l++) {
        expect(back.cache.keys[l]).toBeInstanceOf(cache.keys[l]!.constructor);
        expect(sameBytes(bytesOf(back.cache.keys[l]!), bytesOf(cache.keys[l]!)), `layer ${l} keys`).toBe(true);
        expect(sameBytes(bytesOf(back.cache.values[l]!), bytesOf(cache.values[l]!)), `layer ${l} values`).toBe(true);
      }
      // A cache without positions is written with the cells' positions.
      const { positions: _unused, ...noPositions } = cache;
      const noPos = writeSequenceState({ ...state, cache: noPositions });
      expect(sameBytes(noPos, bytes)).toBe(true);
    }
  });

  it('refuses to write a cache that does not match the cells', () => {
    const { state } = get(CONFIGS[0]!)[0]!;
    const short = cloneCache(state.cache);
    short.tokens = TOKENS - 1;
    short.positions = short.positions!.subarray(0, TOKENS - 1);
    short.keys = short.keys.map((a) => (a as Float32Array).subarray(0, (TOKENS - 1) * 32));
    short.values = short.values.map((a) => (a as Float32Array).subarray(0, (TOKENS - 1) * 32));
    expectLayoutError(() => writeSequenceState({ ...state, cache: short }), /cells/);

    const moved = cloneCache(state.cache);
    moved.positions![5] = 99;
    expectLayoutError(() => writeSequenceState({ ...state, cache: moved }), /positions\[5\]/);

    const wide = cloneCache(state.cache);
    wide.layout = { ...wide.layout, kvHeads: 2, headDim: 16 };
    // Same kvDim, other split: still 32 values per row, so it is writable.
    expect(sameBytes(writeSequenceState({ ...state, cache: wide }), get(CONFIGS[0]!)[0]!.bytes)).toBe(true);
    expectLayoutError(() => writeSequenceState({ ...state, kvDim: 64 }), /kvDim/);
    expectLayoutError(() => writeSequenceState({ ...state, cache: { ...state.cache, keys: state.cache.keys.slice(1) } }), /keys/);
  });
});

describe('llama.cpp sequence state: malformed files', () => {
  const f32 = (): Uint8Array => get(CONFIGS[0]!)[0]!.bytes;
  const f32nt = (): Uint8Array => get(CONFIGS[1]!)[0]!.bytes;

  it('refuses a bad magic', () => {
    expectLayoutError(() => parseSequenceState(patched(f32(), (dv) => dv.setUint32(0, 0x67676a74, true))), /magic 0x67676a74/);
  });

  it('refuses version 2', () => {
    expectLayoutError(() => parseSequenceState(patched(f32(), (dv) => dv.setUint32(4, 2, true))), /version 2/);
  });

  it('refuses n_stream 2', () => {
    const b = f32();
    const o = offsets(b);
    expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setUint32(o.nStream, 2, true))), /n_stream is 2/);
  });

  it('refuses a bad v_trans', () => {
    const b = f32();
    const o = offsets(b);
    expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setUint32(o.vTrans, 2, true))), /v_trans must be 0 or 1, got 2/);
  });

  it('refuses unknown ggml types in K and V', () => {
    for (const b of [f32(), f32nt()]) {
      const o = offsets(b);
      // Types it does not handle are named; handled types whose rows do not fit are refused too.
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setInt32(o.kHeader(0), 3, true))), /unsupported ggml type Q4_1/);
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setInt32(o.kHeader(0), 99, true))), /unsupported ggml type #99/);
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setInt32(o.vHeader(0), 6, true))), /layer 0 V has unsupported ggml type Q5_0/);
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setInt32(o.kHeader(0), 2, true))), /row_bytes 128 is not a positive multiple of the Q4_0 block size 18/);
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setInt32(o.vHeader(3), 8, true))), /layer 3 V type Q8_0 differs from layer 0 V type F32/);
    }
  });

  it('refuses mixed types and row sizes', () => {
    for (const b of [f32(), f32nt()]) {
      const o = offsets(b);
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setInt32(o.kHeader(2), 1, true))), /layer 2 K type F16 differs from layer 0 K type F32/);
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setInt32(o.vHeader(1), 1, true))), /layer 1 V type F16 differs from layer 0 V type F32/);
      expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setBigUint64(o.kHeader(1) + 4, 64n, true))), /row_bytes 64 differs/);
    }
    const t = f32();
    const ot = offsets(t);
    expectLayoutError(() => parseSequenceState(patched(t, (dv) => dv.setUint32(ot.vHeader(0) + 8, 16, true))), /V kv_dim 16 differs from K kv_dim 32/);
    expectLayoutError(() => parseSequenceState(patched(t, (dv) => dv.setUint32(ot.vHeader(0) + 4, 2, true))), /el_bytes 2/);
    // A V of another plain type is read (K q8_0 with V f16 is common), but its rows must fit.
    expectLayoutError(() => parseSequenceState(patched(t, (dv) => dv.setInt32(ot.vHeader(0), 1, true))), /layer 0 V el_bytes 4 does not match the F16 element size 2/);
    const n = f32nt();
    const on = offsets(n);
    expectLayoutError(() => parseSequenceState(patched(n, (dv) => dv.setBigUint64(on.vHeader(4) + 4, 256n, true))), /V row_bytes 256 differs/);
  });

  it('refuses truncated files at every structural point', () => {
    for (const b of [f32(), f32nt(), get(CONFIGS[2]!)[0]!.bytes]) {
      const o = offsets(b);
      const cuts = [0, 2, 4, 7, 11, 12, 20, o.nStream, o.nStream + 2, o.nStream + 4, o.nStream + 8, o.nStream + 13, o.vTrans,
        o.vTrans + 6, o.kHeader(0) + 3, o.kHeader(0) + 12, o.kHeader(0) + 100, o.kHeader(3), o.vHeader(0) + 4,
        o.vHeader(0) + 11, o.vHeader(2) + 500, b.length - 1];
      for (const cut of cuts) expectLayoutError(() => parseSequenceState(b.subarray(0, cut)), /truncated/);
    }
  });

  it('refuses trailing bytes', () => {
    const b = f32();
    const longer = new Uint8Array(b.length + 4);
    longer.set(b);
    expectLayoutError(() => parseSequenceState(longer), /4 trailing bytes/);
  });

  it('refuses absurd counts without trying to allocate for them', () => {
    const b = f32();
    const o = offsets(b);
    expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setUint32(8, 0xffffffff, true))), /truncated/);
    expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setUint32(o.nStream + 4, 0xffffffff, true))), /truncated/);
    expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setUint32(o.vTrans + 4, 0xffffffff, true))), /truncated/);
    expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setBigUint64(o.kHeader(0) + 4, 1n << 60n, true))), /row_bytes/);
    expectLayoutError(() => parseSequenceState(patched(b, (dv) => dv.setUint32(o.nStream + 4, 0, true))), /cell_count is 0/);
  });

  it('refuses shapes that do not split kv_dim', () => {
    const b = f32();
    expectLayoutError(() => parseSequenceState(b, ROPE, { kvHeads: 3 }), /kv_dim 32 is not divisible by shape.kvHeads 3/);
    expectLayoutError(() => parseSequenceState(b, ROPE, { headDim: 5 }), /kv_dim 32 is not divisible by shape.headDim 5/);
    expectLayoutError(() => parseSequenceState(b, ROPE, { kvHeads: 0, headDim: 8 }), /kvHeads must be a positive integer/);
    // The model's shape mismatched: 8 heads of 8 would be 64 values per row, the file has 32.
    expectLayoutError(() => parseSequenceState(b, ROPE, { kvHeads: 8, headDim: 8 }), /8 x headDim 8 = 64 does not match the file's kv_dim 32/);
    // A RoPE spec that does not fit the head is refused by the layout check.
    expectLayoutError(() => parseSequenceState(b, { theta: 10000, style: 'interleaved', dims: 16 }, SHAPE), /rope\.dims/);
  });

  it('derives the split from one of kvHeads / headDim, or reads one head by default', () => {
    const b = f32();
    expect(parseSequenceState(b, ROPE, { kvHeads: 4 }).cache.layout).toMatchObject({ kvHeads: 4, headDim: 8 });
    expect(parseSequenceState(b, ROPE, { headDim: 8 }).cache.layout).toMatchObject({ kvHeads: 4, headDim: 8 });
    const plain = parseSequenceState(b);
    expect(plain.cache.layout).toEqual({ layers: 5, kvHeads: 1, headDim: 32, dtype: 'f32' });
    expect(sameBytes(writeSequenceState(plain), b)).toBe(true);
  });
});
