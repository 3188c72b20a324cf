import { beforeAll, describe, expect, it } from 'vitest';
import { calibrate, decode, encode, type CodecProfile, type DType, type KvCache, type KvLayout } from '../../src/index.js';
import { rowValues } from '../../src/layout.js';
import { syntheticCache, withDtype } from '../helpers/synthetic.js';

// decode(blob, profile, { into }): the engine's own buffers, reused, instead of a new cache.
const layout: KvLayout = { layers: 3, kvHeads: 2, headDim: 32, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
let profile: CodecProfile;

beforeAll(async () => {
  profile = await calibrate([1, 2, 3].map((s) => syntheticCache({ layout, tokens: 400, seed: s })), { ratio: 8, windowTokens: 16 });
});

/** A cache of `capacity` tokens whose layers are separate arrays, filled with a sentinel. */
function target(dtype: DType, capacity: number, withPositions = true): KvCache {
  const n = capacity * rowValues(layout);
  const arr = () => (dtype === 'f32' ? new Float32Array(n).fill(-7.5) : new Uint16Array(n).fill(0xabcd));
  const c: KvCache = { layout: { ...layout, dtype }, tokens: capacity, keys: [arr(), arr(), arr()], values: [arr(), arr(), arr()] };
  if (withPositions) c.positions = new Int32Array(capacity).fill(-1);
  return c;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('decode into a caller cache', () => {
  for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
    it(`${dtype}: the same bits as a fresh decode, written into the caller's arrays; rows past the blob untouched`, async () => {
      const cache = withDtype(syntheticCache({ layout, tokens: 300, seed: 9, positionStart: 50 }), dtype);
      const blob = await encode(cache, profile);
      const fresh = await decode(blob, profile);
      const into = target(dtype, 420);
      const sentinel = bytesOf(into.keys[2]!).slice(-4);
      const got = await decode(blob, profile, { into });
      expect(got.tokens).toBe(300);
      expect(got.layout.dtype).toBe(dtype);
      for (const s of ['keys', 'values'] as const) {
        for (let l = 0; l < 3; l++) {
          expect(got[s][l]!.buffer).toBe(into[s][l]!.buffer); // views of the caller's memory
          expect(got[s][l]!.byteOffset).toBe(into[s][l]!.byteOffset);
          expect(Buffer.compare(bytesOf(got[s][l]!), bytesOf(fresh[s][l]!))).toBe(0);
        }
      }
      expect(Array.from(got.positions!)).toEqual(Array.from(fresh.positions!));
      expect(got.positions!.buffer).toBe(into.positions!.buffer);
      expect(into.positions![300]).toBe(-1);
      expect(Array.from(bytesOf(into.keys[2]!).slice(-4))).toEqual(Array.from(sentinel));
      // Reused: a second decode into the same arrays gives the same bits again.
      const again = await decode(blob, profile, { into });
      expect(Buffer.compare(bytesOf(again.values[1]!), bytesOf(fresh.values[1]!))).toBe(0);
    });
  }

  it('layers that are views into one shared buffer, at offsets, and no positions array', async () => {
    const cache = syntheticCache({ layout, tokens: 200, seed: 4 });
    const blob = await encode(cache, profile, { threads: 2 });
    const fresh = await decode(blob, profile);
    const n = 200 * rowValues(layout);
    const big = new Float32Array(new SharedArrayBuffer((6 * n + 5) * 4));
    const into: KvCache = {
      layout,
      tokens: 200,
      keys: [0, 1, 2].map((l) => big.subarray(5 + l * n, 5 + (l + 1) * n)),
      values: [3, 4, 5].map((l) => big.subarray(5 + l * n, 5 + (l + 1) * n)),
    };
    const got = await decode(blob, profile, { into, threads: 2 });
    for (let l = 0; l < 3; l++) expect(Buffer.compare(bytesOf(got.keys[l]!), bytesOf(fresh.keys[l]!))).toBe(0);
    expect(Array.from(got.positions!)).toEqual(Array.from(fresh.positions!));
    expect(big[0]).toBe(0); // before the first layer: not written
  });

  it('a target that cannot hold the blob is refused, naming the field, before anything is written', async () => {
    const blob = await encode(withDtype(syntheticCache({ layout, tokens: 100, seed: 5 }), 'f16'), profile);
    const small = target('f16', 99);
    await expect(decode(blob, profile, { into: small })).rejects.toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining('options.into holds 99 tokens') });
    expect((small.keys[0] as Uint16Array)[0]).toBe(0xabcd);
    await expect(decode(blob, profile, { into: target('f32', 100) })).rejects.toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining('dtype f32') });
    const other = { ...target('f16', 100), layout: { ...layout, dtype: 'f16' as const, headDim: 16 } };
    other.keys = other.keys.map((a) => (a as Uint16Array).subarray(0, 100 * 32));
    other.values = other.values.map((a) => (a as Uint16Array).subarray(0, 100 * 32));
    await expect(decode(blob, profile, { into: other })).rejects.toMatchObject({ code: 'E_PROFILE_MISMATCH' });
    const short = target('f16', 100);
    short.values = short.values.slice(0, 2);
    await expect(decode(blob, profile, { into: short })).rejects.toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining('options.into.values') });
    await expect(decode(blob, profile, { into: 'x' as unknown as KvCache })).rejects.toMatchObject({ code: 'E_LAYOUT', message: expect.stringContaining('options.into') });
  });

  it('a damaged blob is E_CORRUPT with a target too', async () => {
    const blob = await encode(syntheticCache({ layout, tokens: 100, seed: 6 }), profile);
    blob[blob.length - 3]! ^= 0x10;
    await expect(decode(blob, profile, { into: target('f32', 100) })).rejects.toMatchObject({ code: 'E_CORRUPT' });
  });
});
