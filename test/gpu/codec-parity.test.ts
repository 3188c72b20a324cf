/**
 * The CUDA codec against the CPU codec: one container format both ways (a blob encoded on either
 * backend decodes on the other, within float rounding), the same compression and error, raw
 * tokens bit-exact, the device-address API, and every error path as a typed KvtcError.
 * Runs on the real GPU when one is usable, else on the CPU emulation of the CUDA runtime
 * (see target.ts).
 */
import '../helpers/f32-decode.js'; // first: this file compares against the FP32 decoder's exact results
import { TARGET } from './target.js';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CodecProfile,
  type DType,
  type KvCache,
  type KvLayout,
  KvtcError,
  buildInfo,
  calibrate,
  decode,
  decodeToDevice,
  deviceMemory,
  encode,
  encodeDevice,
  inspect,
} from '../../src/index.js';
import { toFloat32 } from '../../src/half.js';
import { toVersion1 } from '../helpers/blob-v1.js';
import { relMse, tokenBitsEqual } from '../helpers/metrics.js';
import { syntheticCache, withDtype } from '../helpers/synthetic.js';

const LLAMA_LIKE: KvLayout = { layers: 3, kvHeads: 2, headDim: 64, dtype: 'f32', rope: { theta: 500000, style: 'neox' } };
const INTERLEAVED: KvLayout = { layers: 2, kvHeads: 2, headDim: 32, dtype: 'f32', rope: { theta: 10000, style: 'interleaved', dims: 16 } };

const profiles = new Map<KvLayout, Promise<CodecProfile>>();
function profileFor(layout: KvLayout): Promise<CodecProfile> {
  let p = profiles.get(layout);
  if (!p) {
    p = calibrate(
      Array.from({ length: 2 }, (_, i) => syntheticCache({ layout, tokens: 400, seed: 70 + i })),
      { ratio: 12, sinkTokens: 3, windowTokens: 16, pcaGroupLayers: layout === LLAMA_LIKE ? 3 : 1 },
    );
    profiles.set(layout, p);
  }
  return p;
}

function asF32(cache: KvCache, stream: 'keys' | 'values', l: number): Float32Array {
  const a = cache[stream][l]!;
  return cache.layout.dtype === 'f32' ? (a as Float32Array) : toFloat32(a as Uint16Array, cache.layout.dtype);
}

// Spacing of representable values relative to the value, per output dtype: an f16/bf16 output
// computed a few float ulps apart may round to the neighbouring representable number.
const SPACING: Record<DType, number> = { f32: 2 ** -23, f16: 2 ** -10, bf16: 2 ** -7 };

/**
 * Worst |a - b| over all values as a fraction of what float rounding allows: 1e-4 of the cache's
 * RMS (the projection sums in another order) plus one step of the dtype at that magnitude.
 * NaN must meet NaN. <= 1 means "the same cache within float tolerance".
 */
function roundingRatio(a: KvCache, b: KvCache): number {
  let sq = 0;
  let n = 0;
  for (const s of ['keys', 'values'] as const) {
    for (let l = 0; l < a.layout.layers; l++) {
      for (const v of asF32(a, s, l)) if (Number.isFinite(v)) (sq += v * v), n++;
    }
  }
  const abs = 1e-4 * Math.sqrt(sq / n);
  const step = SPACING[a.layout.dtype];
  let worst = 0;
  for (const s of ['keys', 'values'] as const) {
    for (let l = 0; l < a.layout.layers; l++) {
      const x = asF32(a, s, l);
      const y = asF32(b, s, l);
      for (let i = 0; i < x.length; i++) {
        const p = x[i]!;
        const q = y[i]!;
        if (Number.isNaN(p) || Number.isNaN(q)) {
          if (!(Number.isNaN(p) && Number.isNaN(q))) return Infinity;
          continue;
        }
        worst = Math.max(worst, Math.abs(p - q) / (abs + step * Math.max(Math.abs(p), Math.abs(q))));
      }
    }
  }
  return worst;
}

describe(`CUDA codec parity with the CPU (${TARGET})`, () => {
  beforeAll(() => {
    const info = buildInfo();
    expect(info.cuda).toBe(true);
    expect(info.cudaDevices).toBeGreaterThan(0);
    expect(info.cudaEmulated).toBe(TARGET === 'emulated');
  });

  const cases: { name: string; layout: KvLayout; dtype: DType; tokens: number; nan?: boolean; gap?: boolean }[] = [
    { name: 'llama-like neox, 3-layer PCA group, f32', layout: LLAMA_LIKE, dtype: 'f32', tokens: 150 },
    { name: 'llama-like neox, bf16, a NaN token and non-contiguous positions', layout: LLAMA_LIKE, dtype: 'bf16', tokens: 97, nan: true, gap: true },
    { name: 'interleaved partial RoPE, f16', layout: INTERLEAVED, dtype: 'f16', tokens: 301 },
  ];
  for (const c of cases) {
    it(`${c.name}: each backend decodes the other's blob to the same cache`, async () => {
      const profile = await profileFor(c.layout);
      const positions = c.gap ? Int32Array.from({ length: c.tokens }, (_, i) => 1000 + i + (i > 40 ? 7 : 0)) : undefined;
      const base = syntheticCache({ layout: c.layout, tokens: c.tokens, seed: 5, ...(positions ? { positions } : {}) });
      if (c.nan) (base.keys[1] as Float32Array)[50 * 128 + 3] = Number.NaN;
      const cache = withDtype(base, c.dtype);

      const cpuBlob = await encode(cache, profile, { backend: 'cpu' });
      const gpuBlob = await encode(cache, profile, { backend: 'cuda' });
      const ci = inspect(cpuBlob, { verify: true });
      const gi = inspect(gpuBlob, { verify: true });
      expect(gi.escapedTokens).toBe(ci.escapedTokens);
      expect(gi.escapedTokens).toBe(c.nan ? 1 : 0);
      expect(gi.sections.map((s) => s.mode)).toEqual(ci.sections.map((s) => s.mode));
      expect(gi.sections.map((s) => s.rawBytes)).toEqual(ci.sections.map((s) => s.rawBytes));
      // The projection sums in another order; a coefficient on a rounding boundary may get the
      // neighbouring code, so sizes agree closely rather than exactly.
      expect(Math.abs(gpuBlob.length - cpuBlob.length) / cpuBlob.length).toBeLessThan(0.01);

      const decoded = {
        cpuOnCpu: await decode(cpuBlob, profile, { backend: 'cpu' }),
        cpuOnGpu: await decode(cpuBlob, profile, { backend: 'cuda' }),
        gpuOnCpu: await decode(gpuBlob, profile, { backend: 'cpu' }),
        gpuOnGpu: await decode(gpuBlob, profile, { backend: 'cuda' }),
      };
      expect(roundingRatio(decoded.cpuOnCpu, decoded.cpuOnGpu)).toBeLessThanOrEqual(1);
      expect(roundingRatio(decoded.gpuOnCpu, decoded.gpuOnGpu)).toBeLessThanOrEqual(1);
      for (const d of Object.values(decoded)) {
        expect(d.tokens).toBe(c.tokens);
        expect(Array.from(d.positions!)).toEqual(Array.from(cache.positions!));
        // Sinks, window and escaped tokens are stored raw: bit-exact on every path.
        for (const t of [0, 2, c.tokens - 1, c.tokens - 16, ...(c.nan ? [50] : [])]) expect(tokenBitsEqual(d, cache, t)).toBe(true);
      }
      // Same error on both backends (the coded tokens only).
      const middle = (t: number) => t >= 3 && t < c.tokens - 16 && !(c.nan && t === 50);
      for (const s of ['keys', 'values'] as const) {
        const eCpu = relMse(cache, decoded.cpuOnCpu, s, middle);
        const eGpu = relMse(cache, decoded.gpuOnGpu, s, middle);
        expect(eGpu).toBeLessThan(eCpu * 1.05 + 1e-9);
        expect(eGpu).toBeGreaterThan(eCpu * 0.95 - 1e-9);
      }
    });
  }

  it('blobs of the version-1 container (one stream per section) decode on both backends', async () => {
    const profile = await profileFor(INTERLEAVED);
    const cache = syntheticCache({ layout: INTERLEAVED, tokens: 120, seed: 9 });
    const stored = await encode(cache, profile, { backend: 'cpu', entropy: false });
    const v1 = await toVersion1(stored, profile);
    expect(inspect(v1, { verify: true }).sections.slice(1).every((s) => s.mode === 'rans')).toBe(true);
    const want = await decode(stored, profile, { backend: 'cpu' });
    for (const backend of ['cpu', 'cuda'] as const) {
      const got = await decode(v1, profile, { backend });
      expect(roundingRatio(want, got)).toBeLessThanOrEqual(1);
    }
  });

  // The GPU machine has no model runtime: there the caches come from the file its kit carries
  // (KVTC_REAL_CACHES, see real-kv-file.ts).
  const realCachesAvailable = (() => {
    const file = process.env.KVTC_REAL_CACHES;
    if (file) return existsSync(file);
    try {
      createRequire(import.meta.url).resolve('node-llama-cpp');
      return existsSync(new URL('../../../shared/models/stories260K.gguf', import.meta.url));
    } catch {
      return false;
    }
  })();
  it.skipIf(!realCachesAvailable)('real stories260K caches: GPU and CPU agree', async () => {
    const { parityCaches } = await import('../helpers/real-kv-file.js');
    const caches = await parityCaches();
    // 96-token caches: the per-stream plan (their raw tokens exceed a whole-blob budget), and the
    // whole-cache plan aimed at 1024-token caches, whose entropy-coded static quantizers (zero a
    // level) must go through both decoders alike.
    const perStream = await calibrate(caches.slice(0, 2), { ratio: 8, windowTokens: 8, sinkTokens: 2 });
    const wholeCache = await calibrate(caches.slice(0, 2), { ratio: 8, windowTokens: 8, sinkTokens: 2, targetTokens: 1024 });
    expect(perStream.settings.allocation).toBe('stream');
    expect(wholeCache.settings.allocation).toBe('global');
    const midtread = wholeCache.groups
      .flatMap((g) => g.plan)
      .filter((p) => p.quantizer === 'static' && Math.abs(-p.shift! / p.scale! - Math.round(-p.shift! / p.scale!)) < 1e-3);
    expect(midtread.length).toBeGreaterThan(0);
    for (const profile of [perStream, wholeCache]) {
      for (const cache of caches) {
        const cpuBlob = await encode(cache, profile, { backend: 'cpu' });
        const gpuBlob = await encode(cache, profile, { backend: 'cuda' });
        expect(roundingRatio(await decode(cpuBlob, profile, { backend: 'cpu' }), await decode(cpuBlob, profile, { backend: 'cuda' }))).toBeLessThanOrEqual(1);
        const onCpu = await decode(gpuBlob, profile, { backend: 'cpu' });
        expect(roundingRatio(onCpu, await decode(gpuBlob, profile, { backend: 'cuda' }))).toBeLessThanOrEqual(1);
        const eCpu = relMse(cache, await decode(cpuBlob, profile, { backend: 'cpu' }), 'keys');
        expect(relMse(cache, onCpu, 'keys')).toBeLessThan(eCpu * 1.05 + 1e-9);
      }
    }
    expect(caches.map((c) => c.layout)).toEqual(caches.map(() => expect.objectContaining({ layers: 5, kvHeads: 4, headDim: 8 }))); // stories260K
  });
});

describe(`GPU decoder on damaged blobs (${TARGET})`, () => {
  it('resealed byte flips in the coded sections: the GPU decoder answers exactly as the CPU one, never crashes', async () => {
    const profile = await profileFor(INTERLEAVED);
    const cache = syntheticCache({ layout: INTERLEAVED, tokens: 90, seed: 21 });
    const blob = await encode(cache, profile, { backend: 'cpu' });
    const info = inspect(blob);
    const payload = info.sections.reduce((n, sec) => n + sec.storedBytes, 0);
    const payloadStart = blob.length - 4 - payload;
    const rawEnd = payloadStart + info.sections[0]!.storedBytes;
    const { native } = await import('../../src/binding.js');
    const { mulberry32 } = await import('../helpers/synthetic.js');
    const rnd = mulberry32(5);
    const outcome = async (b: Uint8Array, backend: 'cpu' | 'cuda') =>
      decode(b, profile, { backend }).then(
        (d) => d,
        (e: unknown) => (e instanceof KvtcError ? e.code : `untyped ${String(e)}`),
      );
    const tally: Record<string, number> = {};
    for (let k = 0; k < 120; k++) {
      // Chunk tables and streams of the entropy-coded sections (the raw section is plain bytes).
      const at = rawEnd + Math.floor(rnd() * (blob.length - 4 - rawEnd));
      const bad = blob.slice();
      bad[at]! ^= 1 + Math.floor(rnd() * 255);
      new DataView(bad.buffer).setUint32(bad.length - 4, native.crc32c(bad.subarray(0, bad.length - 4)), true);
      const [cpu, gpu] = [await outcome(bad, 'cpu'), await outcome(bad, 'cuda')];
      const kind = typeof cpu === 'string' ? cpu : 'decoded';
      tally[kind] = (tally[kind] ?? 0) + 1;
      expect(typeof gpu === 'string' ? gpu : 'decoded', `flip at byte ${at}`).toBe(kind);
      if (typeof cpu !== 'string' && typeof gpu !== 'string') expect(roundingRatio(cpu, gpu)).toBeLessThanOrEqual(1);
    }
    expect(tally.E_CORRUPT).toBeGreaterThan(80);
  });
});

describe(`device-address API (${TARGET})`, () => {
  const layout: KvLayout = { ...INTERLEAVED, dtype: 'bf16' };
  const tokens = 80;
  const layerBytes = tokens * layout.kvHeads * layout.headDim * 2;
  const owned: bigint[] = [];
  const alloc = async (bytes: number) => {
    const a = await deviceMemory.alloc(bytes);
    owned.push(a);
    return a;
  };
  afterAll(async () => {
    for (const a of owned) await deviceMemory.free(a);
  });

  async function upload(cache: KvCache): Promise<{ keys: bigint[]; values: bigint[] }> {
    const keys: bigint[] = [];
    const values: bigint[] = [];
    for (let l = 0; l < layout.layers; l++) {
      keys.push(await alloc(layerBytes));
      values.push(await alloc(layerBytes));
      await deviceMemory.upload(keys[l]!, cache.keys[l]!);
      await deviceMemory.upload(values[l]!, cache.values[l]!);
    }
    return { keys, values };
  }

  it('encodeDevice writes the bytes encode() writes on the GPU; decodeToDevice fills device buffers', async () => {
    const profile = await profileFor(INTERLEAVED);
    const cache = withDtype(syntheticCache({ layout: INTERLEAVED, tokens, seed: 11, positionStart: 5 }), 'bf16');
    const dev = await upload(cache);
    const blob = await encodeDevice({ layout, tokens, ...dev, positions: cache.positions! }, profile);
    expect(Buffer.from(blob).equals(Buffer.from(await encode(cache, profile, { backend: 'cuda' })))).toBe(true);

    const target = { layout, capacityTokens: tokens, keys: [] as bigint[], values: [] as bigint[] };
    for (let l = 0; l < layout.layers; l++) {
      target.keys.push(await alloc(layerBytes));
      target.values.push(await alloc(layerBytes));
    }
    const r = await decodeToDevice(blob, profile, target);
    expect(r.tokens).toBe(tokens);
    expect(Array.from(r.positions)).toEqual(Array.from(cache.positions!));
    const want = await decode(blob, profile, { backend: 'cuda' });
    for (let l = 0; l < layout.layers; l++) {
      for (const s of ['keys', 'values'] as const) {
        const got = new Uint16Array(layerBytes / 2);
        await deviceMemory.download(got, target[s][l]!);
        expect(Buffer.from(got.buffer).equals(Buffer.from((want[s][l] as Uint16Array).buffer, (want[s][l] as Uint16Array).byteOffset, layerBytes))).toBe(true);
      }
    }
  });

  it('refuses bad addresses, shapes, capacities and damaged blobs with typed errors', async () => {
    const profile = await profileFor(INTERLEAVED);
    const cache = withDtype(syntheticCache({ layout: INTERLEAVED, tokens, seed: 12 }), 'bf16');
    const dev = await upload(cache);
    const code = (p: Promise<unknown>) => p.then(() => 'resolved', (e: unknown) => (e instanceof KvtcError ? e.code : `untyped ${String(e)}`));

    // Host memory is not device memory.
    const bogus = { layout, tokens, keys: [...dev.keys], values: [...dev.values] };
    bogus.keys[1] = 0x1000n;
    expect(await code(encodeDevice(bogus, profile))).toBe('E_LAYOUT');
    expect(await code(encodeDevice({ layout, tokens, keys: dev.keys.slice(1), values: dev.values }, profile))).toBe('E_LAYOUT');
    // A misaligned element address would be a sticky CUDA error: refused before any launch.
    expect(await code(encodeDevice({ layout, tokens, keys: [dev.keys[0]! + 1n, dev.keys[1]!], values: dev.values }, profile))).toBe('E_LAYOUT');
    expect(await code(encodeDevice({ layout, tokens, keys: dev.keys.map(Number) as unknown as bigint[], values: dev.values }, profile))).toBe('E_LAYOUT');
    expect(await code(encodeDevice({ layout: { ...layout, headDim: 16 }, tokens, ...dev }, profile))).toBe('E_PROFILE_MISMATCH');
    // Buffers shorter than the tokens claimed (the driver knows each allocation's extent): refused
    // before a kernel could read or write past them.
    const tiny = await deviceMemory.alloc(64);
    const short = { layout, tokens, keys: [dev.keys[0]!, tiny], values: dev.values };
    await expect(encodeDevice(short, profile)).rejects.toMatchObject({ code: 'E_LAYOUT', message: expect.stringMatching(/cache\.keys\[1\] has \d+ bytes .* \d+ are needed/) });
    const inside = { layout, tokens, keys: [dev.keys[0]! + 64n, dev.keys[1]!], values: dev.values };
    expect(await code(encodeDevice(inside, profile))).toBe('E_LAYOUT');
    expect(await code(deviceMemory.upload(tiny, new Uint8Array(65)))).toBe('E_LAYOUT');
    expect(await code(deviceMemory.download(new Uint8Array(65), tiny))).toBe('E_LAYOUT');
    expect(await code(deviceMemory.copy(tiny, dev.keys[0]!, 65))).toBe('E_LAYOUT');

    const blob = await encode(cache, profile, { backend: 'cuda' });
    const small = { layout, capacityTokens: tokens - 1, ...dev };
    expect(await code(decodeToDevice(blob, profile, small))).toBe('E_CAPACITY');
    expect(await code(decodeToDevice(blob, profile, { ...small, capacityTokens: tokens, layout: { ...layout, dtype: 'f16' } }))).toBe('E_LAYOUT');
    expect(await code(decodeToDevice(blob, profile, { layout, capacityTokens: tokens, keys: dev.keys, values: [tiny, dev.values[1]!] }))).toBe('E_LAYOUT');
    await deviceMemory.free(tiny);

    // A damaged entropy-coded chunk, resealed with a valid checksum: E_CORRUPT from the GPU decoder.
    const info = inspect(blob);
    const lastSection = info.sections[info.sections.length - 1]!;
    expect(lastSection.mode).toBe('rans');
    const { native } = await import('../../src/binding.js');
    let corrupt = 0;
    for (const at of [blob.length - 5, blob.length - 4 - Math.floor(lastSection.storedBytes / 2)]) {
      const bad = blob.slice();
      bad[at]! ^= 0x5a;
      new DataView(bad.buffer).setUint32(bad.length - 4, native.crc32c(bad.subarray(0, bad.length - 4)), true);
      const r = await code(decode(bad, profile, { backend: 'cuda' }));
      // A flip may land on a byte whose change still decodes (then it must equal the CPU's answer).
      if (r === 'resolved') {
        expect(roundingRatio(await decode(bad, profile, { backend: 'cuda' }), await decode(bad, profile, { backend: 'cpu' }))).toBeLessThanOrEqual(1);
      } else {
        expect(r).toBe('E_CORRUPT');
        expect(await code(decode(bad, profile, { backend: 'cpu' }))).toBe('E_CORRUPT');
        // Into device buffers: refused before anything is decoded from the damaged streams, so
        // the coded tokens of the target keep what the caller had there.
        const sentinel = new Uint8Array(layerBytes).fill(0xab);
        const target = { layout, capacityTokens: tokens, keys: [] as bigint[], values: [] as bigint[] };
        for (let l = 0; l < layout.layers; l++) {
          for (const s of ['keys', 'values'] as const) {
            target[s].push(await alloc(layerBytes));
            await deviceMemory.upload(target[s][l]!, sentinel);
          }
        }
        expect(await code(decodeToDevice(bad, profile, target))).toBe('E_CORRUPT');
        const rowBytes = layerBytes / tokens;
        const middle = [info.sinkTokens * rowBytes, (tokens - info.windowTokens) * rowBytes] as const;
        expect(info.escapedTokens).toBe(0);
        for (const a of [...target.keys, ...target.values]) {
          const got = new Uint8Array(layerBytes);
          await deviceMemory.download(got, a);
          expect(got.subarray(...middle).every((b) => b === 0xab)).toBe(true);
        }
        corrupt++;
      }
    }
    expect(corrupt).toBeGreaterThan(0);

    // Out of device memory is E_CAPACITY.
    expect(await code(deviceMemory.alloc(2 ** 52))).toBe('E_CAPACITY');
    // Only kvtc's own allocations can be freed, once.
    expect(await code(deviceMemory.free(0x1234n))).toBe('E_LAYOUT');
    expect(await code(deviceMemory.free(dev.keys[0]! + 4n))).toBe('E_LAYOUT');
    const once = await deviceMemory.alloc(256);
    await deviceMemory.free(once);
    expect(await code(deviceMemory.free(once))).toBe('E_LAYOUT');
  });
});
