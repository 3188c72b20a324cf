import { describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { registerStoreMetrics } from '../../src/index.js';
import { session, storeKit } from '../helpers/store.js';

const { openStore } = storeKit();

describe('Prometheus metrics', () => {
  it('expose tier bytes and entries, hits and misses per tier, moves and get latency', async () => {
    const store = await openStore();
    const registry = new Registry();
    const stop = registerStoreMetrics(store, { registry, labels: { store: 'test' } });
    await store.put('a', session(1));
    await store.get('a');
    await store.evict('a');
    await store.get('a');
    await store.get('missing');
    const text = await registry.metrics();
    expect(text).toContain('kvtc_hits_total{store="test",tier="device"} 1');
    expect(text).toContain('kvtc_hits_total{store="test",tier="host"} 1');
    expect(text).toContain('kvtc_misses_total{store="test"} 1');
    expect(text).toContain('kvtc_moves_total{store="test",kind="demote"} 1');
    expect(text).toContain('kvtc_moves_total{store="test",kind="promote"} 1');
    expect(text).toMatch(/kvtc_tier_entries\{store="test",tier="device"\} 1/);
    expect(text).toMatch(/kvtc_tier_bytes\{store="test",tier="device",kind="raw"\} \d+/);
    expect(text).toContain('kvtc_get_seconds_count{store="test",tier="host"} 1');
    stop();
    await store.get('a');
    expect(await registry.metrics()).toContain('kvtc_hits_total{store="test",tier="device"} 1');
  });
});
