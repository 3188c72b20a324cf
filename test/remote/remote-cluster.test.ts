// The remote tier on a 3-master Redis Cluster: a session's chunks spread over the shards.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteTier } from '../../src/store/remote-tier.js';
import { RedisCluster, redisServerMissing } from '../helpers/redis-server.js';
import { isWhole, makeSession } from '../helpers/remote-session.js';

const FP = '0123456789abcdef0123456789abcdef';

describe.skipIf(redisServerMissing !== undefined)(`remote tier on a 3-master cluster${redisServerMissing ? ` (skipped: ${redisServerMissing})` : ''}`, () => {
  let cluster: RedisCluster;
  const tiers: RemoteTier[] = [];

  beforeAll(async () => {
    cluster = await RedisCluster.start(3);
  });

  afterAll(async () => {
    for (const t of tiers) await t.close();
    await cluster?.stop();
  });

  it('spreads one session over every shard, and another tier (other seeds) reads it whole', async () => {
    const [n0, n1, n2] = cluster.nodes;
    const a = await RemoteTier.connect({ url: n0!.url, cluster: true, namespace: 'c' }, FP);
    const b = await RemoteTier.connect({ url: n2!.url, cluster: { nodes: [`127.0.0.1:${n1!.port}`, n2!.url] }, namespace: 'c' }, FP);
    tiers.push(a, b);
    const s = makeSession(1, 48, 2048);
    await a.putSession('sess', s.manifest, s.chunks);
    const g = await b.getSession('sess');
    expect(g.ok && isWhole(g, s)).toBe(true);
    expect(await b.hasSession('sess')).toBe(true);

    // Each master holds some of the chunks (48 keys with no hash tag over 3 masters).
    let total = 0;
    for (const node of cluster.nodes) {
      const r = new Redis({ port: node.port, host: '127.0.0.1' });
      const keys = await r.keys(`${a.keyPrefix}c:*`);
      r.disconnect();
      expect(keys.length).toBeGreaterThan(0);
      total += keys.length;
    }
    expect(total).toBe(48);
  });

  it('concurrent puts of one id on the cluster: one wins whole; a damaged chunk on a shard is corrupt', async () => {
    const a = await RemoteTier.connect({ url: cluster.nodes[0]!.url, cluster: true, namespace: 'c2' }, FP);
    const b = await RemoteTier.connect({ url: cluster.nodes[1]!.url, cluster: true, namespace: 'c2' }, FP);
    tiers.push(a, b);
    const sa = makeSession(2, 16, 1024);
    const sb = makeSession(3, 16, 1024);
    for (let i = 0; i < 5; i++) {
      await Promise.all([a.putSession('x', sa.manifest, sa.chunks), b.putSession('x', sb.manifest, sb.chunks)]);
      const g = await a.getSession('x');
      expect(g.ok && (isWhole(g, sa) || isWhole(g, sb))).toBe(true);
    }
    await a.putSession('y', sa.manifest, sa.chunks);
    const key = a.chunkKey(sa.chunks[5]!.key);
    for (const node of cluster.nodes) {
      const r = new Redis({ port: node.port, host: '127.0.0.1' });
      if ((await r.keys(key)).length === 1) await r.setrange(key, 100, 'damage');
      r.disconnect();
    }
    expect(await b.getSession('y')).toMatchObject({ ok: false, reason: 'corrupt' });
  });

  it('a master killed: gets of sessions on it miss fast, nothing wrong is served (last: it breaks the cluster)', async () => {
    const t = await RemoteTier.connect({ url: cluster.nodes[0]!.url, cluster: true, namespace: 'c3', timeoutMs: 1500 }, FP);
    tiers.push(t);
    const errors: unknown[] = [];
    t.on('error', (e) => errors.push(e));
    const sessions = Array.from({ length: 6 }, (_, i) => makeSession(10 + i, 12, 512));
    for (const [i, s] of sessions.entries()) await t.putSession(`s${i}`, s.manifest, s.chunks);
    await cluster.nodes[2]!.kill('SIGKILL');
    // Every session has chunks on the dead master (12 chunks over 3 shards): each get is a miss.
    for (const [i, s] of sessions.entries()) {
      const g = await t.getSession(`s${i}`);
      expect(g.ok ? `served ${isWhole(g, s) ? 'whole' : 'WRONG'}` : g.reason).toMatch(/^(unavailable|timeout)$/);
    }
    const s = makeSession(99, 12, 512);
    await expect(t.putSession('new', s.manifest, s.chunks)).rejects.toMatchObject({ code: 'E_IO' });
    expect(errors.length).toBeGreaterThan(0);
  });
});
