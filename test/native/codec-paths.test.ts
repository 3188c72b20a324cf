/**
 * The codec across SIMD paths and thread counts: a blob encoded on one path (KVTC_SIMD, in a
 * fresh process each) decodes on every other within float rounding of that path's own decode;
 * avx2 and avx512 write byte-identical blobs; encode/decode with { threads } give exactly the
 * bytes of threads: 1, escapes included; invalid thread counts are E_OPTIONS.
 */
import '../helpers/f32-decode.js'; // first: this file compares against the FP32 decoder's exact results
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calibrate, decode, encode, inspect, type CodecProfile, type KvCache, type KvLayout } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { mulberry32, syntheticCache } from '../helpers/synthetic.js';

const layout: KvLayout = { layers: 4, kvHeads: 2, headDim: 32, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
const paths = native.internals.simdPaths();
let profile: CodecProfile;
let cache: KvCache;
let dir: string;

function withEscapes(c: KvCache): KvCache {
  const k1 = c.keys[1] as Float32Array;
  const rv = layout.kvHeads * layout.headDim;
  for (let j = 0; j < rv; j++) k1[150 * rv + j] = 1e5; // too large for fp16 shift/scale
  (c.values[2] as Float32Array)[210 * rv + 3] = Number.NaN;
  return c;
}

function flat(c: KvCache): Float32Array {
  const parts = [...c.keys, ...c.values] as Float32Array[];
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

beforeAll(async () => {
  const samples = [0, 1, 2].map((i) => syntheticCache({ layout, tokens: 400, seed: 30 + i }));
  profile = await calibrate(samples, { ratio: 8, windowTokens: 16, pcaGroupLayers: 2 });
  cache = withEscapes(syntheticCache({ layout, tokens: 333, seed: 9, positionStart: 50 }));
  dir = mkdtempSync(join(tmpdir(), 'kvtc-paths-'));
  writeFileSync(join(dir, 'profile.bin'), profile.toBytes());
  writeFileSync(join(dir, 'cache.bin'), flat(cache));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('SIMD paths', () => {
  // One fresh process per path and phase: KVTC_SIMD is read once per process.
  const script = `
    import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
    import { CodecProfile, encode, decode } from './dist/index.js';
    const [dir, phase, path] = process.argv.slice(1);
    const profile = CodecProfile.fromBytes(new Uint8Array(readFileSync(dir + '/profile.bin')));
    const layout = profile.layout;
    const all = new Float32Array(new Uint8Array(readFileSync(dir + '/cache.bin')).slice().buffer);
    const per = all.length / (2 * layout.layers);
    const tokens = per / (layout.kvHeads * layout.headDim);
    const part = (i) => all.slice(i * per, (i + 1) * per);
    const cache = {
      layout: { ...layout, dtype: 'f32' }, tokens, positions: Int32Array.from({ length: tokens }, (_, i) => 50 + i),
      keys: Array.from({ length: layout.layers }, (_, l) => part(l)),
      values: Array.from({ length: layout.layers }, (_, l) => part(layout.layers + l)),
    };
    if (phase === 'encode') {
      writeFileSync(dir + '/blob_' + path + '.bin', await encode(cache, profile, { backend: 'cpu' }));
    } else {
      for (const f of readdirSync(dir).filter((f) => f.startsWith('blob_'))) {
        const d = await decode(new Uint8Array(readFileSync(dir + '/' + f)), profile, { backend: 'cpu' });
        const parts = [...d.keys, ...d.values];
        const out = new Float32Array(all.length);
        parts.forEach((p, i) => out.set(p, i * per));
        writeFileSync(dir + '/dec_' + f.slice(5, -4) + '_on_' + path + '.bin', out);
      }
    }
  `;
  const child = (phase: string, path: string) =>
    execFileSync(process.execPath, ['--input-type=module', '-e', script, dir, phase, path], {
      cwd: new URL('../../', import.meta.url),
      encoding: 'utf8',
      env: { ...process.env, KVTC_SIMD: path },
    });
  const read = (f: string) => new Float32Array(new Uint8Array(readFileSync(join(dir, f))).slice().buffer);

  it('a blob from any path decodes on every path within float rounding of its own decode', () => {
    for (const p of paths) child('encode', p);
    for (const p of paths) child('decode', p);
    expect(readdirSync(dir).filter((f) => f.startsWith('dec_'))).toHaveLength(paths.length ** 2);
    const orig = flat(cache);
    const escapes = inspect(new Uint8Array(readFileSync(join(dir, `blob_${paths[0]}.bin`)))).escapedTokens;
    expect(escapes).toBe(2);
    for (const enc of paths) {
      const own = read(`dec_${enc}_on_${enc}.bin`);
      let scale = 0;
      let err = 0;
      let energy = 0;
      for (let i = 0; i < own.length; i++) {
        if (!Number.isFinite(orig[i]!)) {
          expect(Number.isNaN(own[i]!)).toBe(true); // escaped: stored raw
          continue;
        }
        scale = Math.max(scale, Math.abs(own[i]!));
        err += (own[i]! - orig[i]!) ** 2;
        energy += orig[i]! ** 2;
      }
      expect(err / energy).toBeLessThan(0.01);
      for (const dec of paths) {
        const other = read(`dec_${enc}_on_${dec}.bin`);
        let worst = 0;
        for (let i = 0; i < own.length; i++) if (Number.isFinite(orig[i]!)) worst = Math.max(worst, Math.abs(other[i]! - own[i]!));
        expect(worst, `${enc} blob on ${dec}`).toBeLessThanOrEqual(1e-5 * scale);
      }
    }
    if (paths.includes('avx512') && paths.includes('avx2')) {
      expect(Buffer.compare(readFileSync(join(dir, 'blob_avx512.bin')), readFileSync(join(dir, 'blob_avx2.bin')))).toBe(0);
      expect(Buffer.compare(readFileSync(join(dir, 'dec_avx2_on_avx512.bin')), readFileSync(join(dir, 'dec_avx2_on_avx2.bin')))).toBe(0);
    }
  }, 60_000);
});

describe('threads', () => {
  it('encode and decode with threads > 1 give the bytes of threads: 1, escapes included', async () => {
    const one = await encode(cache, profile, { backend: 'cpu' });
    expect(inspect(one).escapedTokens).toBe(2);
    const ref = flat(await decode(one, profile, { backend: 'cpu' }));
    for (const threads of [2, 3, 8, 64]) {
      const blob = await encode(cache, profile, { backend: 'cpu', threads });
      expect(Buffer.compare(Buffer.from(blob), Buffer.from(one)), `threads ${threads}`).toBe(0);
      const dec = flat(await decode(one, profile, { backend: 'cpu', threads }));
      expect(Buffer.compare(Buffer.from(dec.buffer), Buffer.from(ref.buffer)), `threads ${threads}`).toBe(0);
    }
  });

  it('damaged sections (re-sealed) fail or decode the same with threads as with one, never crash', async () => {
    const blob = await encode(cache, profile, { backend: 'cpu' });
    // The coded sections are the payloads just before the CRC.
    const coded = inspect(blob).sections.slice(1).reduce((n, x) => n + x.storedBytes, 0);
    const start = blob.length - 4 - coded;
    const rand = mulberry32(77);
    const outcome = async (b: Uint8Array, threads: number) => {
      try {
        const d = flat(await decode(b, profile, { backend: 'cpu', threads }));
        return createHash('sha256').update(new Uint8Array(d.buffer)).digest('hex');
      } catch (err) {
        return (err as { code?: string }).code ?? 'no code';
      }
    };
    let failed = 0;
    for (let i = 0; i < 60; i++) {
      const b = blob.slice();
      // Bytes anywhere in the coded sections' payloads, then a valid CRC again.
      for (let j = 0; j < 3; j++) {
        const at = start + Math.floor(rand() * coded);
        b[at] = b[at]! ^ (1 + Math.floor(rand() * 255));
      }
      new DataView(b.buffer).setUint32(b.length - 4, native.crc32c(b.subarray(0, b.length - 4)), true);
      const one = await outcome(b, 1);
      expect(await outcome(b, 4)).toBe(one);
      if (one.startsWith('E_')) {
        expect(one).toBe('E_CORRUPT');
        failed++;
      }
    }
    expect(failed).toBeGreaterThan(0);
  });

  it('threads must be an integer from 1 to 64 (E_OPTIONS naming the field)', async () => {
    for (const threads of [0, 65, 1.5, -1, Number.NaN, '2' as unknown as number]) {
      await expect(encode(cache, profile, { backend: 'cpu', threads })).rejects.toMatchObject({
        code: 'E_OPTIONS',
        message: expect.stringContaining('options.threads'),
      });
      await expect(decode(new Uint8Array(8), profile, { backend: 'cpu', threads })).rejects.toMatchObject({ code: 'E_OPTIONS' });
    }
  });
});
