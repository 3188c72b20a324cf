/**
 * One writer per store directory across processes: a second opener gets E_LOCKED while the
 * first lives; a lock left by a process killed with SIGKILL never blocks a reopen.
 */
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KvStore } from '../../src/index.js';
import { LOCK_FILE } from '../../src/store/dir-lock.js';
import { session, storeKit, tempDir, testProfile } from '../helpers/store.js';

const { defer } = storeKit();

/** A child process holding a store open on `path` until killed. */
async function holder(path: string, profilePath: string): Promise<{ kill: () => Promise<void> }> {
  const src = `import { KvStore, CodecProfile } from ${JSON.stringify(new URL('../../dist/index.js', import.meta.url).href)};
const store = await KvStore.open({ profile: await CodecProfile.load(${JSON.stringify(profilePath)}), path: ${JSON.stringify(path)} });
await store.put('from-child', (await import(${JSON.stringify(new URL('../reliability/fixture.mjs', import.meta.url).href)})).fixtureCache(5));
await store.evict('from-child', { to: 'disk' });
process.stdout.write('OPEN\\n');
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', src], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes('OPEN') && resolve());
    child.on('exit', (code) => reject(new Error(`holder exited ${code}: ${err}`)));
  });
  const kill = () => new Promise<void>((resolve) => {
    child.removeAllListeners('exit');
    child.on('exit', () => resolve());
    child.kill('SIGKILL');
  });
  defer(async () => child.kill('SIGKILL'));
  return { kill };
}

describe('store directory lock', () => {
  it('a second process gets E_LOCKED; after the holder is killed -9 the directory opens and its sessions are there', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const profilePath = join(t.path, 'profile.kvtcp');
    await (await testProfile()).save(profilePath);
    const store = join(t.path, 'store');
    const h = await holder(store, profilePath);
    await expect(KvStore.open({ profile: await testProfile(), path: store })).rejects.toMatchObject({ code: 'E_LOCKED' });
    await h.kill();
    expect(existsSync(join(store, LOCK_FILE))).toBe(true); // left behind by the killed process
    const reopened = await KvStore.open({ profile: await testProfile(), path: store });
    defer(() => reopened.close());
    expect(reopened.has('from-child')).toBe('disk');
    await reopened.close();
    expect(existsSync(join(store, LOCK_FILE))).toBe(false); // released by close
  });

  it('a stale or unreadable lock file is taken over; close releases it', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    writeFileSync(join(t.path, LOCK_FILE), JSON.stringify({ pid: 2 ** 22 + 12345, start: '1', host: (await import('node:os')).hostname() }));
    const a = await KvStore.open({ profile: await testProfile(), path: t.path });
    await a.put('x', session(1));
    await a.close();
    writeFileSync(join(t.path, LOCK_FILE), 'garbage');
    const b = await KvStore.open({ profile: await testProfile(), path: t.path });
    defer(() => b.close());
    expect(b.has('x')).toBe('disk');
  });
});
