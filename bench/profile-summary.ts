/**
 * Summarizes a main-thread CPU profile (a .cpuprofile, e.g. from `store.bench.ts --cpu-prof=DIR`):
 * busy time, the functions holding the thread (self and inclusive), and the same restricted to
 * the event-loop stalls — contiguous non-idle stretches longer than `--stall-ms` (default 5) —
 * which are what an event-loop delay percentile sees. Development tooling, not a benchmark.
 *
 *   npx tsx bench/profile-summary.ts <file.cpuprofile> [--top=30] [--stall-ms=5]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (!file) {
  console.error('usage: npx tsx bench/profile-summary.ts <file.cpuprofile> [--top=30] [--stall-ms=5]');
  process.exit(2);
}
const arg = (name: string, def: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? def);
const top = arg('top', 30);
const stallUs = arg('stall-ms', 5) * 1000;

const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const label = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`;
const isIdle = (n: ProfileNode) => n.callFrame.functionName === '(idle)';

// Sample i covers [t_i, t_{i+1}).
const times: number[] = [];
let t = p.startTime;
for (const d of p.timeDeltas) times.push((t += d));
const dur = (i: number) => (i + 1 < times.length ? times[i + 1]! - times[i]! : 0);

/** Stretches of consecutive non-idle samples: [first, end) sample indexes and their length in µs. */
const stretches: { a: number; b: number; us: number }[] = [];
for (let i = 0; i < p.samples.length; ) {
  if (isIdle(byId.get(p.samples[i]!)!)) {
    i++;
    continue;
  }
  let j = i;
  let us = 0;
  while (j < p.samples.length && !isIdle(byId.get(p.samples[j]!)!)) us += dur(j++);
  stretches.push({ a: i, b: j, us });
  i = j;
}

function tally(indexes: Iterable<number>): { busy: number; self: Map<string, number>; incl: Map<string, number> } {
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  let busy = 0;
  for (const i of indexes) {
    const n = byId.get(p.samples[i]!)!;
    const d = dur(i);
    busy += d;
    self.set(label(n), (self.get(label(n)) ?? 0) + d);
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const l = label(byId.get(id)!);
      if (!seen.has(l)) incl.set(l, (incl.get(l) ?? 0) + d);
      seen.add(l);
    }
  }
  return { busy, self, incl };
}

function print(title: string, r: ReturnType<typeof tally>): void {
  console.log(`\n## ${title}: ${(r.busy / 1000).toFixed(1)} ms busy`);
  console.log('self ms | function');
  for (const [k, v] of [...r.self].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${(v / 1000).toFixed(1).padStart(7)} | ${k}`);
  console.log('inclusive ms | function');
  for (const [k, v] of [...r.incl].sort((x, y) => y[1] - x[1]).slice(0, top)) console.log(`${(v / 1000).toFixed(1).padStart(7)} | ${k}`);
}

const all = function* () {
  for (const s of stretches) for (let i = s.a; i < s.b; i++) yield i;
};
const stalls = stretches.filter((s) => s.us > stallUs);
const inStalls = function* () {
  for (const s of stalls) for (let i = s.a; i < s.b; i++) yield i;
};
const wall = (p.endTime - p.startTime) / 1000;
console.log(`${file}: ${wall.toFixed(0)} ms profiled; ${stalls.length} stretches > ${stallUs / 1000} ms (longest ${(Math.max(0, ...stretches.map((s) => s.us)) / 1000).toFixed(1)} ms)`);
print('all busy time', tally(all()));
print(`stretches > ${stallUs / 1000} ms`, tally(inStalls()));
