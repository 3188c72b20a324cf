/** The kvtc command line on small inputs: outputs, files written, exit codes, errors. */
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CodecProfile, KvStore, encode } from '../../src/index.js';
import { loadPrompts, realStates } from '../helpers/real-kv.js';
import { session, tempDir, testProfile } from '../helpers/store.js';

const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));
const RESULTS = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const MODEL = fileURLToPath(new URL('../../../shared/models/stories260K.gguf', import.meta.url));
const exec = promisify(execFile);
let dir: string;
const cleanups: (() => Promise<void>)[] = [];

async function kvtc(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [CLI, ...args], { timeout: 120_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

beforeAll(async () => {
  const t = await tempDir();
  dir = t.path;
  cleanups.push(t.cleanup);
});
afterAll(async () => {
  for (const c of cleanups) await c();
});

describe('kvtc --help', () => {
  it('every command has help', async () => {
    const top = await kvtc('--help');
    expect(top.code).toBe(0);
    for (const cmd of ['calibrate', 'inspect', 'bench', 'demo', 'info']) {
      expect(top.stdout).toContain(cmd);
      const h = await kvtc(cmd, '--help');
      expect(h.code).toBe(0);
      expect(h.stdout).toContain(`Usage: kvtc ${cmd}`);
    }
  });
});

describe('kvtc info', () => {
  it('says what was compiled in and which backend auto picks', async () => {
    const { native } = await import('../../src/binding.js');
    const b = native.buildInfo();
    const r = await kvtc('info');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`cuda:       ${b.cuda ? 'compiled in' : 'not compiled in'}`);
    expect(r.stdout).toContain(`devices:    ${b.cudaDevices}`);
    expect(r.stdout).toMatch(b.cudaDevices > 0 ? /'auto' runs on the cuda backend/ : /'auto' runs on the cpu \(/);
  });
});

describe('kvtc calibrate', () => {
  it('from a GGUF model and prompts: writes a profile and prints its summary', async () => {
    const prompts = join(dir, 'prompts.txt');
    writeFileSync(prompts, loadPrompts().slice(0, 4).join('\n'));
    const out = join(dir, 'model.kvtcp');
    const r = await kvtc('calibrate', '--model', MODEL, '--prompts', prompts, '--tokens', '64', '--ratio', '8', '--out', out);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('components kept');
    expect(r.stdout).toContain('energy captured');
    const predicted = Number(/predicted ([\d.]+)x/.exec(r.stdout)![1]);
    expect(predicted).toBeGreaterThanOrEqual(8 * 0.9);
    const p = await CodecProfile.load(out);
    expect(p.layout).toMatchObject({ layers: 5, kvHeads: 4, headDim: 8 });
    expect(p.settings.calibrationTokens).toBe(4 * 60);
  });

  it('from saved llama.cpp state files', async () => {
    const caches = join(dir, 'caches');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(caches);
    const states = await realStates({ prompts: loadPrompts().slice(0, 3), tokens: 80 });
    states.forEach((s, i) => writeFileSync(join(caches, `seq-${i}.bin`), s.bytes));
    const out = join(dir, 'caches.kvtcp');
    const r = await kvtc('calibrate', '--caches', caches, '--ratio', '4', '--window', '8', '--out', out);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(out)).toBe(true);
  });

  it('bad arguments and missing files fail with clear messages and non-zero exits', async () => {
    const bad = await kvtc('calibrate', '--model', MODEL, '--prompts', 'x', '--ratio', 'fast', '--out', join(dir, 'x'));
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("--ratio must be a number > 1, got 'fast'");
    const noOut = await kvtc('calibrate', '--model', MODEL);
    expect(noOut.code).not.toBe(0);
    expect(noOut.stderr).toContain('--out');
    const missing = await kvtc('calibrate', '--model', join(dir, 'nope.gguf'), '--prompts', join(dir, 'nope.txt'), '--out', join(dir, 'x'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('E_IO');
    const both = await kvtc('calibrate', '--out', join(dir, 'x'));
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('exactly one of --model');
  });
});

describe('kvtc inspect', () => {
  it('a blob, a profile and a store directory; damaged or missing input fails', async () => {
    const profile = await testProfile();
    const pfile = join(dir, 'test.kvtcp');
    await profile.save(pfile);
    const blobFile = join(dir, 'one.kvtc');
    const blob = await encode(session(3, 120), profile);
    writeFileSync(blobFile, blob);
    const b = await kvtc('inspect', blobFile);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout).toContain('checksum OK');
    expect(b.stdout).toContain(`profile ${profile.fingerprint}`);
    expect(b.stdout).toContain('120 tokens');
    const p = await kvtc('inspect', pfile);
    expect(p.stdout).toContain(`profile ${profile.fingerprint}`);
    const storeDir = join(dir, 'store');
    const store = await KvStore.open({ profile, path: storeDir });
    await store.put('alpha', session(4, 100));
    await store.put('beta', session(5, 100));
    await store.close();
    const s = await kvtc('inspect', storeDir);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toContain('2 sessions on disk');
    expect(s.stdout).toMatch(/\| alpha \| disk \| 100 \|/);
    const damaged = blob.slice();
    damaged[damaged.length >> 1]! ^= 4;
    writeFileSync(blobFile, damaged);
    const d = await kvtc('inspect', blobFile);
    expect(d.code).toBe(2);
    expect(d.stderr).toContain('E_CORRUPT');
    const m = await kvtc('inspect', join(dir, 'missing.kvtc'));
    expect(m.code).toBe(2);
    expect(m.stderr).toContain('E_IO');
  });
});

describe('kvtc bench', () => {
  it('--only report renders the report and plots from results JSON', async () => {
    const results = join(dir, 'results');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(results);
    for (const f of ['codec.json', 'fidelity.json', 'store.json']) copyFileSync(join(RESULTS, f), join(results, f));
    const r = await kvtc('bench', '--only', 'report', '--results', results);
    expect(r.code, r.stderr).toBe(0);
    const files = readdirSync(results);
    for (const f of ['report.md', 'rate-distortion.svg', 'rate-distortion.png', 'rd-kl.svg', 'throughput.svg']) expect(files).toContain(f);
    const bad = await kvtc('bench', '--only', 'everything');
    expect(bad.code).not.toBe(0);
  });
});
