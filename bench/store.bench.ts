/**
 * Store benchmark: a few hundred synthetic sessions under a Zipf access pattern with tight
 * device and host budgets, the same workload run twice side by side — the lower tiers holding
 * kvtc blobs, and holding raw (uncompressed) blobs — so the payoff of compression at a fixed
 * memory budget shows. Prints hit rate and get latency per tier (as the store reports it, and as
 * the caller sees it around each get), tokens through the codec per operation, ops/s and the
 * event-loop delay p99 while restores run.
 *
 * Then a multi-turn workload (the chunked store's case): sessions grow by 32–128 tokens per turn
 * and are put again; 30% start with one of 4 shared system prompts of 1–2K tokens. Side by side:
 * this store (chunks), the single-blob store as it was (`blobPerSession`), and raw lower tiers.
 * Writes bench/results/store.json. `--quick` runs smaller workloads; `--only=zipf|multiturn`;
 * `--mode=<part of a store's name>` (e.g. `blob`, `raw`) runs only those multi-turn stores (profiling).
 * `--into` makes every client get into a cache of its own, reused (an engine's KV buffers: the
 * `into` get option) instead of a new copy per get; its results go to `rowsInto`/`multiTurnInto`.
 * `--rate=<turns/s>` offers the multi-turn turns at that rate (open loop: turn n starts n/rate
 * after the window opens, or at once when the clients are behind) instead of back to back, so
 * latencies show the store below saturation, not the queue of a saturated machine; its results
 * go to `multiTurnPaced`/`multiTurnPacedInto`. The multi-turn window opens after unmeasured
 * warm-up turns (the ones that start the second restore worker).
 * `--cpu-prof=<dir>` writes a main-thread CPU profile of each measured window (not the setup) to
 * `<dir>/<workload>-<store>.cpuprofile`; `npx tsx bench/profile-summary.ts <file>` summarizes one.
 * Each store of a workload runs in a fresh process of its own (`--one=<workload>:<index>`, which
 * prints its rows): what one run leaves behind — a grown heap and RSS, a warm JIT, a filled
 * buffer pool — tilted the figures of the next (the first store measured ran ~30% more CPU per
 * turn than the same store run alone). `--mode` runs its stores in this process.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Session } from 'node:inspector/promises';
import { KvStore, calibrate, type GetStatus, type KvCache, type KvLayout } from '../src/index.js';
import { mulberry32 } from '../test/helpers/synthetic.js';
import * as internals from '../src/internal/testing.js';
import { syntheticCache, withDtype } from '../test/helpers/synthetic.js';

const quick = process.argv.includes('--quick');
const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7);
const profDir = process.argv.find((a) => a.startsWith('--cpu-prof='))?.slice(11);
const useInto = process.argv.includes('--into');
/** --rate=<turns/s>: the multi-turn clients start turns at this offered rate (open loop) instead of back to back. */
const rate = Number(process.argv.find((a) => a.startsWith('--rate='))?.slice(7) ?? NaN);
const paced = Number.isFinite(rate) && rate > 0;
const one = process.argv.find((a) => a.startsWith('--one='))?.slice(6);
const oneIndex = (workload: string) => (one?.startsWith(`${workload}:`) ? Number(one.slice(workload.length + 1)) : undefined);

/** The rows of each store of a workload, each run in a fresh process (see the file comment). */
function isolated(workload: string, stores: number): { rows: Record<string, unknown>[]; describe: string } {
  const rows: Record<string, unknown>[] = [];
  let describe = '';
  const passed = process.argv.slice(2).filter((a) => !a.startsWith('--one=') && !a.startsWith('--only='));
  for (let i = 0; i < stores; i++) {
    const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), `--one=${workload}:${i}`, ...passed], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = out.split('\n');
    const r = JSON.parse(lines.find((l) => l.startsWith('ROWS '))!.slice(5)) as { rows: Record<string, unknown>[]; describe: string };
    rows.push(...r.rows);
    describe = r.describe;
    process.stdout.write(lines.filter((l) => !l.startsWith('ROWS ')).join('\n'));
  }
  return { rows, describe };
}

/** A client's own cache of `tokens` rows (an engine's KV buffers), for gets with `into` (--into). */
function engineCache(l: KvLayout, tokens: number): KvCache {
  const n = tokens * l.kvHeads * l.headDim;
  const arr = () => (l.dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n));
  return { layout: l, tokens, positions: new Int32Array(tokens), keys: Array.from({ length: l.layers }, arr), values: Array.from({ length: l.layers }, arr) };
}

/** The main thread's CPU profile of one measured window (--cpu-prof): started now, written by stop(). */
async function profileWindow(name: string): Promise<{ stop(): Promise<void> }> {
  if (profDir === undefined) return { stop: async () => undefined };
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  return {
    async stop() {
      const { profile } = await session.post('Profiler.stop');
      mkdirSync(profDir, { recursive: true });
      writeFileSync(join(profDir, `${name.replace(/[^a-z0-9]+/gi, '-')}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}
const SESSIONS = quick ? 60 : 240;
const OPS = quick ? 400 : 2400;
const CLIENTS = 4;
const TOKENS = 256;
const layout: KvLayout = { layers: 8, kvHeads: 4, headDim: 64, dtype: 'f16', rope: { theta: 10000, style: 'neox' } };

/**
 * The main thread's own time (Linux: /proc/self/task/<pid>/schedstat): on the CPU, and waiting
 * for one (runnable but not running: another thread or process had the core). Unlike the
 * event-loop delay, the first stays meaningful on a loaded machine. undefined elsewhere.
 */
function mainThreadTimes(): { cpuMs: number; waitMs: number } | undefined {
  try {
    const [cpu, wait] = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number);
    return { cpuMs: cpu! / 1e6, waitMs: wait! / 1e6 };
  } catch {
    return undefined;
  }
}

/** Share of the store's cache buffers that were recycled ones (buffer-pool.ts; NaN where the store has no pool). */
function reusedPercent(store: KvStore): number {
  const pool = (internals as { bufferPool?: (s: KvStore) => { counts: { reused: number; allocated: number } } }).bufferPool?.(store);
  return pool ? (100 * pool.counts.reused) / Math.max(1, pool.counts.reused + pool.counts.allocated) : NaN;
}

/** Main-thread GC pauses while a workload runs (the event loop's delay has this as one cause). */
function watchGc(): { stop(): { 'GC pauses > 5 ms': number; 'GC pause max ms': number; 'GC ms / s': number } } {
  const pauses: number[] = [];
  const t0 = performance.now();
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) pauses.push(e.duration);
  });
  obs.observe({ entryTypes: ['gc'] });
  return {
    stop() {
      obs.disconnect();
      const s = (performance.now() - t0) / 1000;
      return { 'GC pauses > 5 ms': pauses.filter((d) => d > 5).length, 'GC pause max ms': Math.max(0, ...pauses), 'GC ms / s': pauses.reduce((a, b) => a + b, 0) / s };
    },
  };
}

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
  const gc = watchGc();
  const prof = await profileWindow(`zipf-${compression}`);
  const main0 = mainThreadTimes();
  const t0 = performance.now();
  let done = 0;
  let misses = 0;
  const seen: Record<string, number[]> = { device: [], host: [], disk: [] };
  const codec0 = store.stats().codec;
  const client = async () => {
    const into = useInto ? engineCache(sessions[0]!.layout, TOKENS) : undefined;
    while (done < OPS) {
      done++;
      const i = pick();
      const status: GetStatus = {};
      const g0 = performance.now();
      const c = await store.get(`s${i}`, { status, ...(into ? { into } : {}) });
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
  const main1 = mainThreadTimes();
  const rss = process.memoryUsage.rss();
  histogram.disable();
  const gcs = gc.stop();
  await prof.stop();
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
    'main-thread CPU ms / op': main0 && main1 ? (main1.cpuMs - main0.cpuMs) / OPS : NaN,
    'main-thread runnable-wait ms / op': main0 && main1 ? (main1.waitMs - main0.waitMs) / OPS : NaN,
    ...gcs,
    'RSS MB (end)': rss / 1e6,
    'cache buffers recycled %': reusedPercent(store),
    'host MB held': s.host.storedBytes / 1e6,
    'disk MB held': s.disk.storedBytes / 1e6,
    'mean ratio': s.meanRatio ?? NaN,
    misses,
  };
}

// A run of one workload (--only) keeps the other's last results.
const resultsFile = new URL('./results/store.json', import.meta.url);
const previous = (() => {
  try {
    return JSON.parse(readFileSync(resultsFile, 'utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
})();
const results: Record<string, unknown> = { ...previous, date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length, quick };
const fmt = (v: unknown) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v));
function table(rows: Record<string, unknown>[], names: string[]): void {
  console.log(`| metric | ${names.join(' | ')} |`);
  console.log(`|---|${names.map(() => '---').join('|')}|`);
  for (const c of Object.keys(rows[0]!).slice(1)) console.log(`| ${c} | ${rows.map((r) => fmt(r[c])).join(' | ')} |`);
}

const ZIPF_STORES = ['kvtc', 'none'] as const;
const MULTI_TURN_STORES = [
  { store: 'chunks (kvtc)', options: {} },
  { store: 'blob per session (kvtc)', options: { blobPerSession: true } },
  { store: 'chunks (raw)', options: { compression: 'none' as const } },
];

if (oneIndex('zipf') !== undefined) {
  console.log(`generating ${SESSIONS} sessions of ${TOKENS} tokens (${layout.layers} layers x ${layout.kvHeads} x ${layout.headDim}, f16)`);
  const sessions = Array.from({ length: SESSIONS }, (_, i) => withDtype(syntheticCache({ layout: { ...layout, dtype: 'f32' }, tokens: TOKENS, seed: 10 + i }), 'f16'));
  const profile = await calibrate(sessions.slice(0, 8), { ratio: 16, windowTokens: 32 });
  const compression = ZIPF_STORES[oneIndex('zipf')!]!;
  console.log(`running ${OPS} operations with ${CLIENTS} clients, lower tiers: ${compression}`);
  console.log(`ROWS ${JSON.stringify({ rows: [await run(compression, sessions, profile)], describe: '' })}`);
  process.exit(0);
}
if (oneIndex('multiturn') !== undefined) {
  console.log(`ROWS ${JSON.stringify(await multiTurn())}`);
  process.exit(0);
}

if (only === undefined || only === 'zipf') {
  const { rows } = isolated('zipf', ZIPF_STORES.length);
  console.log(`\nZipf(1.1) over ${SESSIONS} sessions, ${OPS} ops, ${CLIENTS} concurrent clients${useInto ? ' (gets into a cache of their own)' : ''}; device and host budgets 10% of the raw working set each; ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores`);
  table(rows, ['kvtc', 'raw']);
  // A run with --into keeps the default run's results beside its own.
  results[useInto ? 'rowsInto' : 'rows'] = rows;
}

if (only === undefined || only === 'multiturn') {
  const pickMode = process.argv.some((a) => a.startsWith('--mode='));
  const { rows, describe } = pickMode ? await multiTurn() : isolated('multiturn', MULTI_TURN_STORES.length);
  // Memory against the single-blob store on the same workload (the footprints of the end state).
  const blobRow = rows.find((r) => r.store === 'blob per session (kvtc)');
  for (const r of rows) {
    const f = r['footprint MB (every session on disk, end)'] as number, w = r['of which raw windows MB'] as number;
    if (!blobRow) continue;
    const bf = blobRow['footprint MB (every session on disk, end)'] as number, bw = blobRow['of which raw windows MB'] as number;
    r['footprint: blob per session / this'] = bf / f;
    r['footprint without the raw windows: blob per session / this'] = (bf - bw) / (f - w);
  }
  console.log(`\n${describe}; ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores`);
  table(rows, rows.map((r) => String(r['store'])));
  results[paced ? (useInto ? 'multiTurnPacedInto' : 'multiTurnPaced') : useInto ? 'multiTurnInto' : 'multiTurn'] = rows;
}

mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(resultsFile, JSON.stringify(results, null, 2));
console.log('\nwrote bench/results/store.json');

// ------------------------------------------------------------------------------------------------
// multi-turn workload

async function multiTurn(): Promise<{ rows: Record<string, unknown>[]; describe: string }> {
  const mtLayout: KvLayout = { layers: 4, kvHeads: 4, headDim: 64, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
  const N = quick ? 24 : 60;
  const TURNS = quick ? 200 : 1000;
  const WARMUP_TURNS = quick ? 40 : 120;
  const OWN_MAX = quick ? 480 : 800; // a session's own tokens (its first prompt and its turns)
  const CHUNK = 256;
  const rand = mulberry32(2026);
  const f16 = (c: KvCache) => withDtype(c, 'f16');
  console.log(`generating the multi-turn workload: ${N} sessions, 4 shared prompts (${mtLayout.layers} layers x ${mtLayout.kvHeads} x ${mtLayout.headDim}, f16)`);
  const promptLens = [1024, 1365, 1707, 2048];
  const prompts = promptLens.map((n, i) => f16(syntheticCache({ layout: mtLayout, tokens: n, seed: 900 + i })));
  interface Sess { prompt: number; promptTokens: number; own: KvCache; ownIds: Int32Array; len: number }
  const sessions: Sess[] = Array.from({ length: N }, (_, i) => {
    const shared = rand() < 0.3;
    const prompt = shared ? Math.floor(rand() * 4) : -1;
    const promptTokens = shared ? promptLens[prompt]! : 0;
    const own = f16(syntheticCache({ layout: mtLayout, tokens: OWN_MAX, seed: 5000 + i, positionStart: promptTokens }));
    const first = shared ? 32 + Math.floor(rand() * 96) : 64 + Math.floor(rand() * 192);
    return { prompt, promptTokens, own, ownIds: Int32Array.from({ length: OWN_MAX }, (_, t) => 100_000 + i * 10_000 + t), len: promptTokens + first };
  });
  const promptIds = promptLens.map((n, p) => Int32Array.from({ length: n }, (_, t) => p * 5000 + t));
  const rv = mtLayout.kvHeads * mtLayout.headDim;
  // Each session's whole data, laid out once (its prompt's tokens, then its own): a turn's cache is
  // a view of its first tokens, so the workload itself does no copying on the event loop.
  const whole = sessions.map((s) => {
    const p = s.prompt >= 0 ? prompts[s.prompt]! : undefined;
    const P = s.promptTokens;
    const join = (pa: readonly ArrayBufferView[] | undefined, oa: readonly ArrayBufferView[]) =>
      oa.map((o, l) => {
        const out = new Uint16Array((P + OWN_MAX) * rv);
        if (pa) out.set((pa[l] as Uint16Array).subarray(0, P * rv));
        out.set(o as Uint16Array, P * rv);
        return out;
      });
    const tokens = new Int32Array(P + OWN_MAX);
    if (p) tokens.set(promptIds[s.prompt]!.subarray(0, P));
    tokens.set(s.ownIds, P);
    return { keys: join(p?.keys, s.own.keys), values: join(p?.values, s.own.values), tokens };
  });
  /** Session i at `len` tokens (what an engine would hold): views of its data. */
  const cacheOf = (i: number, len: number): { cache: KvCache; tokens: Int32Array } => {
    const w = whole[i]!;
    const cut = (a: Uint16Array) => a.subarray(0, len * rv);
    return { cache: { layout: { ...mtLayout, dtype: 'f16' }, tokens: len, keys: w.keys.map(cut), values: w.values.map(cut) }, tokens: w.tokens.subarray(0, len) };
  };
  const WINDOW = 32;
  const profile = await calibrate([...prompts.slice(0, 2), sessions[0]!.own], { ratio: 16, windowTokens: WINDOW });
  const rawPerToken = 2 * mtLayout.layers * rv * 2;
  const avgTokens = sessions.reduce((n, s) => n + s.promptTokens + OWN_MAX / 2, 0) / N;
  const workingSet = N * avgTokens * rawPerToken;
  const rows: Record<string, unknown>[] = [];
  const pick1 = process.argv.find((a) => a.startsWith('--mode='))?.slice(7);
  const index = oneIndex('multiturn');
  for (const mode of MULTI_TURN_STORES.filter((m, i) => (pick1 === undefined || m.store.includes(pick1)) && (index === undefined || i === index))) {
    console.log(`running ${TURNS} turns, ${mode.store}`);
    const dir = await mkdtemp(join(tmpdir(), 'kvtc-bench-mt-'));
    const store = await KvStore.open({
      profile,
      path: dir,
      chunkTokens: CHUNK,
      ...mode.options,
      tiers: { device: { capacityBytes: Math.floor(workingSet * 0.1), idleMs: 0 }, host: { capacityBytes: Math.floor(workingSet * 0.05), idleMs: 0 } },
      flushOnClose: false,
    });
    const state = sessions.map((s) => ({ ...s }));
    for (let i = 0; i < N; i++) {
      const { cache, tokens } = cacheOf(i, state[i]!.len);
      await store.put(`s${i}`, cache, { tokens });
    }
    await store.settled();
    const pick = zipf(N, 1.1, mulberry32(11));
    const seen: Record<string, number[]> = { device: [], host: [], disk: [] };
    // Sessions differ in size (shared prompts are long): latency per MB restored compares tiers and stores fairly.
    const perMb: Record<string, number[]> = { device: [], host: [], disk: [] };
    let appended = 0;
    let misses = 0;
    let peakHost = 0;
    let peakDisk = 0;
    let done = 0;
    let limit = 0;
    let record = false;
    const intos = Array.from({ length: CLIENTS }, () => (useInto ? engineCache({ ...mtLayout, dtype: 'f16' }, Math.max(...promptLens) + OWN_MAX) : undefined));
    let paceFrom = 0;
    const client = async (into: KvCache | undefined) => {
      while (done < limit) {
        const n = done++;
        // Paced (--rate): turn n of the measured window starts no earlier than n / rate after it began.
        const due = record && paced ? paceFrom + ((n - WARMUP_TURNS) * 1000) / rate : 0;
        if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
        const i = pick();
        const s = state[i]!;
        const status: GetStatus = {};
        const g0 = performance.now();
        const got = await store.get(`s${i}`, { status, ...(into ? { into } : {}) });
        const ms = performance.now() - g0;
        if (record && status.tier) seen[status.tier]!.push(ms);
        if (record && got && status.tier) perMb[status.tier]!.push(ms / ((got.tokens * rawPerToken) / 1e6));
        if (record && !got) misses++;
        // The turn: 32-128 new tokens (a session that reached its length starts over, shorter).
        let len = s.len + 32 + Math.floor(rand() * 97);
        if (len - s.promptTokens > OWN_MAX) len = s.promptTokens + 64;
        if (record) appended += Math.max(0, len - s.len);
        s.len = len;
        const { cache, tokens } = cacheOf(i, len);
        await store.put(`s${i}`, cache, { tokens });
        const st = store.stats();
        peakHost = Math.max(peakHost, st.host.storedBytes);
        peakDisk = Math.max(peakDisk, st.disk.storedBytes);
      }
    };
    // Warm-up, not measured: the turns that start the store's second restore worker and its JIT.
    limit = WARMUP_TURNS;
    await Promise.all(intos.map(client));
    await store.settled();
    const histogram = monitorEventLoopDelay({ resolution: 1 });
    histogram.enable();
    const gc = watchGc();
    const prof = await profileWindow(`multiturn-${mode.store}`);
    const codec0 = store.stats().codec;
    const cpu0 = process.cpuUsage();
    const main0 = mainThreadTimes();
    const t0 = performance.now();
    paceFrom = t0;
    record = true;
    limit = WARMUP_TURNS + TURNS;
    await Promise.all(intos.map(client));
    await store.settled();
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const main1 = mainThreadTimes();
    const rss = process.memoryUsage.rss();
    histogram.disable();
    const gcs = gc.stop();
    await prof.stop();
    const st = store.stats();
    const pct = (v: number[], p: number) => (v.length ? [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor((p / 100) * v.length))]! : NaN);
    const hits = st.device.hits + st.host.hits + st.disk.hits;
    // What sharing alone could save at the end state: every session's tokens held once each (one
    // blob per session) against each shared prompt's tokens held once in all (chunks).
    const usedPrompts = new Set(state.filter((s) => s.prompt >= 0).map((s) => s.prompt));
    const perSessionTokens = state.reduce((n, s) => n + s.len, 0);
    const uniqueTokens = state.reduce((n, s) => n + s.len - s.promptTokens, 0) + [...usedPrompts].reduce((n, p) => n + promptLens[p]!, 0);
    // The footprint of the end state: every session evicted to disk (unbounded), so no tier's
    // capacity decides what is counted. (After the measured window: it encodes the hot ones.)
    for (let i = 0; i < N; i++) await store.evict(`s${i}`, { to: 'disk' });
    await store.settled();
    const all = store.stats();
    const windowBytes = state.reduce((n, s) => n + Math.min(s.len, WINDOW) * rawPerToken, 0);
    rows.push({
      store: mode.store,
      'device hit %': (100 * st.device.hits) / hits,
      'host hit %': (100 * st.host.hits) / hits,
      'disk hit %': (100 * st.disk.hits) / hits,
      'caller device p50 ms': pct(seen.device!, 50),
      'caller host p50 ms': pct(seen.host!, 50),
      'caller host p99 ms': pct(seen.host!, 99),
      'caller disk p50 ms': pct(seen.disk!, 50),
      'caller disk p99 ms': pct(seen.disk!, 99),
      'caller host p50 ms per raw MB': pct(perMb.host!, 50),
      'caller disk p50 ms per raw MB': pct(perMb.disk!, 50),
      'appended tokens / turn': appended / TURNS,
      'encoded tokens / turn': (st.codec.encodedTokens - codec0.encodedTokens) / TURNS,
      'decoded tokens / turn': (st.codec.decodedTokens - codec0.decodedTokens) / TURNS,
      'tokens / turn copied from a hot session with the prefix': (st.codec.copiedTokens - codec0.copiedTokens) / TURNS,
      'CPU ms / turn (all threads)': (cpu.user + cpu.system) / 1000 / TURNS,
      'main-thread CPU ms / turn': main0 && main1 ? (main1.cpuMs - main0.cpuMs) / TURNS : NaN,
      'main-thread runnable-wait ms / turn': main0 && main1 ? (main1.waitMs - main0.waitMs) / TURNS : NaN,
      'turns/s': TURNS / seconds,
      'event-loop p99 ms': histogram.percentile(99) / 1e6,
      ...gcs,
      'RSS MB (end)': rss / 1e6,
      'cache buffers recycled %': reusedPercent(store),
      'host MB held (end)': st.host.storedBytes / 1e6,
      'disk MB held (end)': st.disk.storedBytes / 1e6,
      'host+disk MB (end)': (st.host.storedBytes + st.disk.storedBytes) / 1e6,
      'peak host MB': peakHost / 1e6,
      'peak disk MB': peakDisk / 1e6,
      'chunk refs / chunks': st.chunks.count > 0 ? st.chunks.refs / st.chunks.count : NaN,
      'MB saved by sharing': st.chunks.bytesSaved / 1e6,
      'tokens per session / unique tokens (the most sharing can save)': perSessionTokens / uniqueTokens,
      'footprint MB (every session on disk, end)': (all.host.storedBytes + all.disk.storedBytes) / 1e6,
      // Both layouts keep every session's recent window raw (lossless, never shared).
      'of which raw windows MB': windowBytes / 1e6,
      misses,
    });
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
  return {
    rows,
    describe: `Multi-turn${useInto ? ' (gets into a cache of their own)' : ''}: ${N} sessions (30% on one of 4 shared prompts of 1024-2048 tokens), ${TURNS} turns of +32-128 tokens by ${CLIENTS} clients under Zipf(1.1)${paced ? `, offered at ${rate} turns/s` : ', back to back'} after ${WARMUP_TURNS} unmeasured turns; chunkTokens ${CHUNK}, window 32; device budget 10% and host 5% of the raw working set (${(workingSet / 1e6).toFixed(0)} MB)`,
  };
}
