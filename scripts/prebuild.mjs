#!/usr/bin/env node
// Fills prebuilds/<platform>-<arch>/ for `npm pack` (prepack): kvtc.node, a CPU-only build
// (KVTC_CUDA=OFF, built into build-cpu/ when missing), and kvtc.cuda.node, the CUDA build, when
// the source build in build/Release has CUDA compiled in. binding.ts picks the CUDA variant on
// machines with an NVIDIA driver, the CPU one elsewhere.
//   KVTC_PREBUILD_REUSE=1   only copy what is built already (no CPU-only build)
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const require = createRequire(import.meta.url);
rmSync(join(root, 'prebuilds'), { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const source = join(root, 'build', 'Release', 'kvtc.node');
if (!existsSync(source)) throw new Error(`prebuild: ${source} is missing; run npm ci first`);
const hasCuda = require(source).buildInfo().cuda;
if (hasCuda) copyFileSync(source, join(out, 'kvtc.cuda.node'));
else copyFileSync(source, join(out, 'kvtc.node'));

if (hasCuda && process.env.KVTC_PREBUILD_REUSE !== '1') {
  const cpu = join(root, 'build-cpu', 'Release', 'kvtc.node');
  if (!existsSync(cpu)) {
    const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
    const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build-cpu', '--target', 'kvtc'], {
      cwd: root, stdio: 'inherit', env: { ...process.env, KVTC_CUDA: 'OFF' },
    });
    if (r.status !== 0) throw new Error('prebuild: the CPU-only build failed');
  }
  copyFileSync(cpu, join(out, 'kvtc.node'));
}
console.error(`prebuild: ${out}`); // stderr: `npm pack --json` owns stdout
