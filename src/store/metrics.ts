/**
 * Opt-in Prometheus metrics for a KvStore (prom-client): tier bytes and entries (read at scrape
 * time), hits and misses per tier, demotions / spills / promotions / evictions / expiries /
 * corrupt records, and get-latency histograms per tier.
 *
 *   const registry = new Registry();
 *   registerStoreMetrics(store, { registry });
 *   app.get('/metrics', async (_, res) => res.type(registry.contentType).send(await registry.metrics()));
 */
import { Counter, Gauge, Histogram, type Registry, register as defaultRegistry } from 'prom-client';
import type { KvStore, StoreEventName } from './store.js';

export interface StoreMetricsOptions {
  /** Registry to register into. Default: prom-client's global registry. */
  registry?: Registry;
  /** Metric name prefix. Default 'kvtc_'. */
  prefix?: string;
  /** Extra labels on every metric (e.g. { store: 'chat' } when a process runs several stores). */
  labels?: Record<string, string>;
}

/** Registers the store's metrics; returns a function that stops updating them. */
export function registerStoreMetrics(store: KvStore, options: StoreMetricsOptions = {}): () => void {
  const registers = [options.registry ?? defaultRegistry];
  const p = options.prefix ?? 'kvtc_';
  const base = options.labels ?? {};
  const baseNames = Object.keys(base);
  const tiers = ['device', 'host', 'disk'] as const;
  new Gauge({
    name: `${p}tier_bytes`,
    help: 'Bytes held per tier (kind="stored": what the tier holds; kind="raw": the sessions raw size)',
    labelNames: [...baseNames, 'tier', 'kind'],
    registers,
    collect() {
      const s = store.stats();
      for (const t of tiers) {
        this.set({ ...base, tier: t, kind: 'stored' }, s[t].storedBytes);
        this.set({ ...base, tier: t, kind: 'raw' }, s[t].rawBytes);
      }
    },
  });
  new Gauge({
    name: `${p}tier_entries`,
    help: 'Sessions per tier',
    labelNames: [...baseNames, 'tier'],
    registers,
    collect() {
      const s = store.stats();
      for (const t of tiers) this.set({ ...base, tier: t }, s[t].entries);
    },
  });
  const hits = new Counter({ name: `${p}hits_total`, help: 'get() hits per tier', labelNames: [...baseNames, 'tier'], registers });
  const misses = new Counter({ name: `${p}misses_total`, help: 'get() misses', labelNames: baseNames, registers });
  const moves = new Counter({ name: `${p}moves_total`, help: 'Tier moves and removals by kind', labelNames: [...baseNames, 'kind'], registers });
  const latency = new Histogram({
    name: `${p}get_seconds`,
    help: 'get() latency per tier it was served from',
    labelNames: [...baseNames, 'tier'],
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  });
  const listeners: [StoreEventName, (e: { from?: string; ms?: number }) => void][] = [
    ['hit', (e) => {
      hits.inc({ ...base, tier: e.from! });
      latency.observe({ ...base, tier: e.from! }, (e.ms ?? 0) / 1000);
    }],
    ['miss', () => misses.inc(base)],
    ...(['demote', 'spill', 'promote', 'evict', 'expire', 'corrupt', 'delete'] as const).map(
      (kind) => [kind, () => moves.inc({ ...base, kind })] as [StoreEventName, () => void],
    ),
  ];
  for (const [name, fn] of listeners) store.on(name, fn);
  return () => {
    for (const [name, fn] of listeners) store.off(name, fn);
  };
}
