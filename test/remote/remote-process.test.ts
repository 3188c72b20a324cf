// The remote tier shared by separate processes: a child writes, this process reads; a child
// killed with SIGKILL in the middle of a put leaves no session visible.
import { Redis } from 'ioredis';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteTier } from '../../src/store/remote-tier.js';
import { RedisServer, SlowProxy, redisServerMissing } from '../helpers/redis-server.js';
import { isWhole, makeSession } from '../helpers/remote-session.js';

const FP = '0123456789abcdef0123456789abcdef';

interface ChildArgs {
  url: string;
  namespace: string;
  id: string;
  seed: number;
  chunks: number;
  bytes: number;
  maxInFlight: number;
}

/** Starts test/remote/writer-child.ts; `lines` collects what it prints. */
function startWriter(a: ChildArgs): { child: ChildProcess; lines: string[]; exited: Promise<number | null> } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/remote/writer-child.ts', JSON.stringify({ ...a, fingerprint: FP })], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let err = '';
  child.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      if (code !== 0 && code !== null) lines.push(`stderr: ${err}`);
      resolve(code);
    }),
  );
  return { child, lines, exited };
}

async function until(cond: () => boolean | Promise<boolean>, tries = 1500): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return true;
    await sleep(20);
  }
  return false;
}

describe.skipIf(redisServerMissing !== undefined)(`remote tier across processes${redisServerMissing ? ` (skipped: ${redisServerMissing})` : ''}`, () => {
  let server: RedisServer;
  let raw: Redis;
  let reader: RemoteTier;

  beforeAll(async () => {
    server = await RedisServer.start();
    raw = new Redis({ port: server.port, host: '127.0.0.1' });
    reader = await RemoteTier.connect({ url: server.url, namespace: 'procs' }, FP);
  });

  afterAll(async () => {
    await reader?.close();
    raw?.disconnect();
    await server?.stop();
  });

  it('a session put by another process is read whole here', async () => {
    const w = startWriter({ url: server.url, namespace: 'procs', id: 'from-child', seed: 1, chunks: 16, bytes: 8192, maxInFlight: 8 });
    expect(await w.exited, w.lines.join('\n')).toBe(0);
    expect(w.lines).toContain('done');
    const g = await reader.getSession('from-child');
    expect(g.ok && isWhole(g, makeSession(1, 16, 8192))).toBe(true);
  });

  it('a writer killed with SIGKILL mid-put leaves no session visible, and its chunks carry leases', async () => {
    // The writer goes through a proxy that delays every packet, one command at a time, so the
    // put is slow enough to be caught between its first chunk and its manifest.
    const proxy = await SlowProxy.start(server.port, 15);
    try {
      const chunks = 200;
      const w = startWriter({ url: proxy.url, namespace: 'procs', id: 'killed', seed: 2, chunks, bytes: 4096, maxInFlight: 1 });
      const prefix = `${reader.keyPrefix}c:`;
      const count = async (): Promise<number> => (await raw.keys(`${prefix}*`)).length;
      const before = await count();
      expect(await until(async () => (await count()) >= before + 5)).toBe(true);
      w.child.kill('SIGKILL');
      expect(await w.exited).toBeNull();
      expect(w.lines).not.toContain('done');
      const written = (await count()) - before;
      // Caught mid-put: some chunks were written, not all.
      expect(written).toBeGreaterThanOrEqual(5);
      expect(written).toBeLessThan(chunks);
      expect(await raw.exists(reader.manifestKey('killed'))).toBe(0);
      expect(await reader.hasSession('killed')).toBe(false);
      expect(await reader.getSession('killed')).toMatchObject({ ok: false, reason: 'absent' });
      // The orphans are reclaimed by their leases: each expires (default ttl 24 h + 10 min grace).
      for (const k of await raw.keys(`${prefix}*`)) {
        const ttl = await raw.pttl(k);
        expect(ttl).toBeGreaterThan(0);
        expect(ttl).toBeLessThanOrEqual(86_400_000 + 600_000);
      }
      // Another process puts the same session afterwards: it completes, reusing what was written.
      const again = startWriter({ url: server.url, namespace: 'procs', id: 'killed', seed: 2, chunks, bytes: 4096, maxInFlight: 16 });
      expect(await again.exited, again.lines.join('\n')).toBe(0);
      const g = await reader.getSession('killed');
      expect(g.ok && isWhole(g, makeSession(2, chunks, 4096))).toBe(true);
    } finally {
      await proxy.close();
    }
  });
});
