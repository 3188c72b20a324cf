/** The demo (the README's main job) runs green, and a second run finds its sessions on disk. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/store.js';

const run = promisify(execFile);
const DEMO = fileURLToPath(new URL('../../dist/cli/demo.js', import.meta.url));
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

describe('demo', () => {
  it('runs short story sessions through the tiers, then warm-restarts from disk', async () => {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    const args = [DEMO, '--quick', '--store', t.path];
    const first = await run(process.execPath, args, { timeout: 120_000 });
    expect(first.stdout).toContain('no sessions on disk yet');
    expect(first.stdout).toMatch(/calibrated profile [0-9a-f]{12}/);
    expect(first.stdout).toMatch(/\| disk \| \d+ \|/);
    expect(first.stdout).toMatch(/fidelity \(teacher-forced, \d+ next-token steps/);
    const top1 = Number(/top-1 agreement ([\d.]+)%/.exec(first.stdout)![1]);
    expect(top1).toBeGreaterThan(80);
    const second = await run(process.execPath, args, { timeout: 120_000 });
    expect(second.stdout).toMatch(/profile [0-9a-f]{12} loaded/);
    expect(second.stdout).toContain('warm restart: found 8 of 8 sessions on disk');
    expect(second.stdout).not.toContain('new story');
    console.log(second.stdout.split('\n').slice(-12).join('\n'));
  });
});
