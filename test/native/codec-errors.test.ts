/**
 * Every error path of the codec, each with its exact KvtcError code: input validation of encode
 * and calibrate, profile mismatches, damaged / truncated / forged blobs, damaged profiles, and
 * the exact round trip of non-finite values that must bypass the transform coder.
 *
 * Blob-mutation fuzzing runs in child processes: a bug that takes the process down (the addon
 * must never do that) then shows up as a failed test naming the case instead of killing the
 * vitest worker and every other test in this file.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CodecProfile,
  KvtcError,
  calibrate,
  decode,
  encode,
  inspect,
  type CalibrateOptions,
  type CalibrationProgress,
  type KvCache,
  type KvLayout,
} from '../../src/index.js';
import { native } from '../../src/binding.js';
import { mulberry32, syntheticCache, withDtype } from '../helpers/synthetic.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

const LAYOUT: KvLayout = {
  layers: 2,
  kvHeads: 2,
  headDim: 16,
  dtype: 'f32',
  rope: { theta: 10000, style: 'interleaved' },
};
const ROW = LAYOUT.kvHeads * LAYOUT.headDim; // values per token per layer per stream
const SINKS = 4; // default sinkTokens
const WINDOW = 16;
// The per-stream plan: these tests are about the container and its errors, at the paper's budget
// of 16·features/ratio bits per coded token (f32 samples: a whole-blob ratio 8 would leave the
// coded tokens little beside the raw f32 sinks and window).
const CAL_OPTIONS: CalibrateOptions = { ratio: 8, windowTokens: WINDOW, allocation: 'stream', widths: [2, 4, 8] };

// Byte offsets of the blob header (native/container.cc, write_blob_header).
const OFF = {
  magic: 0,
  version: 4,
  flags: 6,
  fingerprint: 8,
  layers: 24,
  kvHeads: 28,
  headDim: 32,
  dtype: 36,
  positionMode: 37,
  tokens: 40,
  sinks: 44,
  window: 48,
  escapes: 52,
  positionStart: 56,
  sectionCount: 60,
  sections: 64, // 12 bytes each: mode u8, pad u8, pad u16, stored u32, raw u32
} as const;

let tmp: string;
let samples: KvCache[];
let profile: CodecProfile;
/** 300 tokens: the usual test cache. */
let cache: KvCache;
/** 40 tokens: a small blob (~10 KB) for exhaustive byte-level tests. */
let smallCache: KvCache;
let smallBlob: Uint8Array;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'kvtc-codec-errors-'));
  samples = [1, 2, 3].map((seed) => syntheticCache({ layout: LAYOUT, tokens: 400, seed }));
  profile = await calibrate(samples, CAL_OPTIONS);
  cache = syntheticCache({ layout: LAYOUT, tokens: 300, seed: 11 });
  smallCache = syntheticCache({ layout: LAYOUT, tokens: 40, seed: 7 });
  smallBlob = await encode(smallCache, profile);
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

// ---- helpers ---------------------------------------------------------------------------------

/** Awaits p (or calls fn) and returns the KvtcError it failed with; fails the test if it succeeded. */
async function failure(p: Promise<unknown> | (() => unknown)): Promise<KvtcError> {
  let value: unknown;
  try {
    value = await (typeof p === 'function' ? p() : p);
  } catch (err) {
    if (!(err instanceof KvtcError)) {
      throw new Error(`expected a KvtcError, got ${String(err)} (code ${String((err as { code?: unknown })?.code)})`);
    }
    return err;
  }
  throw new Error(`expected a KvtcError, but the call succeeded with ${String(value)}`);
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string, field?: string): Promise<KvtcError> {
  const err = await failure(p);
  expect(err.code, err.message).toBe(code);
  if (field !== undefined) expect(err.message).toContain(field);
  return err;
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function copyView(a: ArrayBufferView): ArrayBufferView {
  if (a instanceof Float32Array) return a.slice();
  if (a instanceof Uint16Array) return a.slice();
  throw new Error('unexpected array type');
}

function cloneCache(c: KvCache): KvCache {
  const out: KvCache = {
    layout: { ...c.layout },
    tokens: c.tokens,
    keys: c.keys.map(copyView),
    values: c.values.map(copyView),
  };
  if (c.positions) out.positions = c.positions.slice();
  return out;
}

/** Loose object view of a cache, for building deliberately invalid inputs. */
type Loose = Record<string, unknown> & { layout: Record<string, unknown> };
function loose(c: KvCache, layout: Partial<Record<string, unknown>> = {}): Loose {
  return { ...c, layout: { ...c.layout, ...layout } } as unknown as Loose;
}

/** Recomputes the CRC-32C trailer (over bytes [0, len-4), little-endian) of a blob in place. */
function reseal(b: Uint8Array): Uint8Array {
  const crc = native.crc32c(b.subarray(0, b.length - 4));
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(b.length - 4, crc, true);
  return b;
}

function u32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, true);
}

/** Header size of a blob with contiguous positions and no escapes. */
function headerBytes(sections: number): number {
  return OFF.sections + 12 * sections;
}

/** Names the header field a byte offset belongs to (for failure messages). */
function fieldAt(off: number, blob: Uint8Array): string {
  const nsec = u32(blob, OFF.sectionCount);
  const named: [number, string][] = [
    [OFF.magic, 'magic'],
    [OFF.version, 'version'],
    [OFF.flags, 'flags'],
    [OFF.fingerprint, 'fingerprint'],
    [OFF.layers, 'layers'],
    [OFF.kvHeads, 'kvHeads'],
    [OFF.headDim, 'headDim'],
    [OFF.dtype, 'dtype'],
    [OFF.positionMode, 'position mode'],
    [38, 'reserved'],
    [OFF.tokens, 'tokens'],
    [OFF.sinks, 'sinks'],
    [OFF.window, 'window'],
    [OFF.escapes, 'escape count'],
    [OFF.positionStart, 'position start'],
    [OFF.sectionCount, 'section count'],
  ];
  if (off >= blob.length - 4) return `crc (byte ${off})`;
  if (off >= headerBytes(nsec)) return `payload (byte ${off})`;
  if (off >= OFF.sections) return `section table entry ${Math.floor((off - OFF.sections) / 12)} (byte ${off})`;
  let name = 'header';
  for (const [o, n] of named) if (off >= o) name = n;
  return `${name} (byte ${off})`;
}

/** Relative squared error sum((a-b)^2) / sum(a^2) over the middle (coded) tokens, skipping some. */
function middleRelMse(a: Float32Array, b: Float32Array, tokens: number, skip: Set<number>): number {
  let num = 0;
  let den = 0;
  for (let t = SINKS; t < tokens - WINDOW; t++) {
    if (skip.has(t)) continue;
    for (let j = 0; j < ROW; j++) {
      const x = a[t * ROW + j]!;
      const y = b[t * ROW + j]!;
      num += (x - y) ** 2;
      den += x * x;
    }
  }
  return num / den;
}

// ---- isolated (child process) blob mutation runner ------------------------------------------

/** One mutation of the base blob: bytes to set and/or u32 fields to overwrite, optional reseal. */
interface MutationCase {
  set?: [number, number][];
  u32?: [number, number][];
  truncate?: number;
  reseal?: boolean;
}

interface IsolatedRun {
  /** Per case: 'resolved' (decoded with exactly the expected shape), 'wrong-shape ...', 'rejected:E_...'. */
  outcomes: (string | undefined)[];
  /** Cases during which the child process died or hung. */
  crashes: { index: number; how: string }[];
  /** Cases never run because the crash limit was reached. */
  notRun: number;
  spawns: number;
}

const CHILD_SOURCE = (indexUrl: string, bindingUrl: string) => `
import { readFileSync, writeSync } from 'node:fs';
import { CodecProfile, decode } from ${JSON.stringify(indexUrl)};
import { native } from ${JSON.stringify(bindingUrl)};
const [profilePath, blobPath, casesPath, startArg] = process.argv.slice(2);
const profile = CodecProfile.fromBytes(new Uint8Array(readFileSync(profilePath)));
const blob = new Uint8Array(readFileSync(blobPath));
const { cases, want } = JSON.parse(readFileSync(casesPath, 'utf8'));
function build(c) {
  let b = blob.slice();
  const dv = new DataView(b.buffer);
  for (const [off, v] of c.set ?? []) b[off] = v;
  for (const [off, v] of c.u32 ?? []) dv.setUint32(off, v >>> 0, true);
  if (c.truncate !== undefined) b = b.slice(0, c.truncate);
  if (c.reseal) dv.setUint32(b.length - 4, native.crc32c(b.subarray(0, b.length - 4)), true);
  return b;
}
// The parent reads this pipe while it runs other tests: when it falls behind and the pipe is
// full, a write fails with EAGAIN instead of blocking. Wait and retry, so the report survives.
function say(line) {
  const buf = Buffer.from(line + '\\n');
  for (let at = 0; at < buf.length; ) {
    try {
      at += writeSync(1, buf, at);
    } catch (e) {
      if (e?.code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
  }
}
for (let i = Number(startArg); i < cases.length; i++) {
  const b = build(cases[i]);
  say('S ' + i);
  let out;
  try {
    const d = await decode(b, profile);
    const arrays = [...d.keys, ...d.values];
    const ok = d.tokens === want.tokens && d.layout.dtype === want.dtype && d.keys.length === want.layers &&
      d.values.length === want.layers && d.positions?.length === want.tokens &&
      arrays.every((a) => a.constructor.name === want.ctor && a.length === want.perLayer);
    out = ok ? 'resolved' : 'wrong-shape(tokens=' + d.tokens + ',dtype=' + d.layout.dtype + ')';
  } catch (e) {
    out = 'rejected:' + (e?.code ?? e?.constructor?.name ?? String(e));
  }
  say('R ' + i + ' ' + out);
}
say('DONE');
`;

const CHILD_TIMEOUT_MS = 150_000;

let childReady: Promise<{ script: string; profilePath: string }> | undefined;

function prepareChild(): Promise<{ script: string; profilePath: string }> {
  childReady ??= (async () => {
    const script = join(tmp, 'decode-child.mts');
    const indexUrl = pathToFileURL(join(REPO, 'src/index.ts')).href;
    const bindingUrl = pathToFileURL(join(REPO, 'src/binding.ts')).href;
    await writeFile(script, CHILD_SOURCE(indexUrl, bindingUrl));
    const profilePath = join(tmp, 'child.kvtcp');
    await profile.save(profilePath);
    return { script, profilePath };
  })();
  return childReady;
}

function runChild(args: string[], timeoutMs: number): Promise<{ stdout: string; stderr: string; code: number | null; signal: string | null; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code, signal, timedOut });
    });
  });
}

/**
 * Decodes every mutated blob in a child process. When the child dies (or hangs) on a case, the
 * case is recorded as a crash and a new child resumes after it, up to maxCrashes.
 */
async function runIsolated(base: Uint8Array, expected: KvCache, cases: MutationCase[], maxCrashes = 8): Promise<IsolatedRun> {
  const { script, profilePath } = await prepareChild();
  const id = createHash('sha1').update(JSON.stringify(cases)).digest('hex').slice(0, 12);
  const blobPath = join(tmp, `base-${id}.bin`);
  const casesPath = join(tmp, `cases-${id}.json`);
  await writeFile(blobPath, base);
  const want = {
    tokens: expected.tokens,
    layers: expected.layout.layers,
    dtype: expected.layout.dtype,
    ctor: expected.layout.dtype === 'f32' ? 'Float32Array' : 'Uint16Array',
    perLayer: expected.tokens * ROW,
  };
  await writeFile(casesPath, JSON.stringify({ cases, want }));
  const outcomes: (string | undefined)[] = new Array<string | undefined>(cases.length).fill(undefined);
  const crashes: { index: number; how: string }[] = [];
  let start = 0;
  let spawns = 0;
  while (start < cases.length) {
    spawns++;
    // Generous: a child that starts on a loaded 2-core machine must not count as a hang.
    const r = await runChild([script, profilePath, blobPath, casesPath, String(start)], CHILD_TIMEOUT_MS);
    let inFlight = -1;
    for (const line of r.stdout.split('\n')) {
      const [kind, idx, ...rest] = line.split(' ');
      if (kind === 'S') inFlight = Number(idx);
      if (kind === 'R') {
        outcomes[Number(idx)] = rest.join(' ');
        inFlight = -1;
      }
    }
    if (r.stdout.includes('DONE\n')) break;
    if (inFlight < start) {
      throw new Error(`decode child failed before its first case (exit ${r.code}, signal ${r.signal}):\n${r.stderr}`);
    }
    const why = r.timedOut ? `hang (killed after ${CHILD_TIMEOUT_MS / 1000} s)` : `exit code ${r.code}, signal ${r.signal}`;
    // The first line that says why (not the CPU-fallback warning, which names a CUDA error).
    const lastErr = r.stderr.split('\n').find((l) => /FATAL|Error|Abort|Segmentation/i.test(l) && !l.includes('Warning:')) ?? '';
    crashes.push({ index: inFlight, how: `${why}${lastErr ? `: ${lastErr.trim()}` : ''}` });
    start = inFlight + 1;
    if (crashes.length >= maxCrashes) break;
  }
  const notRun = outcomes.filter((o, i) => o === undefined && !crashes.some((c) => c.index === i)).length;
  return { outcomes, crashes, notRun, spawns };
}

function tally(outcomes: (string | undefined)[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const o of outcomes) if (o !== undefined) t[o] = (t[o] ?? 0) + 1;
  return t;
}

// ---- 1. encode input validation ---------------------------------------------------------------

describe('encode: input validation (E_LAYOUT naming the field)', () => {
  const f32 = () => cache;
  const f16 = () => withDtype(cache, 'f16');
  const cases: [string, () => unknown, string][] = [
    ['keys with 1 layer instead of 2', () => ({ ...f32(), keys: f32().keys.slice(0, 1) }), 'cache.keys'],
    ['values with 3 layers instead of 2', () => ({ ...f32(), values: [...f32().values, f32().values[0]] }), 'cache.values'],
    ['keys not an array', () => ({ ...f32(), keys: f32().keys[0] }), 'cache.keys'],
    ['keys[1] one value short', () => ({ ...f32(), keys: [f32().keys[0], new Float32Array(300 * ROW - 1)] }), 'cache.keys[1]'],
    ['values[0] one token too long', () => ({ ...f32(), values: [new Float32Array(301 * ROW), f32().values[1]] }), 'cache.values[0]'],
    ['Float32Array in an f16 cache', () => ({ ...f16(), keys: [f32().keys[0], f16().keys[1]] }), 'cache.keys[0]'],
    ['Uint16Array in an f32 cache', () => ({ ...f32(), values: [f32().values[0], f16().values[1]] }), 'cache.values[1]'],
    ['Float64Array in an f32 cache', () => ({ ...f32(), keys: [new Float64Array(300 * ROW), f32().keys[1]] }), 'cache.keys[0]'],
    ['plain JS array for a layer', () => ({ ...f32(), keys: [Array.from(f32().keys[0] as Float32Array), f32().keys[1]] }), 'cache.keys[0]'],
    ['tokens negative', () => ({ ...f32(), tokens: -1 }), 'cache.tokens'],
    ['tokens non-integer', () => ({ ...f32(), tokens: 299.5 }), 'cache.tokens'],
    ['tokens NaN', () => ({ ...f32(), tokens: Number.NaN }), 'cache.tokens'],
    ['tokens a string', () => ({ ...f32(), tokens: '300' }), 'cache.tokens'],
    ['tokens not matching the arrays', () => ({ ...f32(), tokens: 299 }), 'cache.keys[0]'],
    ['positions one short', () => ({ ...f32(), positions: new Int32Array(299) }), 'cache.positions'],
    ['positions a Float32Array', () => ({ ...f32(), positions: new Float32Array(300) }), 'cache.positions'],
    ['positions a plain array', () => ({ ...f32(), positions: Array.from({ length: 300 }, (_, i) => i) }), 'cache.positions'],
    ['layout missing', () => ({ ...f32(), layout: undefined }), 'cache.layout'],
    ['layout null', () => ({ ...f32(), layout: null }), 'cache.layout'],
    ['layers 0', () => loose(f32(), { layers: 0 }), 'cache.layout.layers'],
    ['kvHeads non-integer', () => loose(f32(), { kvHeads: 1.5 }), 'cache.layout.kvHeads'],
    ['headDim 0', () => loose(f32(), { headDim: 0 }), 'cache.layout.headDim'],
    ["dtype 'f64'", () => loose(f32(), { dtype: 'f64' }), 'cache.layout.dtype'],
    ['dtype missing', () => loose(f32(), { dtype: undefined }), 'cache.layout.dtype'],
    ['rope dims odd', () => loose(f32(), { rope: { theta: 10000, style: 'interleaved', dims: 7 } }), 'cache.layout.rope.dims'],
    ['rope dims > headDim', () => loose(f32(), { rope: { theta: 10000, style: 'interleaved', dims: 18 } }), 'cache.layout.rope.dims'],
    ['rope dims 0', () => loose(f32(), { rope: { theta: 10000, style: 'interleaved', dims: 0 } }), 'cache.layout.rope.dims'],
    ['rope theta 1', () => loose(f32(), { rope: { theta: 1, style: 'interleaved' } }), 'cache.layout.rope.theta'],
    ['rope theta 0.5', () => loose(f32(), { rope: { theta: 0.5, style: 'interleaved' } }), 'cache.layout.rope.theta'],
    ['rope theta Infinity', () => loose(f32(), { rope: { theta: Infinity, style: 'interleaved' } }), 'cache.layout.rope.theta'],
    ['rope theta missing', () => loose(f32(), { rope: { style: 'interleaved' } }), 'cache.layout.rope.theta'],
    ['rope freqs of the wrong length', () => loose(f32(), { rope: { theta: 10000, style: 'interleaved', freqs: new Float32Array(7) } }), 'cache.layout.rope.freqs'],
    ['rope freqs a plain array', () => loose(f32(), { rope: { theta: 10000, style: 'interleaved', freqs: new Array(8).fill(0.5) } }), 'cache.layout.rope.freqs'],
    ['rope freqs with NaN', () => loose(f32(), { rope: { theta: 10000, style: 'interleaved', freqs: new Float32Array(8).fill(Number.NaN) } }), 'cache.layout.rope.freqs'],
    ["rope style 'yarn'", () => loose(f32(), { rope: { theta: 10000, style: 'yarn' } }), 'cache.layout.rope.style'],
    ['cache null', () => null, 'cache'],
  ];
  for (const [name, make, field] of cases) {
    it(`${name} -> E_LAYOUT naming ${field}`, async () => {
      await expectCode(encode(make() as KvCache, profile), 'E_LAYOUT', field);
    });
  }

  it('the same cache is accepted as f32 and as f16 (control for the cases above)', async () => {
    expect((await encode(cache, profile)).length).toBeGreaterThan(0);
    expect((await encode(withDtype(cache, 'f16'), profile)).length).toBeGreaterThan(0);
  });

  it("options.entropy that is not a boolean -> E_OPTIONS naming options.entropy", async () => {
    await expectCode(encode(cache, profile, { entropy: 'yes' as unknown as boolean }), 'E_OPTIONS', 'options.entropy');
  });
});

// ---- 2. caches of another model shape -----------------------------------------------------------

describe('encode: a cache of another model shape -> E_PROFILE_MISMATCH', () => {
  const other: [string, KvLayout][] = [
    ['3 layers', { ...LAYOUT, layers: 3 }],
    ['kvHeads 4', { ...LAYOUT, kvHeads: 4 }],
    ['headDim 32', { ...LAYOUT, headDim: 32, rope: { theta: 10000, style: 'interleaved' } }],
    ['no rope', { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32' }],
    ['neox instead of interleaved', { ...LAYOUT, rope: { theta: 10000, style: 'neox' } }],
    ['another rope theta', { ...LAYOUT, rope: { theta: 500000, style: 'interleaved' } }],
    ['partial rotary dims', { ...LAYOUT, rope: { theta: 10000, style: 'interleaved', dims: 8 } }],
  ];
  for (const [name, layout] of other) {
    it(name, async () => {
      const c = syntheticCache({ layout, tokens: 100, seed: 5 });
      await expectCode(encode(c, profile), 'E_PROFILE_MISMATCH');
      await expectCode(encode(withDtype(c, 'f16'), profile), 'E_PROFILE_MISMATCH');
    });
  }

  it('explicit freqs equal to the theta-derived ones are the same shape (accepted)', async () => {
    const freqs = Float32Array.from({ length: 8 }, (_, i) => Math.pow(10000, (-2 * i) / 16));
    const c: KvCache = { ...cache, layout: { ...LAYOUT, rope: { theta: 10000, style: 'interleaved', freqs } } };
    const blob = await encode(c, profile);
    expect(inspect(blob).tokens).toBe(300);
  });
});

// ---- 3. calibrate options and samples -----------------------------------------------------------

describe('calibrate: options and samples', () => {
  const badOptions: [string, unknown][] = [
    ['ratio', 1],
    ['ratio', 0.5],
    ['ratio', Number.NaN],
    ['ratio', -3],
    ['ratio', 'x'],
    ['ratio', Infinity],
    ['pcaGroupLayers', 0],
    ['pcaGroupLayers', 'some'],
    ['pcaGroupLayers', 1.5],
    ['widths', []],
    ['widths', [9]],
    ['widths', [0, 4]],
    ['groupSizes', []],
    ['sinkTokens', -1],
    ['windowTokens', 2.5],
    ['sampleTokens', 4],
    ['seed', -1],
    ['maxTokens', -5],
    ['onProgress', 'not a function'],
  ];
  for (const [field, value] of badOptions) {
    it(`options.${field} = ${typeof value === 'number' ? String(value) : JSON.stringify(value)} -> E_OPTIONS naming options.${field}`, async () => {
      const err = await expectCode(calibrate(samples, { ...CAL_OPTIONS, [field]: value } as CalibrateOptions), 'E_OPTIONS', `options.${field}`);
      expect(err.message).toMatch(/got /);
    });
  }

  it('an empty sample list -> E_CALIBRATION', async () => {
    await expectCode(calibrate([], CAL_OPTIONS), 'E_CALIBRATION');
    await expectCode(
      calibrate((async function* () {})(), CAL_OPTIONS),
      'E_CALIBRATION',
    );
  });

  it('samples with only sink tokens (nothing to learn from) -> E_CALIBRATION', async () => {
    const tiny = syntheticCache({ layout: LAYOUT, tokens: 4, seed: 1 });
    await expectCode(calibrate([tiny], CAL_OPTIONS), 'E_CALIBRATION');
  });

  it('samples of mixed model shapes -> E_LAYOUT naming the sample', async () => {
    const odd = syntheticCache({ layout: { ...LAYOUT, layers: 3 }, tokens: 100, seed: 9 });
    await expectCode(calibrate([samples[0]!, odd], CAL_OPTIONS), 'E_LAYOUT', 'samples[1]');
    const neox = syntheticCache({ layout: { ...LAYOUT, rope: { theta: 10000, style: 'neox' } }, tokens: 100, seed: 9 });
    await expectCode(calibrate([samples[0]!, samples[1]!, neox], CAL_OPTIONS), 'E_LAYOUT', 'samples[2]');
  });

  it('an invalid sample -> E_LAYOUT naming samples[i] and the field', async () => {
    const broken = { ...samples[1]!, keys: [samples[1]!.keys[0]!] };
    await expectCode(calibrate([samples[0]!, broken], CAL_OPTIONS), 'E_LAYOUT', 'samples[1].keys');
  });

  it('samples that are not iterable -> E_OPTIONS', async () => {
    for (const s of [42, null, undefined, {}, 'abc', samples[0]]) {
      await expectCode(calibrate(s as unknown as KvCache[], CAL_OPTIONS), 'E_OPTIONS', 'samples');
    }
  });

  it('a sample with NaN in a non-sink token -> E_LAYOUT; NaN in a sink token is ignored', async () => {
    const withNaN = cloneCache(samples[2]!);
    (withNaN.keys[1] as Float32Array)[200 * ROW + 3] = Number.NaN;
    await expectCode(calibrate([samples[0]!, withNaN], CAL_OPTIONS), 'E_LAYOUT');
    const withInf = cloneCache(samples[2]!);
    (withInf.values[0] as Float32Array)[10 * ROW] = Infinity;
    await expectCode(calibrate([withInf], CAL_OPTIONS), 'E_LAYOUT');
    // Sinks are left out of calibration, so a non-finite sink token must not matter.
    const sinkNaN = cloneCache(samples[2]!);
    (sinkNaN.keys[0] as Float32Array)[1 * ROW + 5] = Number.NaN;
    const p = await calibrate([samples[0]!, samples[1]!, sinkNaN], CAL_OPTIONS);
    expect(p.settings.calibrationTokens).toBe(3 * (400 - SINKS));
  });

  it("onProgress: 'collect' once per sample, then 'fit' rising to 1", async () => {
    const events: CalibrationProgress[] = [];
    await calibrate(samples, { ...CAL_OPTIONS, onProgress: (p) => events.push({ ...p }) });
    const collect = events.filter((e) => e.stage === 'collect');
    const fit = events.filter((e) => e.stage === 'fit');
    expect(collect.map((e) => e.samples)).toEqual([1, 2, 3]);
    expect(collect.map((e) => e.tokens)).toEqual([396, 792, 1188]);
    for (const e of collect) expect(e.fraction).toBeCloseTo(e.tokens / 262144, 12);
    // Every collect event comes before the first fit event.
    expect(events.findIndex((e) => e.stage === 'fit')).toBe(collect.length);
    expect(fit.length).toBeGreaterThanOrEqual(1);
    for (const e of fit) {
      expect(e.samples).toBe(3);
      expect(e.tokens).toBe(1188);
      expect(e.fraction).toBeGreaterThan(0);
      expect(e.fraction).toBeLessThanOrEqual(1);
    }
    const fractions = fit.map((e) => e.fraction);
    expect(fractions).toEqual([...fractions].sort((a, b) => a - b)); // never goes backwards
    expect(fractions.at(-1)).toBe(1);
  });

  it('an async generator of samples gives the same profile bytes and fingerprint as the array', async () => {
    async function* gen(): AsyncGenerator<KvCache> {
      for (const s of samples) {
        await new Promise((r) => setTimeout(r, 1));
        yield s;
      }
    }
    function* syncGen(): Generator<KvCache> {
      yield* samples;
    }
    const fromAsync = await calibrate(gen(), CAL_OPTIONS);
    const fromSync = await calibrate(syncGen(), CAL_OPTIONS);
    expect(fromAsync.fingerprint).toBe(profile.fingerprint);
    expect(fromSync.fingerprint).toBe(profile.fingerprint);
    expect(Buffer.from(fromAsync.toBytes()).equals(Buffer.from(profile.toBytes()))).toBe(true);
    expect(Buffer.from(fromSync.toBytes()).equals(Buffer.from(profile.toBytes()))).toBe(true);
  });

  it('the same seed gives identical bytes; the seed is recorded in the profile', async () => {
    // sampleTokens 64 < calibration tokens, so the seeded reservoir really chooses.
    const opts = { ...CAL_OPTIONS, sampleTokens: 64 };
    const a = await calibrate(samples, { ...opts, seed: 7 });
    const b = await calibrate(samples, { ...opts, seed: 7 });
    const c = await calibrate(samples, { ...opts, seed: 8 });
    expect(a.settings.seed).toBe(7);
    expect(c.settings.seed).toBe(8);
    expect(Buffer.from(a.toBytes()).equals(Buffer.from(b.toBytes()))).toBe(true);
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(c.fingerprint).not.toBe(a.fingerprint);
  });

  it('a throwing onProgress callback in the fit stage does not break calibration', async () => {
    const p = await calibrate(samples, {
      ...CAL_OPTIONS,
      onProgress: (e) => {
        if (e.stage === 'fit') throw new Error('callback failure');
      },
    });
    expect(p.fingerprint).toBe(profile.fingerprint);
  });
});

// ---- 4. decode integrity -------------------------------------------------------------------------

describe('decode: integrity', () => {
  it('the small blob is intact and decodes (control)', async () => {
    const info = inspect(smallBlob, { verify: true });
    expect(info.tokens).toBe(40);
    const out = await decode(smallBlob, profile);
    expect(out.tokens).toBe(40);
    expect(smallBlob.length).toBeLessThan(16_000);
  });

  it('(a) flipping any single byte -> E_CORRUPT, never resolves, never crashes', async () => {
    const cases: MutationCase[] = [];
    for (let i = 0; i < smallBlob.length; i++) cases.push({ set: [[i, smallBlob[i]! ^ 0xff]] });
    // And single-bit flips at 300 random positions.
    const rnd = mulberry32(42);
    const bitCases: number[] = [];
    for (let k = 0; k < 300; k++) {
      const i = Math.floor(rnd() * smallBlob.length);
      const bit = Math.floor(rnd() * 8);
      bitCases.push(i);
      cases.push({ set: [[i, smallBlob[i]! ^ (1 << bit)]] });
    }
    const t0 = performance.now();
    const r = await runIsolated(smallBlob, smallCache, cases);
    const offsetOf = (ci: number) => (ci < smallBlob.length ? ci : bitCases[ci - smallBlob.length]!);
    console.log(
      `[decode-integrity] single-byte/bit flips: ${cases.length} cases of a ${smallBlob.length}-byte blob in ` +
        `${Math.round(performance.now() - t0)} ms, ${r.spawns} child process(es): ${JSON.stringify(tally(r.outcomes))}, ` +
        `${r.crashes.length} crash(es), ${r.notRun} not run`,
    );
    const crashed = r.crashes.map((c) => `${fieldAt(offsetOf(c.index), smallBlob)}: ${c.how}`);
    expect.soft(crashed, 'decode of a blob with one flipped byte crashed the process').toEqual([]);
    const wrong = r.outcomes
      .map((o, i) => [i, o] as const)
      .filter(([, o]) => o !== 'rejected:E_CORRUPT' && o !== undefined)
      .map(([i, o]) => `${fieldAt(offsetOf(i), smallBlob)}: ${o}`);
    expect.soft(wrong).toEqual([]);
  }, 400_000);

  it('(b) every truncation 0..len-1 -> E_CORRUPT', async () => {
    const wrong: string[] = [];
    for (let n = 0; n < smallBlob.length; n++) {
      try {
        await decode(smallBlob.slice(0, n), profile);
        wrong.push(`${n}: resolved`);
      } catch (err) {
        if ((err as KvtcError).code !== 'E_CORRUPT') wrong.push(`${n}: ${(err as KvtcError).code}`);
      }
      // The same prefix as a view into the larger buffer (byteOffset 0, shorter byteLength).
      if (n % 97 === 0) {
        await expectCode(decode(smallBlob.subarray(0, n), profile), 'E_CORRUPT');
      }
    }
    expect(wrong).toEqual([]);
    console.log(`[decode-integrity] truncations: ${smallBlob.length} lengths checked`);
  });

  it('(b) a blob with bytes appended or prepended -> E_CORRUPT', async () => {
    const longer = new Uint8Array(smallBlob.length + 1);
    longer.set(smallBlob);
    await expectCode(decode(longer, profile), 'E_CORRUPT');
    const shifted = new Uint8Array(smallBlob.length + 1);
    shifted.set(smallBlob, 1);
    await expectCode(decode(shifted, profile), 'E_CORRUPT');
    // A correctly positioned view into a larger buffer is fine (byteOffset honoured).
    const view = shifted.subarray(1);
    expect((await decode(view, profile)).tokens).toBe(40);
  });

  it('(c) a blob encoded with a different profile -> E_PROFILE_MISMATCH (both ways)', async () => {
    const other = await calibrate(samples, { ...CAL_OPTIONS, ratio: 4 });
    expect(other.fingerprint).not.toBe(profile.fingerprint);
    const blobOther = await encode(cache, other);
    await expectCode(decode(blobOther, profile), 'E_PROFILE_MISMATCH');
    await expectCode(decode(await encode(cache, profile), other), 'E_PROFILE_MISMATCH');
    // And a profile of another model shape.
    const l3 = { ...LAYOUT, layers: 3 };
    const p3 = await calibrate([syntheticCache({ layout: l3, tokens: 200, seed: 1 })], CAL_OPTIONS);
    await expectCode(decode(blobOther, p3), 'E_PROFILE_MISMATCH');
  });

  it('(d) empty and random bytes -> E_CORRUPT; a non-Uint8Array argument -> E_OPTIONS', async () => {
    await expectCode(decode(new Uint8Array(0), profile), 'E_CORRUPT');
    const rnd = mulberry32(99);
    for (let k = 0; k < 300; k++) {
      const len = Math.floor(rnd() * 400);
      const b = Uint8Array.from({ length: len }, () => Math.floor(rnd() * 256));
      if (k % 2 === 0 && len >= 8) {
        // Right magic and version, random rest.
        b.set(smallBlob.subarray(0, 8));
      }
      await expectCode(decode(b, profile), 'E_CORRUPT');
    }
    // The real header followed by random bytes (of the right total length), resealed.
    const forged = smallBlob.slice();
    for (let i = headerBytes(3); i < forged.length - 4; i++) forged[i] = Math.floor(rnd() * 256);
    reseal(forged);
    const r = await decode(forged, profile).then(
      (d) => `resolved ${d.tokens}`,
      (e: KvtcError) => e.code,
    );
    expect(['E_CORRUPT', 'resolved 40']).toContain(r);
    for (const bad of [new Uint16Array(16), new ArrayBuffer(16), 'KVTC', null, undefined, [1, 2, 3], new DataView(new ArrayBuffer(8))]) {
      await expectCode(decode(bad as unknown as Uint8Array, profile), 'E_OPTIONS', 'Uint8Array');
    }
  });

  /** Runs resealed header tamperings in a child process; returns 'name: outcome' lines. */
  async function tamper(named: [string, MutationCase][], label: string): Promise<string[]> {
    const cases = named.map(([, c]) => ({ ...c, reseal: true }));
    const r = await runIsolated(smallBlob, smallCache, cases, named.length);
    const report = named.map(([name], i) => {
      const crash = r.crashes.find((c) => c.index === i);
      return `${name}: ${crash ? `CRASH (${crash.how})` : (r.outcomes[i] ?? 'not run')}`;
    });
    console.log(`[decode-integrity] ${label}, ${named.length} cases:\n  ${report.join('\n  ')}`);
    return report;
  }

  it('(e) a tampered header re-sealed with a valid CRC -> E_CORRUPT (structural checks), never a crash', async () => {
    const b = smallBlob;
    const tokens = u32(b, OFF.tokens);
    const s1 = OFF.sections + 12;
    const s2 = OFF.sections + 24;
    const report = await tamper(
      [
        ['magic changed', { set: [[0, b[0]! ^ 0x20]] }],
        ['version 3', { set: [[OFF.version, 3]] }],
        // Version 1 predates chunked entropy-coded sections.
        ['version 1', { set: [[OFF.version, 1]] }],
        ['version 0', { set: [[OFF.version, 0]] }],
        ['tokens + 1', { u32: [[OFF.tokens, tokens + 1]] }],
        ['tokens - 1', { u32: [[OFF.tokens, tokens - 1]] }],
        ['tokens 0', { u32: [[OFF.tokens, 0]] }],
        ['tokens 2^16', { u32: [[OFF.tokens, 1 << 16]] }],
        ['tokens 2^24', { u32: [[OFF.tokens, 1 << 24]] }],
        ['tokens 2^31-1', { u32: [[OFF.tokens, 0x7fffffff]] }],
        ['tokens 2^32-1', { u32: [[OFF.tokens, 0xffffffff]] }],
        ['sinks 0', { u32: [[OFF.sinks, 0]] }],
        ['sinks 5', { u32: [[OFF.sinks, 5]] }],
        ['window = tokens', { u32: [[OFF.window, tokens]] }],
        ['window 2^32-1', { u32: [[OFF.window, 0xffffffff]] }],
        ['escape count 1', { u32: [[OFF.escapes, 1]] }],
        ['section count 0', { u32: [[OFF.sectionCount, 0]] }],
        ['section count 2', { u32: [[OFF.sectionCount, 2]] }],
        ['section count 4', { u32: [[OFF.sectionCount, 4]] }],
        ['section 1 length +1', { u32: [[s1 + 4, u32(b, s1 + 4) + 1]] }],
        ['section 1 length -1, section 2 length +1 (same total)', { u32: [[s1 + 4, u32(b, s1 + 4) - 1], [s2 + 4, u32(b, s2 + 4) + 1]] }],
        ['section 0 length -4, section 1 length +4 (same total)', { u32: [[OFF.sections + 4, u32(b, OFF.sections + 4) - 4], [s1 + 4, u32(b, s1 + 4) + 4]] }],
        ['section 0 raw length +1', { u32: [[OFF.sections + 8, u32(b, OFF.sections + 8) + 1]] }],
        ['section 1 raw length +1', { u32: [[s1 + 8, u32(b, s1 + 8) + 1]] }],
        ['section 1 mode stored (lengths differ)', { set: [[s1, 0]] }],
        ['section 0 mode rans', { set: [[OFF.sections, 1]] }],
        ['section 2 mode 7', { set: [[s2, 7]] }],
        ['dtype f16', { set: [[OFF.dtype, 1]] }],
        ['dtype 3', { set: [[OFF.dtype, 3]] }],
        ['position mode explicit', { set: [[OFF.positionMode, 1]] }],
        ['position mode 2', { set: [[OFF.positionMode, 2]] }],
        ['layers 0', { u32: [[OFF.layers, 0]] }],
        ['layers 4097', { u32: [[OFF.layers, 4097]] }],
        ['layers 4096, kvHeads 4096, headDim 8192 (within the header limits)', { u32: [[OFF.layers, 4096], [OFF.kvHeads, 4096], [OFF.headDim, 8192]] }],
      ],
      'resealed header tampering',
    );
    expect(report.filter((l) => !l.endsWith(': rejected:E_CORRUPT'))).toEqual([]);
  }, 400_000);

  it('(e) a resealed header whose layout fields no longer match the profile it names -> E_CORRUPT', async () => {
    // The fingerprint still names this profile, so the blob is damaged, not "of another profile".
    const report = await tamper(
      [
        ['layers 1', { u32: [[OFF.layers, 1]] }],
        ['layers 3', { u32: [[OFF.layers, 3]] }],
        ['kvHeads 4', { u32: [[OFF.kvHeads, 4]] }],
        ['headDim 8', { u32: [[OFF.headDim, 8]] }],
      ],
      'resealed layout-field tampering',
    );
    expect(report.filter((l) => !l.endsWith(': rejected:E_CORRUPT'))).toEqual([]);
  });

  it('(f) thousands of random mutations re-sealed with a valid CRC: E_CORRUPT or the right shape, never a crash or hang', async () => {
    const b = smallBlob;
    const fpEnd = OFF.fingerprint + 16;
    const hdrEnd = headerBytes(u32(b, OFF.sectionCount));
    const rnd = mulberry32(2024);
    const N = 4000;
    const cases: MutationCase[] = [];
    for (let k = 0; k < N; k++) {
      const count = 1 + Math.floor(rnd() * 4);
      const set: [number, number][] = [];
      // A quarter of the cases aim at the header + section table, the rest anywhere after the fingerprint.
      const [lo, hi] = k % 4 === 0 ? [fpEnd, hdrEnd] : [fpEnd, b.length - 4];
      for (let j = 0; j < count; j++) {
        const off = lo + Math.floor(rnd() * (hi - lo));
        let v = Math.floor(rnd() * 256);
        if (v === b[off]) v ^= 1;
        set.push([off, v]);
      }
      cases.push({ set, reseal: true });
    }
    const t0 = performance.now();
    const r = await runIsolated(b, smallCache, cases, 16);
    const ms = Math.round(performance.now() - t0);
    const ran = r.outcomes.filter((o) => o !== undefined).length + r.crashes.length;
    console.log(
      `[decode-integrity] random resealed mutations: ${ran} of ${N} cases ran in ${ms} ms ` +
        `(${r.spawns} child process(es)): ${JSON.stringify(tally(r.outcomes))}, ${r.crashes.length} crash(es)` +
        (r.notRun ? `, ${r.notRun} not run (stopped after ${r.crashes.length} crashes)` : ''),
    );
    const describeCase = (i: number) =>
      cases[i]!.set!.map(([o, v]) => `${fieldAt(o, b)} ${b[o]}->${v}`).join(', ');
    expect.soft(r.crashes.map((c) => `case ${c.index} [${describeCase(c.index)}]: ${c.how}`)).toEqual([]);
    const wrong = r.outcomes
      .map((o, i) => [i, o] as const)
      .filter(([, o]) => o !== undefined && o !== 'rejected:E_CORRUPT' && o !== 'resolved')
      .map(([i, o]) => `case ${i} [${describeCase(i)}]: ${o}`);
    expect.soft(wrong.slice(0, 20), `${wrong.length} mutated blobs neither rejected with E_CORRUPT nor decoded to the right shape`).toEqual([]);
  }, 400_000);
});

// ---- 5. inspect --------------------------------------------------------------------------------

describe('inspect', () => {
  it('reports the header of a blob correctly', async () => {
    const blob = await encode(cache, profile);
    const info = inspect(blob);
    const groupInfo = native.profileInfo(profile.toBytes()).groups;
    const middle = 300 - SINKS - WINDOW;
    expect(info).toMatchObject({
      fingerprint: profile.fingerprint,
      layers: 2,
      kvHeads: 2,
      headDim: 16,
      dtype: 'f32',
      tokens: 300,
      sinkTokens: SINKS,
      windowTokens: WINDOW,
      escapedTokens: 0,
      contiguousPositions: true,
      positionStart: 0,
      bytes: blob.length,
      rawBytesF16: 2 * 2 * 300 * ROW * 2,
      verified: false,
    });
    expect(info.ratio).toBeCloseTo(info.rawBytesF16 / blob.length, 12);
    expect(info.sections).toHaveLength(1 + groupInfo.length);
    expect(info.sections[0]).toEqual({ mode: 'stored', storedBytes: (SINKS + WINDOW) * ROW * 4 * 2 * 2, rawBytes: (SINKS + WINDOW) * ROW * 4 * 2 * 2 });
    groupInfo.forEach((g, i) => {
      const s = info.sections[i + 1]!;
      expect(s.rawBytes).toBe(middle * g.rowBytes);
      expect(s.mode).toBe('rans'); // smaller than the raw rows, so entropy coding was kept
      expect(s.storedBytes).toBeLessThan(s.rawBytes);
    });
    // Layout of the container: header, section payloads, 4-byte CRC.
    const payload = info.sections.reduce((n, s) => n + s.storedBytes, 0);
    expect(blob.length).toBe(headerBytes(info.sections.length) + payload + 4);
    expect(inspect(blob, { verify: true }).verified).toBe(true);
  });

  it('entropy: false stores the packed rows as they are', async () => {
    const blob = await encode(cache, profile, { entropy: false });
    const info = inspect(blob, { verify: true });
    for (const s of info.sections) {
      expect(s.mode).toBe('stored');
      expect(s.storedBytes).toBe(s.rawBytes);
    }
    const a = await decode(blob, profile);
    const b = await decode(await encode(cache, profile), profile);
    for (let l = 0; l < 2; l++) {
      expect(Buffer.from(bytesOf(a.keys[l]!)).equals(Buffer.from(bytesOf(b.keys[l]!)))).toBe(true);
      expect(Buffer.from(bytesOf(a.values[l]!)).equals(Buffer.from(bytesOf(b.values[l]!)))).toBe(true);
    }
  });

  it('reports dtype, explicit positions and the position start', async () => {
    const f16 = inspect(await encode(withDtype(cache, 'f16'), profile));
    expect(f16.dtype).toBe('f16');
    expect(f16.sections[0]!.rawBytes).toBe((SINKS + WINDOW) * ROW * 2 * 2 * 2);
    const shifted = syntheticCache({ layout: LAYOUT, tokens: 100, seed: 3, positionStart: 1000 });
    const si = inspect(await encode(shifted, profile));
    expect(si.contiguousPositions).toBe(true);
    expect(si.positionStart).toBe(1000);
    const positions = Int32Array.from({ length: 100 }, (_, i) => 3 * i + (i > 50 ? 7 : 0));
    const gappy = syntheticCache({ layout: LAYOUT, tokens: 100, seed: 3, positions });
    const gb = await encode(gappy, profile);
    const gi = inspect(gb, { verify: true });
    expect(gi.contiguousPositions).toBe(false);
    expect(gb.length).toBe(headerBytes(gi.sections.length) + 4 * 100 + gi.sections.reduce((n, s) => n + s.storedBytes, 0) + 4);
    expect(Array.from((await decode(gb, profile)).positions!)).toEqual(Array.from(positions));
  });

  it('verify: true throws E_CORRUPT on a flipped payload byte; without verify the header still parses', async () => {
    const blob = await encode(cache, profile);
    const bad = blob.slice();
    bad[blob.length - 100]! ^= 0x01;
    await expectCode(() => inspect(bad, { verify: true }), 'E_CORRUPT', 'checksum');
    const info = inspect(bad);
    expect(info.tokens).toBe(300);
    expect(info.verified).toBe(false);
    // A flipped CRC byte too.
    const badCrc = blob.slice();
    badCrc[blob.length - 1]! ^= 0x80;
    await expectCode(() => inspect(badCrc, { verify: true }), 'E_CORRUPT');
    expect(inspect(badCrc).tokens).toBe(300);
  });

  it('bytes that are not a blob -> E_CORRUPT; an argument that is not bytes -> E_OPTIONS', async () => {
    await expectCode(() => inspect(new Uint8Array(0)), 'E_CORRUPT');
    await expectCode(() => inspect(new Uint8Array(7)), 'E_CORRUPT');
    await expectCode(() => inspect(smallBlob.slice(0, 60)), 'E_CORRUPT');
    await expectCode(() => inspect(profile.toBytes()), 'E_CORRUPT');
    await expectCode(() => inspect('blob' as unknown as Uint8Array), 'E_OPTIONS');
  });
});

// ---- 6. CodecProfile ---------------------------------------------------------------------------

describe('CodecProfile', () => {
  it('fromBytes of garbage, truncated bytes or any single flipped byte -> E_PROFILE', async () => {
    const bytes = profile.toBytes();
    await expectCode(() => CodecProfile.fromBytes(new Uint8Array(0)), 'E_PROFILE');
    await expectCode(() => CodecProfile.fromBytes(new Uint8Array(64)), 'E_PROFILE');
    await expectCode(() => CodecProfile.fromBytes(smallBlob), 'E_PROFILE');
    await expectCode(() => CodecProfile.fromBytes('profile' as unknown as Uint8Array), 'E_PROFILE');
    await expectCode(() => CodecProfile.fromBytes(new Uint16Array(8) as unknown as Uint8Array), 'E_PROFILE');
    const wrong: string[] = [];
    const check = (b: Uint8Array, what: string) => {
      try {
        CodecProfile.fromBytes(b);
        wrong.push(`${what}: accepted`);
      } catch (err) {
        if ((err as KvtcError).code !== 'E_PROFILE') wrong.push(`${what}: ${(err as KvtcError).code}`);
      }
    };
    for (let n = 0; n < bytes.length; n += n < 200 ? 1 : 37) check(bytes.slice(0, n), `truncated to ${n}`);
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes.slice();
      b[i]! ^= 0xff;
      check(b, `byte ${i} flipped`);
    }
    const longer = new Uint8Array(bytes.length + 4);
    longer.set(bytes);
    check(longer, 'appended bytes');
    expect(wrong).toEqual([]);
  });

  it('fromBytes of the same bytes gives the same fingerprint, layout and settings', () => {
    const again = CodecProfile.fromBytes(profile.toBytes());
    expect(again.fingerprint).toBe(profile.fingerprint);
    expect(again.layout).toMatchObject({ layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32' });
    expect(again.layout.rope).toMatchObject({ theta: 10000, style: 'interleaved', dims: 16 });
    expect(again.settings).toEqual(profile.settings);
    expect(again.settings).toMatchObject({ ratio: 8, sinkTokens: SINKS, windowTokens: WINDOW, calibrationTokens: 3 * 396 });
  });

  it('toBytes() returns a copy; fromBytes() keeps its own copy', async () => {
    const bytes = profile.toBytes();
    const before = Buffer.from(bytes);
    bytes.fill(0);
    expect(Buffer.from(profile.toBytes()).equals(before)).toBe(true);
    expect(profile.toBytes()).not.toBe(profile.toBytes());
    const input = profile.toBytes();
    const p = CodecProfile.fromBytes(input);
    input.fill(0xaa); // changing the caller's buffer later must not reach the profile
    expect(Buffer.from(p.toBytes()).equals(before)).toBe(true);
    const blob = await encode(smallCache, p);
    expect((await decode(blob, profile)).tokens).toBe(40);
  });

  it('save() + load() round-trips; load() of a missing path -> E_IO; save() into a missing dir -> E_IO', async () => {
    const path = join(tmp, 'profile.kvtcp');
    await profile.save(path);
    const loaded = await CodecProfile.load(path);
    expect(loaded.fingerprint).toBe(profile.fingerprint);
    expect(Buffer.from(await readFile(path)).equals(Buffer.from(profile.toBytes()))).toBe(true);
    // A blob of the original decodes with the loaded profile.
    expect((await decode(smallBlob, loaded)).tokens).toBe(40);
    await expectCode(CodecProfile.load(join(tmp, 'does-not-exist.kvtcp')), 'E_IO', 'does-not-exist');
    await expectCode(profile.save(join(tmp, 'no-such-dir', 'p.kvtcp')), 'E_IO');
    // A damaged file is E_PROFILE, not E_IO.
    const damaged = profile.toBytes();
    damaged[damaged.length >> 1]! ^= 1;
    await writeFile(join(tmp, 'damaged.kvtcp'), damaged);
    await expectCode(CodecProfile.load(join(tmp, 'damaged.kvtcp')), 'E_PROFILE');
  });

  it("the fingerprint is 32 hex digits, the SHA-256 prefix of the bytes, and the blob's fingerprint", async () => {
    expect(profile.fingerprint).toMatch(/^[0-9a-f]{32}$/);
    expect(profile.fingerprint).toBe(createHash('sha256').update(profile.toBytes()).digest('hex').slice(0, 32));
    expect(inspect(smallBlob).fingerprint).toBe(profile.fingerprint);
    expect(Buffer.from(smallBlob.subarray(OFF.fingerprint, OFF.fingerprint + 16)).toString('hex')).toBe(profile.fingerprint);
  });
});

// ---- 7. non-finite and huge values are escaped -----------------------------------------------------

describe('escaped tokens (NaN / Inf / huge values in the middle section)', () => {
  // token -> (stream, layer, index within the row, raw bit pattern)
  const poisonF32: [number, 'keys' | 'values', number, number, number][] = [
    [50, 'keys', 0, 19, 0xffc12345], // NaN with a payload
    [51, 'values', 1, 0, 0x7f800000], // +Inf
    [120, 'values', 0, 5, 0xff800000], // -Inf
    [200, 'keys', 1, 7, 0x7149f2ca], // 1e30
  ];
  const poisonF16: [number, 'keys' | 'values', number, number, number][] = [
    [50, 'keys', 0, 19, 0x7e00], // NaN
    [51, 'values', 1, 0, 0x7c00], // +Inf
    [120, 'values', 0, 5, 0xfc00], // -Inf
    [200, 'keys', 1, 7, 0x7bff], // 65504, the largest f16
  ];

  for (const dtype of ['f32', 'f16'] as const) {
    it(`${dtype}: escaped rows round-trip bit for bit, the rest stays within tolerance`, async () => {
      const poison = dtype === 'f32' ? poisonF32 : poisonF16;
      const clean = withDtype(cache, dtype);
      const dirty = cloneCache(clean);
      for (const [t, stream, layer, j, bits] of poison) {
        const arr = dirty[stream][layer]!;
        if (dtype === 'f32') new Uint32Array(arr.buffer, arr.byteOffset, arr.byteLength / 4)[t * ROW + j] = bits;
        else (arr as Uint16Array)[t * ROW + j] = bits;
      }
      expect(new Float32Array(new Uint32Array([0x7149f2ca]).buffer)[0]).toBeCloseTo(1e30, -24);
      const blob = await encode(dirty, profile);
      const info = inspect(blob, { verify: true });
      const escaped = new Set(poison.map((p) => p[0]));
      expect(info.escapedTokens).toBe(escaped.size);
      expect(inspect(await encode(clean, profile)).escapedTokens).toBe(0);

      const out = await decode(blob, profile);
      expect(out.layout.dtype).toBe(dtype);
      const width = dtype === 'f32' ? 4 : 2;
      const rowBytes = ROW * width;
      for (const stream of ['keys', 'values'] as const) {
        for (let l = 0; l < 2; l++) {
          const want = bytesOf(dirty[stream][l]!);
          const got = bytesOf(out[stream][l]!);
          // Escaped tokens: the whole row of every layer, bit for bit.
          for (const t of escaped) {
            const a = Buffer.from(want.subarray(t * rowBytes, (t + 1) * rowBytes));
            const b = Buffer.from(got.subarray(t * rowBytes, (t + 1) * rowBytes));
            expect(b.equals(a), `${stream}[${l}] token ${t}`).toBe(true);
          }
          // Sinks and window are lossless too.
          for (const [from, to] of [[0, SINKS], [300 - WINDOW, 300]] as const) {
            expect(Buffer.from(got.subarray(from * rowBytes, to * rowBytes)).equals(Buffer.from(want.subarray(from * rowBytes, to * rowBytes)))).toBe(true);
          }
          // Other middle tokens: transform-coded, within the usual error.
          const ref = dtype === 'f32' ? (dirty[stream][l] as Float32Array) : toF32(dirty[stream][l] as Uint16Array);
          const dec = dtype === 'f32' ? (out[stream][l] as Float32Array) : toF32(out[stream][l] as Uint16Array);
          for (let t = SINKS; t < 300 - WINDOW; t++) {
            if (escaped.has(t)) continue;
            for (let j = 0; j < ROW; j++) expect(Number.isFinite(dec[t * ROW + j]!)).toBe(true);
          }
          expect(middleRelMse(ref, dec, 300, escaped), `${stream}[${l}]`).toBeLessThan(0.02);
        }
      }
    });
  }

  it('a single value of 1e6 (beyond what the fp16 quantizer parameters carry) escapes its token', async () => {
    const dirty = cloneCache(cache);
    (dirty.keys[0] as Float32Array)[100 * ROW] = 1e6;
    const info = inspect(await encode(dirty, profile));
    expect(info.escapedTokens).toBe(1);
    const out = await decode(await encode(dirty, profile), profile);
    expect((out.keys[0] as Float32Array)[100 * ROW]).toBe(1e6);
  });
});

function toF32(a: Uint16Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const h = a[i]!;
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? Number.NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

// ---- 8. determinism and concurrency --------------------------------------------------------------

describe('determinism and concurrency', () => {
  it('encoding the same cache twice gives identical bytes', async () => {
    const a = await encode(cache, profile);
    const b = await encode(cache, profile);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const c = await encode(withDtype(cache, 'f16'), profile);
    const d = await encode(withDtype(cache, 'f16'), profile);
    expect(Buffer.from(c).equals(Buffer.from(d))).toBe(true);
  });

  it('8 encodes and 8 decodes at once give exactly what they give one after another', async () => {
    const caches = Array.from({ length: 8 }, (_, i) =>
      syntheticCache({ layout: LAYOUT, tokens: 250 + 10 * i, seed: 100 + i, positionStart: 7 * i }),
    );
    const toDecode = Array.from({ length: 8 }, (_, i) =>
      withDtype(syntheticCache({ layout: LAYOUT, tokens: 200 + 13 * i, seed: 200 + i }), i % 2 ? 'f16' : 'f32'),
    );
    const blobsToDecode: Uint8Array[] = [];
    for (const c of toDecode) blobsToDecode.push(await encode(c, profile));

    const seqEnc: Uint8Array[] = [];
    for (const c of caches) seqEnc.push(await encode(c, profile));
    const seqDec: KvCache[] = [];
    for (const b of blobsToDecode) seqDec.push(await decode(b, profile));

    const all = await Promise.all([
      ...caches.map((c) => encode(c, profile)),
      ...blobsToDecode.map((b) => decode(b, profile)),
    ]);
    const parEnc = all.slice(0, 8) as Uint8Array[];
    const parDec = all.slice(8) as KvCache[];
    for (let i = 0; i < 8; i++) {
      expect(Buffer.from(parEnc[i]!).equals(Buffer.from(seqEnc[i]!)), `encode ${i}`).toBe(true);
      const a = parDec[i]!;
      const b = seqDec[i]!;
      expect(a.tokens).toBe(toDecode[i]!.tokens);
      expect(a.layout.dtype).toBe(toDecode[i]!.layout.dtype);
      expect(Array.from(a.positions!)).toEqual(Array.from(b.positions!));
      for (const stream of ['keys', 'values'] as const) {
        for (let l = 0; l < 2; l++) {
          expect(Buffer.from(bytesOf(a[stream][l]!)).equals(Buffer.from(bytesOf(b[stream][l]!))), `decode ${i} ${stream}[${l}]`).toBe(true);
        }
      }
    }
    // And the parallel-encoded blobs decode like the sequential ones.
    const back = await Promise.all(parEnc.map((b) => decode(b, profile)));
    back.forEach((d, i) => expect(d.tokens).toBe(caches[i]!.tokens));
  });
});
