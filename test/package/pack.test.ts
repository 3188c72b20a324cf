/**
 * The package as users get it: `npm pack`, then install the tarball into a fresh directory whose
 * PATH has node and a shell and nothing else — no C++ compiler, no CMake — so only the prebuilt addon can
 * work. There it imports kvtc, round-trips a cache through encode/decode and opens a store.
 * Dependencies come from the npm registry (npm's cache first).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'kvtc-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** npm's own entry point, run with this node (so PATH needs no npm and no shell tools). */
function npmCli(): string {
  const npm = realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
  return join(dirname(npm), 'npm-cli.js');
}

const PLOTTING = ['vega', 'vega-lite', '@resvg/resvg-js'];

describe('the npm package', () => {
  it('runtime dependencies hold no plotting library', () => {
    const out = execFileSync(process.execPath, [npmCli(), 'ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, encoding: 'utf8' });
    for (const p of PLOTTING) expect(out.split('\n').some((l) => l.endsWith(`/node_modules/${p}`)), p).toBe(false);
  });

  it('installs from its tarball without a compiler or CMake and works', () => {
    const npm = npmCli();
    // npm pack's own hooks, run here one by one: its `prepare` (tsc into dist/) would rewrite
    // the files other test files' child processes are loading at that moment (a child once
    // imported a half-written module). dist/ is built already (pretest); prepack fills
    // prebuilds/, postpack removes it.
    const packEnv = { ...process.env, KVTC_PREBUILD_REUSE: '1' };
    const prepack = spawnSync(process.execPath, ['scripts/prebuild.mjs'], { cwd: ROOT, encoding: 'utf8', env: packEnv });
    expect(prepack.status, prepack.stderr).toBe(0);
    const packed = (() => {
      try {
        return spawnSync(process.execPath, [npm, 'pack', '--ignore-scripts', '--pack-destination', work, '--json'], { cwd: ROOT, encoding: 'utf8', env: packEnv });
      } finally {
        rmSync(join(ROOT, 'prebuilds'), { recursive: true, force: true });
      }
    })();
    expect(packed.status, packed.stderr).toBe(0);
    const tarball = join(work, readdirSync(work).find((f) => f.endsWith('.tgz'))!);
    const files = (JSON.parse(packed.stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    expect(files.some((f) => f.startsWith('prebuilds/linux-x64/'))).toBe(true);
    expect(files.some((f) => f.startsWith('bench/') || f.startsWith('test/'))).toBe(false);

    // A PATH with node and a shell only (npm runs install scripts with sh): a source build
    // (cmake-js -> cmake, c++) cannot run here.
    const bin = join(work, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    const env = { HOME: process.env.HOME ?? '/root', PATH: bin, npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? '/root', '.npm') };
    const installed = spawnSync(process.execPath, [npm, 'install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--omit=dev'], { cwd: app, encoding: 'utf8', env });
    expect(installed.status, installed.stdout + installed.stderr).toBe(0);
    expect(installed.stdout + installed.stderr).not.toContain('building the native addon from source');
    for (const p of PLOTTING) expect(spawnSync(process.execPath, ['-e', `require.resolve(${JSON.stringify(p)})`], { cwd: app, env }).status, p).not.toBe(0);

    writeFileSync(join(app, 'check.mjs'), `
import { KvStore, buildInfo, calibrate, decode, encode } from 'kvtc';
const layout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
let s = 7;
const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
const cache = (tokens) => ({ layout, tokens, keys: [0, 1].map(() => Float32Array.from({ length: tokens * 32 }, rnd)), values: [0, 1].map(() => Float32Array.from({ length: tokens * 32 }, rnd)) });
const profile = await calibrate([cache(200), cache(200)], { ratio: 4, windowTokens: 8, sinkTokens: 2 });
const c = cache(64);
const back = await decode(await encode(c, profile), profile);
if (back.tokens !== 64 || back.keys[0][0] !== c.keys[0][0]) throw new Error('round trip');
const store = await KvStore.open({ profile, path: 'store' });
await store.put('a', c);
await store.evict('a', { to: 'disk' });
if ((await store.get('a')).tokens !== 64) throw new Error('store');
await store.close();
console.log('OK', buildInfo().addon);
`);
    const run = spawnSync(process.execPath, ['check.mjs'], { cwd: app, encoding: 'utf8', env });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^OK .*prebuilds\/linux-x64\/kvtc(\.cuda)?\.node/m);
  });
});
