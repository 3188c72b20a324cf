// The addon's own job threads (native/job_threads.*): the work the main thread hands off runs on
// them, niced below the event loop, leaving libuv's pool to the process; and a process or worker
// thread that ends with jobs finished or running ends cleanly.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { AsyncLocalStorage } from 'node:async_hooks';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { copyBytesAsync } from '../../src/binding.js';

const linux = process.platform === 'linux';
const root = new URL('../../', import.meta.url);

/** A thread's nice value (Linux: field 19 of /proc/self/task/<tid>/stat). */
const niceOf = (tid: string | number) => Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);

describe('job threads', () => {
  it.skipIf(!linux)('the main thread’s copies run on four threads niced by 5', async () => {
    const base = niceOf(process.pid);
    const src = new Uint8Array(1 << 20).fill(3);
    const dst = Array.from({ length: 8 }, () => new Uint8Array(1 << 20));
    await Promise.all(dst.map((d) => copyBytesAsync([[d, src]])));
    expect(dst.every((d) => d[12345] === 3)).toBe(true);
    expect(readdirSync('/proc/self/task').map(niceOf).filter((n) => n === Math.min(19, base + 5))).toHaveLength(4);
  });

  it('libuv’s pool stays free for the process while long copies run', async () => {
    // Eight 32 MB copies: on libuv's four threads, an fs call queued after them would wait for
    // at least four to finish.
    const src = new Uint8Array(32 << 20).fill(1);
    const dst = new Uint8Array(32 << 20);
    const order: string[] = [];
    const copies = Array.from({ length: 8 }, () => copyBytesAsync([[dst, src]]).then(() => order.push('copy')));
    const fsCall = stat(new URL('package.json', root)).then(() => order.push('fs'));
    await Promise.all([...copies, fsCall]);
    expect(order.indexOf('fs')).toBeLessThan(4);
  });

  it('a caller’s AsyncLocalStorage context is its own again after each job', async () => {
    const als = new AsyncLocalStorage<{ k: number }>();
    const seen = await Promise.all(
      [1, 2, 3].map((k) =>
        als.run({ k }, async () => {
          const a = new Uint8Array(1 << 20);
          await copyBytesAsync([[a, new Uint8Array(1 << 20)]]);
          await copyBytesAsync([[a, new Uint8Array(1 << 20)]]);
          return als.getStore()?.k;
        }),
      ),
    );
    expect(seen).toEqual([1, 2, 3]);
  });

  it('a process exits cleanly right after its jobs settle, even rejected ones', () => {
    // Calibrate, encode and a decode that fails (bad KVTC_DECODE), then exit: the job threads' way back to
    // the main thread must not race the environment's teardown (it aborted in 1 of 6 runs when a
    // job thread touched the thread-safe function after the environment had destroyed it).
    const script = `
      import { calibrate, decode, encode } from './dist/index.js';
      const layout = { layers: 1, kvHeads: 1, headDim: 16, dtype: 'f32' };
      const rows = (n) => [Float32Array.from({ length: n * 16 }, (_, i) => Math.sin(i))];
      const cache = (n) => ({ layout, tokens: n, keys: rows(n), values: rows(n) });
      const profile = await calibrate([cache(64)], { ratio: 4, windowTokens: 4 });
      const blob = await encode(cache(32), profile, { backend: 'cpu' });
      const e = await decode(blob, profile, { backend: 'cpu' }).then(() => 'decoded', (err) => err.code);
      console.log(e);`;
    for (let i = 0; i < 12; i++) {
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, KVTC_DECODE: 'fp8' } });
      expect(out.trim()).toBe('E_OPTIONS');
    }
  });

  it('a worker thread that exits with a job running leaves the process working', async () => {
    const worker = new Worker(
      `import(${JSON.stringify(new URL('dist/binding.js', root).href)}).then(({ copyBytesAsync }) => {
         const big = new Uint8Array(64 << 20);
         copyBytesAsync([[big, new Uint8Array(64 << 20)]]);
         process.exit(0);
       });`,
      { eval: true },
    ).on('error', () => {});
    const code = await new Promise<number>((resolve) => worker.once('exit', resolve));
    expect(code).toBe(0);
    const a = new Uint8Array(16);
    await copyBytesAsync([[a, new Uint8Array(16).fill(5)]]);
    expect(a[15]).toBe(5);
  });
});
