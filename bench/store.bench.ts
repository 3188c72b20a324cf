/**
 * Store benchmark: a few hundred synthetic sessions under a Zipf access pattern with tight
 * device and host budgets, the same workload run twice side by side — the lower tiers holding
 * kvtc blobs, and holding raw (uncompressed) blobs — so the payoff of compression at a fixed
 * memory budget shows. Prints hit rate and get latency per tier (as the store reports it, and as
 * the caller sees it around each get), tokens through the codec per operation, ops/s and the
 * event-loop delay p99 while restores run; writes bench/results/store.json. `--quick` runs a
 * smaller workload.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { KvStore, calibrate, type GetStatus, type KvCache, type KvLayout } from '../src/index.js';
import { mulberry32 } from '../test/helpers/synthetic.js';
import { syntheticCache, withDtype } from '../test/helpers/synthetic.js';

const quick = process.argv.includes('--quick');
const SESSIONS = quick ? 60 : 240;
const OPS = quick ? 400 : 2400;
const CLIENTS = 4;
const TOKENS = 256;
const layout: KvLayout = { layers: 8, kvHeads: 4, headDim: 64, dtype: 'f16', rope: { theta: 10000, style: 'neox' } };

function zipf(n: number, s: number, rand: () => number): () => number {
  const w = Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);
  const total = w.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  let acc = 0;
  for (const x of w) cdf.push((acc += x / total));
  return () => {
    const u = rand();
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

async function run(compression: 'kvtc' | 'none', sessions: KvCache[], profile: Awaited<ReturnType<typeof calibrate>>) {
  const dir = await mkdtemp(join(tmpdir(), 'kvtc-bench-'));
  const raw = sessions[0]!.keys.reduce((s, a) => s + a.byteLength, 0) * 2;
  const deviceBudget = Math.floor(raw * SESSIONS * 0.1);
  const hostBudget = Math.floor(raw * SESSIONS * 0.1);
  const store = await KvStore.open({
    profile,
    path: dir,
    compression,
    tiers: { device: { capacityBytes: deviceBudget, idleMs: 0 }, host: { capacityBytes: hostBudget, idleMs: 0 } },
    flushOnClose: false,
  });
  for (let i = 0; i < sessions.length; i++) await store.put(`s${i}`, sessions[i]!);
  const pick = zipf(SESSIONS, 1.1, mulberry32(7));
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  const t0 = performance.now();
  let done = 0;
  let misses = 0;
  const seen: Record<string, number[]> = { device: [], host: [], disk: [] };
  const codec0 = store.stats().codec;
  const client = async () => {
    while (done < OPS) {
      done++;
      const i = pick();
      const status: GetStatus = {};
      const g0 = performance.now();
      const c = await store.get(`s${i}`, { status });
      if (status.tier) seen[status.tier]!.push(performance.now() - g0);
      if (!c) {
        misses++;
        await store.put(`s${i}`, sessions[i]!);
      } else if (done % 8 === 0) {
        await store.put(`s${i}`, c); // a new turn writes the session back
      }
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
  const seconds = (performance.now() - t0) / 1000;
  histogram.disable();
  const s = store.stats();
  const pct = (v: number[], p: number) => (v.length ? [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor((p / 100) * v.length))]! : NaN);
  await store.close();
  await rm(dir, { recursive: true, force: true });
  const hits = s.device.hits + s.host.hits + s.disk.hits;
  return {
    compression,
    'device budget MB': deviceBudget / 1e6,
    'host budget MB': hostBudget / 1e6,
    'device hit %': (100 * s.device.hits) / hits,
    'host hit %': (100 * s.host.hits) / hits,
    'disk hit %': (100 * s.disk.hits) / hits,
    'host p50 ms': s.host.getP50Ms ?? NaN,
    'host p99 ms': s.host.getP99Ms ?? NaN,
    'disk p50 ms': s.disk.getP50Ms ?? NaN,
    'disk p99 ms': s.disk.getP99Ms ?? NaN,
    'device p99 ms': s.device.getP99Ms ?? NaN,
    'caller host p50 ms': pct(seen.host!, 50),
    'caller host p99 ms': pct(seen.host!, 99),
    'caller disk p50 ms': pct(seen.disk!, 50),
    'caller device p50 ms': pct(seen.device!, 50),
    'encoded tokens / op': (s.codec.encodedTokens - codec0.encodedTokens) / OPS,
    'decoded tokens / op': (s.codec.decodedTokens - codec0.decodedTokens) / OPS,
    'ops/s': OPS / seconds,
    'event-loop p99 ms': histogram.percentile(99) / 1e6,
    'host MB held': s.host.storedBytes / 1e6,
    'disk MB held': s.disk.storedBytes / 1e6,
    'mean ratio': s.meanRatio ?? NaN,
    misses,
  };
}

console.log(`generating ${SESSIONS} sessions of ${TOKENS} tokens (${layout.layers} layers x ${layout.kvHeads} x ${layout.headDim}, f16)`);
const sessions = Array.from({ length: SESSIONS }, (_, i) => withDtype(syntheticCache({ layout: { ...layout, dtype: 'f32' }, tokens: TOKENS, seed: 10 + i }), 'f16'));
const profile = await calibrate(sessions.slice(0, 8), { ratio: 16, windowTokens: 32 });
const rows = [];
for (const compression of ['kvtc', 'none'] as const) {
  console.log(`running ${OPS} operations with ${CLIENTS} clients, lower tiers: ${compression}`);
  rows.push(await run(compression, sessions, profile));
}
const cols = Object.keys(rows[0]!);
console.log(`\nZipf(1.1) over ${SESSIONS} sessions, ${OPS} ops, ${CLIENTS} concurrent clients; device and host budgets 10% of the raw working set each; ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores`);
console.log('| metric | kvtc | raw |');
console.log('|---|---|---|');
for (const c of cols.slice(1)) {
  const f = (v: unknown) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v));
  console.log(`| ${c} | ${f((rows[0] as Record<string, unknown>)[c])} | ${f((rows[1] as Record<string, unknown>)[c])} |`);
}
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/store.json', import.meta.url), JSON.stringify({ date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length, quick, rows }, null, 2));
console.log('\nwrote bench/results/store.json');
