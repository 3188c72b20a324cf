/**
 * The int8 reconstruction path of the CPU decoder (the default with AVX-512 VNNI): fresh
 * processes decode the same blobs with KVTC_DECODE=f32, =int8 and unset; the int8 output stays
 * within a small distance of the f32 one (the int8 basis's own rounding), its error against the
 * original within a fraction of a percent of the codec's for min/max and static groups (with and
 * without reconstruction levels), escaped tokens are still exact, and an invalid KVTC_DECODE is
 * E_OPTIONS. Skipped where the CPU has no VNNI (the path refuses to run there).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildInfo, calibrate, CodecProfile, encode, type KvCache, type KvLayout } from '../../src/index.js';
import { rewriteLevels } from '../helpers/profile-levels.js';
import { syntheticCache } from '../helpers/synthetic.js';

const vnni = buildInfo().simd.includes('avx512vnni') && buildInfo().simd.includes('avx512f');
const dir = mkdtempSync(join(tmpdir(), 'kvtc-int8-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const script = `
  import { readFileSync, writeFileSync } from 'node:fs';
  import { CodecProfile, decode, buildInfo } from './dist/index.js';
  const [dir, name] = process.argv.slice(1);
  const profile = CodecProfile.fromBytes(new Uint8Array(readFileSync(dir + '/profile.bin')));
  let e = null;
  try {
    const d = await decode(new Uint8Array(readFileSync(dir + '/blob.bin')), profile, { backend: 'cpu' });
    const out = new Float32Array(d.keys.length * 2 * d.keys[0].length);
    [...d.keys, ...d.values].forEach((a, i) => out.set(a, i * a.length));
    writeFileSync(dir + '/dec_' + name + '.bin', out);
  } catch (err) { e = err.code + ': ' + err.message; }
  console.log(JSON.stringify({ mode: buildInfo().codecDecode, e }));
`;
const child = (mode: string, simd?: string) =>
  JSON.parse(
    execFileSync(process.execPath, ['--input-type=module', '-e', script, dir, mode], {
      cwd: new URL('../../', import.meta.url),
      encoding: 'utf8',
      env: { ...process.env, KVTC_DECODE: mode, ...(simd ? { KVTC_SIMD: simd } : {}) }, // '' = unset: the default
    }).trim(),
  ) as { mode: string; e: string | null };

function flat(c: KvCache): Float32Array {
  const parts = [...c.keys, ...c.values] as Float32Array[];
  const out = new Float32Array(parts.length * parts[0]!.length);
  parts.forEach((p, i) => out.set(p, i * p.length));
  return out;
}

describe('int8 decode path', () => {
  it('an invalid KVTC_DECODE is E_OPTIONS at decode, and buildInfo says why', async () => {
    const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32' };
    const profile = await calibrate([syntheticCache({ layout, tokens: 200, seed: 1 })], { ratio: 4, windowTokens: 8 });
    writeFileSync(join(dir, 'profile.bin'), profile.toBytes());
    writeFileSync(join(dir, 'blob.bin'), await encode(syntheticCache({ layout, tokens: 100, seed: 2 }), profile, { backend: 'cpu' }));
    const r = child('fp8');
    expect(r.mode).toBe("KVTC_DECODE must be f32 or int8, got 'fp8'");
    expect(r.e).toBe(`E_OPTIONS: ${r.mode}`);
    expect(child('f32')).toEqual({ mode: 'f32', e: null });
    if (!vnni) expect(child('int8').e).toBe('E_OPTIONS: KVTC_DECODE=int8 needs a CPU with AVX-512 VNNI');
    // A forced narrower path is not overridden by the int8 path's AVX-512 kernels.
    if (vnni) expect(child('int8', 'avx2').e).toBe('E_OPTIONS: KVTC_DECODE=int8 runs on the avx512 path only, and KVTC_SIMD selects avx2');
  });

  it.skipIf(!vnni)('int8 reconstruction stays within the int8 basis rounding of f32, escapes exact', async () => {
    const layout: KvLayout = { layers: 4, kvHeads: 2, headDim: 64, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
    const samples = [0, 1, 2].map((i) => syntheticCache({ layout, tokens: 500, seed: 60 + i }));
    // Min/max groups (the per-stream plan) at every width the plan may pick: 1..6 and 8, and the
    // odd widths alone.
    for (const [ratio, groupLayers, widths] of [
      [4, 1, [1, 2, 3, 4, 5, 6, 8]],
      [12, 2, [1, 2, 3, 4, 5, 6, 8]],
      [5, 1, [1, 3, 5, 6]],
    ] as const) {
      const profile = await calibrate(samples, { ratio, windowTokens: 16, pcaGroupLayers: groupLayers, allocation: 'stream', widths: [...widths] });
      expect(new Set(profile.groups.flatMap((g) => g.plan.map((p) => p.bits))).size).toBeGreaterThanOrEqual(2);
      const cache = syntheticCache({ layout, tokens: 377, seed: 5, positionStart: 20 });
      const rv = layout.kvHeads * layout.headDim;
      (cache.keys[2] as Float32Array)[100 * rv + 7] = Number.POSITIVE_INFINITY; // escaped token
      writeFileSync(join(dir, 'profile.bin'), profile.toBytes());
      writeFileSync(join(dir, 'blob.bin'), await encode(cache, profile, { backend: 'cpu' }));
      expect(child('f32')).toEqual({ mode: 'f32', e: null });
      expect(child('int8')).toEqual({ mode: 'int8', e: null });
      const read = (m: string) => new Float32Array(new Uint8Array(readFileSync(join(dir, `dec_${m}.bin`))).slice().buffer);
      const f = read('f32');
      const q = read('int8');
      const orig = flat(cache);
      let errF = 0;
      let errQ = 0;
      let diff = 0;
      let energy = 0;
      for (let i = 0; i < orig.length; i++) {
        if (!Number.isFinite(orig[i]!)) {
          expect(q[i]).toBe(orig[i]);
          continue;
        }
        errF += (f[i]! - orig[i]!) ** 2;
        errQ += (q[i]! - orig[i]!) ** 2;
        diff += (q[i]! - f[i]!) ** 2;
        energy += orig[i]! ** 2;
      }
      // Rows of 8-bit codes against a 7-bit-magnitude basis: the extra error is ~1e-5 of the energy.
      expect(diff / energy, `ratio ${ratio}`).toBeLessThan(1e-4);
      expect(errQ / energy, `ratio ${ratio}`).toBeLessThan(errF / energy + 1e-4);
      expect(diff).toBeGreaterThan(0); // it really ran the other path
    }
  });

  it.skipIf(!vnni)('static groups (uniform and with levels) decode on int8 within 0.5% of the FP32 error; int8 is the default from ratio 6', async () => {
    const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 32, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
    const samples = [0, 1].map((i) => syntheticCache({ layout, tokens: 400, seed: 70 + i }));
    const cache = syntheticCache({ layout, tokens: 300, seed: 3 });
    const orig = flat(cache);
    const read = (m: string) => new Float32Array(new Uint8Array(readFileSync(join(dir, `dec_${m}.bin`))).slice().buffer);
    // Below kInt8DefaultMinRatio (6) the default is the FP32 path; KVTC_DECODE=int8 still insists.
    const low = await calibrate(samples, { ratio: 4, windowTokens: 0, pcaGroupLayers: 1 });
    writeFileSync(join(dir, 'profile.bin'), low.toBytes());
    writeFileSync(join(dir, 'blob.bin'), await encode(cache, low, { backend: 'cpu' }));
    for (const m of ['f32', '', 'int8']) expect(child(m).e).toBe(null);
    expect(Buffer.from(read('').buffer).equals(Buffer.from(read('f32').buffer))).toBe(true);
    expect(Buffer.from(read('int8').buffer).equals(Buffer.from(read('f32').buffer))).toBe(false);
    for (const ratio of [6, 10, 20]) {
      const profile = await calibrate(samples, { ratio, windowTokens: 0, pcaGroupLayers: 1 });
      const plans = profile.groups.flatMap((g) => g.plan);
      expect(plans.some((p) => p.quantizer === 'static' && p.bits <= 4)).toBe(true); // groups with levels
      const v3 = profile.toBytes();
      // The same plan without levels: static groups decode at shift + code x scale.
      for (const [name, bytes] of [['levels', v3], ['uniform', rewriteLevels(v3, () => null)]] as const) {
        writeFileSync(join(dir, 'profile.bin'), bytes);
        writeFileSync(join(dir, 'blob.bin'), await encode(cache, CodecProfile.fromBytes(bytes), { backend: 'cpu' }));
        expect(child('f32')).toEqual({ mode: 'f32', e: null });
        expect(child('')).toEqual({ mode: 'int8', e: null }); // the default on this CPU
        const f = read('f32');
        const q = read('');
        let errF = 0;
        let errQ = 0;
        let energy = 0;
        for (let i = 0; i < orig.length; i++) {
          errF += (f[i]! - orig[i]!) ** 2;
          errQ += (q[i]! - orig[i]!) ** 2;
          energy += orig[i]! ** 2;
        }
        const what = `ratio ${ratio}, ${name}`;
        expect(errQ / errF, what).toBeLessThan(1.005);
        expect(errQ / errF, what).toBeGreaterThan(0.995);
        expect(Buffer.from(q.buffer).equals(Buffer.from(f.buffer)), what).toBe(false); // it really ran the int8 path
        expect(errF / energy, what).toBeGreaterThan(1e-4); // a lossy plan: the bound above is not vacuous
      }
    }
  });
});
