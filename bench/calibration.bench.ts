/**
 * Calibration benchmark: the Llama-3.1-8B-shaped profile (32 layers x 8 KV heads x 128, bf16,
 * 1020 calibration tokens after the sinks, ratio 16) with PCA groups of 1 layer (64 stream groups
 * of p = 1024) and of 4 layers (16 groups of p = 4096, fitted through the reservoir's Gram
 * matrix). Side by side in one run:
 *  - wall seconds of the public calibrate() (the headline figure), its process CPU seconds (all
 *    threads; divided by the thread count, the wall time on an otherwise idle machine), and the
 *    same calibration driven stage by stage, whose profile bytes must be identical (determinism);
 *  - CPU seconds per stage summed over the threads (add; fit, which holds gram / eigen / plan /
 *    tables and the rest of the per-group work), which other processes' load inflates far less;
 *  - the eigensolver on a 1024 x 1024 covariance-like matrix: the classic tred2/tql2 reference
 *    against the fast solver on each vector path this CPU has, with residual and orthogonality,
 *    wall and CPU milliseconds (the CPU figure is the one to read on a shared machine).
 * Prints tables and writes bench/results/calibration.json. `--quick` skips the 4-layer setting.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { calibrate } from '../src/index.js';
import { native } from '../src/binding.js';
import { nativeCache, nativeCalibrateSettings, nativeLayout } from '../src/codec/marshal.js';
import { rowValues } from '../src/layout.js';
import { resolveCalibrateOptions } from '../src/options.js';
import { gaussian, mulberry32 } from '../test/helpers/synthetic.js';
import { llamaShaped } from './llama-shaped.js';
import { eigenQuality } from '../test/helpers/eigen-quality.js';

const quick = process.argv.includes('--quick');
const cpu = cpus()[0]?.model ?? 'unknown CPU';
const cores = availableParallelism();
const out: Record<string, unknown> = { date: new Date().toISOString(), cpu, cores, loadavgBefore: loadavg() };
const sha = (b: Uint8Array | ArrayBuffer) => createHash('sha256').update(new Uint8Array(b)).digest('hex').slice(0, 16);

function table(title: string, rows: Record<string, string | number>[]): void {
  console.log(`\n${title}`);
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const fmt = (v: string | number | undefined) => (v === undefined ? '' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r[c]).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ') + ' |';
  console.log(line(cols));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(cols.map((c) => fmt(r[c]))));
}

// ---------------------------------------------------------------- the eigensolver, 1024 x 1024
/** Covariance of 1020 samples of 1024 features, rank 16 plus noise: the calibration's shape. */
function covarianceLike(p: number, samples: number, seed: number): Float64Array {
  const g = gaussian(mulberry32(seed));
  const rank = 16;
  const load = Float64Array.from({ length: rank * p }, () => g());
  const x = new Float64Array(p);
  const c = new Float64Array(p * p);
  for (let t = 0; t < samples; t++) {
    for (let j = 0; j < p; j++) x[j] = 0.05 * g();
    for (let r = 0; r < rank; r++) {
      const z = g() / (1 + r);
      for (let j = 0; j < p; j++) x[j]! += z * load[r * p + j]!;
    }
    for (let i = 0; i < p; i++) {
      const xi = x[i]!;
      const row = i * p;
      for (let j = i; j < p; j++) c[row + j]! += xi * x[j]!;
    }
  }
  for (let i = 0; i < p; i++)
    for (let j = i; j < p; j++) {
      c[i * p + j]! /= samples;
      c[j * p + i] = c[i * p + j]!;
    }
  return c;
}

function eigensolver(): void {
  const n = 1024;
  console.log(`\neigensolver: ${n} x ${n} covariance-like matrix (1020 samples, rank 16 + noise)`);
  const a = covarianceLike(n, 1020, 7);
  const best = native.internals.symEigPath();
  const paths = ['reference', ...['generic', 'avx2', 'avx512'].filter((p) => p === 'generic' || p === 'avx2' ? best !== 'generic' || p === 'generic' : best === 'avx512')];
  const rows: Record<string, string | number>[] = [];
  let refMs = 0;
  let refCpuMs = 0;
  let refVals: Float64Array | undefined;
  for (const path of paths) {
    let ms = Infinity;
    let cpuMs = Infinity;
    let res: { values: Float64Array; vectors: Float64Array } | undefined;
    for (let rep = 0; rep < (path === 'reference' ? 1 : 3); rep++) {
      const t = performance.now();
      const c0 = process.cpuUsage();
      res = native.internals.symEig(a, n, path);
      const c1 = process.cpuUsage(c0);
      ms = Math.min(ms, performance.now() - t);
      // The call runs on this thread alone: process CPU time is its own, which other processes'
      // load inflates far less than the wall time.
      cpuMs = Math.min(cpuMs, (c1.user + c1.system) / 1e3);
    }
    if (path === 'reference') {
      refMs = ms;
      refCpuMs = cpuMs;
      refVals = res!.values;
    }
    const q = eigenQuality(a, n, res!.values, res!.vectors);
    let dl = 0;
    for (let i = 0; i < n; i++) dl = Math.max(dl, Math.abs(res!.values[i]! - refVals![i]!) / Math.abs(refVals![0]!));
    rows.push({
      solver: path === 'reference' ? 'tred2/tql2 (before)' : `fast, ${path}${path === best ? ' (in use)' : ''}`,
      'ms (best of 3)': ms,
      'cpu ms (best of 3)': cpuMs,
      'speed-up': refMs / ms,
      'cpu speed-up': refCpuMs / cpuMs,
      'max residual': q.residual,
      'max |VVt-I|': q.ortho,
      'max |dl| vs ref': dl,
    });
  }
  table(`(a) symmetric eigensolver, ${n} x ${n}, one thread — ${cpu}`, rows);
  out.eigensolver = { n, rows };
}

// ---------------------------------------------------------------- the 8B-shaped calibration
async function calibration(groupLayers: number, calib: ReturnType<typeof llamaShaped>[]): Promise<Record<string, string | number>> {
  const options = { ratio: 16, pcaGroupLayers: groupLayers, windowTokens: 128 };
  // The public API: the headline wall time.
  let t = performance.now();
  const cpu0 = process.cpuUsage();
  const profile = await calibrate(calib, options);
  const totalS = (performance.now() - t) / 1e3;
  const cpu1 = process.cpuUsage(cpu0);
  // CPU seconds of the whole process (all threads) during calibrate(): on a machine shared with
  // other work this, divided by the threads, is the wall time the same run would take alone.
  const totalCpuS = (cpu1.user + cpu1.system) / 1e6;
  // The same calibration stage by stage (as src/codec/calibrate.ts drives it).
  const opts = resolveCalibrateOptions(options);
  const layout = calib[0]!.layout;
  const h = native.calibratorCreate(nativeLayout(layout), nativeCalibrateSettings(opts, layout));
  t = performance.now();
  for (const c of calib) await native.calibratorAdd(h, nativeCache(c), layout.layers, rowValues(layout));
  const addS = (performance.now() - t) / 1e3;
  t = performance.now();
  const bytes = await native.calibratorFinish(h, undefined, opts.threads);
  const finishS = (performance.now() - t) / 1e3;
  const cpuS = native.internals.calibratorStageSeconds(h);
  const same = sha(bytes) === sha(profile.toBytes());
  if (!same) console.log('  !! the stage-by-stage profile differs from calibrate()\'s: calibration is not deterministic');
  return {
    'PCA layers': groupLayers,
    threads: opts.threads,
    'calibrate() s': totalS,
    'calibrate() cpu s': totalCpuS,
    'cpu s / threads': totalCpuS / opts.threads,
    'add s': addS,
    'finish s': finishS,
    'cpu add s': cpuS.add,
    'cpu fit s': cpuS.fit,
    'cpu gram s': cpuS.gram,
    'cpu eigen s': cpuS.eigen,
    'cpu eigen ms / group': (1e3 * cpuS.eigen) / (2 * Math.ceil(layout.layers / groupLayers)),
    'cpu plan s': cpuS.plan,
    'cpu tables s': cpuS.tables,
    'profile sha256': sha(bytes),
    'same bytes twice': same ? 'yes' : 'NO',
  };
}

eigensolver();
console.log('\ngenerating the Llama-3.1-8B-shaped calibration sample (1024 tokens)');
const calib = [llamaShaped(1024, 1)];
const rows: Record<string, string | number>[] = [];
for (const gl of quick ? [1] : [1, 4]) {
  rows.push(await calibration(gl, calib));
  console.log(`  PCA group ${gl}: done`);
}
out.loadavgAfter = loadavg();
table(
  `(b) calibration of the Llama-3.1-8B-shaped bf16 profile (ratio 16), wall seconds and CPU seconds per stage summed over threads — ${cpu}, ${cores} cores, load average ${loadavg()[0]!.toFixed(2)}`,
  rows,
);
out.calibration = rows;
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/calibration.json', import.meta.url), JSON.stringify(out, null, 2));
console.log('\nwrote bench/results/calibration.json');
