/**
 * The decoder advises the kernel about its output pages before writing them (native/out_pages.cc:
 * huge pages, then one populate call). That advice must never change memory: decoding into
 * views that start and end inside pages of a larger, already written buffer gives the same cache
 * as a plain decode, and every byte outside the views keeps its value.
 */
import { describe, expect, it } from 'vitest';
import { calibrate, decode, encode, type KvLayout } from '../../src/index.js';
import { codecAddon } from '../../src/binding.js';
import { syntheticCache } from '../helpers/synthetic.js';

describe('decode output pages', () => {
  it('decodes into unaligned views of a written buffer, leaving the rest of it unchanged', async () => {
    const layout: KvLayout = { layers: 4, kvHeads: 4, headDim: 64, dtype: 'bf16', rope: { theta: 10000, style: 'neox' } };
    const profile = await calibrate([syntheticCache({ layout, tokens: 600, seed: 3 })], { ratio: 8, windowTokens: 16 });
    // 4 layers x 2600 tokens x 256 values x 2 bytes = 5.3 MB per stream: spans whole 2 MiB pages.
    const blob = await encode(syntheticCache({ layout, tokens: 2600, seed: 4 }), profile);
    const want = await decode(blob, profile);
    const handle = await profile.nativeHandle();
    const prep = await codecAddon.decodePrepare(handle, blob);
    const n = prep.bytesPerStream;
    const pad = 4096 + 123; // the views start mid-page and end mid-page
    const buf = new Uint8Array(2 * n + 3 * pad);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 2654435761) >>> 24;
    const before = buf.slice();
    const keys = buf.subarray(pad, pad + n);
    const values = buf.subarray(2 * pad + n, 2 * pad + 2 * n);
    const positions = new Int32Array(prep.tokens);
    await codecAddon.decodeInto(handle, blob, keys, values, positions, false, 1);
    const stream = (list: ArrayBufferView[]) => Buffer.concat(list.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)));
    expect(Buffer.compare(Buffer.from(keys), stream(want.keys))).toBe(0);
    expect(Buffer.compare(Buffer.from(values), stream(want.values))).toBe(0);
    expect(Array.from(positions)).toEqual(Array.from(want.positions!));
    for (const [a, b] of [[0, pad], [pad + n, 2 * pad + n], [2 * pad + 2 * n, buf.length]] as const) {
      expect(Buffer.compare(Buffer.from(buf.subarray(a, b)), Buffer.from(before.subarray(a, b)))).toBe(0);
    }
  });
});
