/**
 * Tier policies behind the Policy interface: the default LRU+priority policy, and a caller's own
 * policy deciding victims, idleness and admission.
 */
import { describe, expect, it } from 'vitest';
import { LruPriorityPolicy, type Policy, type PolicyEntry } from '../../src/index.js';
import { session, sessionBytes, storeKit } from '../helpers/store.js';

const { openStore } = storeKit();

/** Demotes the largest hot session first; never admits sessions over 100 tokens; host idle after 0 ms. */
class LargestFirst extends LruPriorityPolicy implements Policy {
  readonly asked: string[] = [];
  override deviceVictim(candidates: Iterable<PolicyEntry>): string | undefined {
    let best: PolicyEntry | undefined;
    for (const e of candidates) if (!best || e.bytes > best.bytes) best = e;
    if (best) this.asked.push(best.id);
    return best?.id;
  }
  override admit(entry: PolicyEntry): boolean {
    return entry.tokens <= 100;
  }
}

describe('policy', () => {
  it("the store follows a caller's policy for victims and admission", async () => {
    const policy = new LargestFirst();
    const store = await openStore({ policy, tiers: { device: { capacityBytes: sessionBytes(64) + sessionBytes(80) + 4096 } } });
    await store.put('big', session(1, 80));
    await store.put('small', session(2, 64));
    await store.put('third', session(3, 64)); // over capacity: LRU would demote 'big' too, by size it is 'big'
    expect(store.has('big')).toBe('host');
    expect(store.has('small')).toBe('device');
    expect(policy.asked).toEqual(['big']);
    await store.put('huge', session(4, 101)); // not admitted: straight to the host tier
    expect(store.has('huge')).toBe('host');
  });

  it('the default policy demotes lower priority first, then least recently used', async () => {
    const store = await openStore({ tiers: { device: { capacityBytes: 2 * sessionBytes() + 4096 } } });
    await store.put('old-high', session(1), { priority: 2 });
    await store.put('new-low', session(2), { priority: -1 });
    await store.put('newest', session(3));
    expect(store.has('new-low')).toBe('host');
    expect(store.has('old-high')).toBe('device');
  });

  it('a policy object without the four methods is E_OPTIONS', async () => {
    await expect(openStore({ policy: { deviceVictim: () => undefined } as unknown as Policy })).rejects.toMatchObject({ code: 'E_OPTIONS' });
  });
});
