#!/usr/bin/env node
// The package's install step. A prebuilt addon for this platform (prebuilds/<platform>-<arch>/,
// shipped in the npm package) is used when it loads; otherwise the addon is built from source
// with cmake-js (a C++17 compiler and CMake >= 3.18 needed; CUDA and OpenBLAS used when found).
// A source checkout has no prebuilds/, so `npm ci` there always builds from source.
//   KVTC_BUILD_FROM_SOURCE=1   build from source even when a prebuild loads
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const require = createRequire(import.meta.url);

function loads(file) {
  try {
    require(file).buildInfo();
    return true;
  } catch (err) {
    console.warn(`kvtc: prebuilt ${file} does not load here (${err.message.split('\n')[0]})`);
    return false;
  }
}

if (process.env.KVTC_BUILD_FROM_SOURCE !== '1') {
  const usable = ['kvtc.node', 'kvtc.cuda.node'].map((f) => join(dir, f)).filter((f) => existsSync(f) && loads(f));
  if (usable.length > 0) {
    console.log(`kvtc: using the prebuilt addon for ${process.platform}-${process.arch} (${usable.map((f) => f.split('/').pop()).join(', ')})`);
    process.exit(0);
  }
}
const cmakeJs = join(dirname(require.resolve('cmake-js/package.json')), 'bin', 'cmake-js');
console.log('kvtc: building the native addon from source (cmake-js)');
const r = spawnSync(process.execPath, [cmakeJs, 'compile'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('kvtc: the source build failed: it needs a C++17 compiler and CMake >= 3.18 (no prebuilt addon fits this platform)');
  process.exit(r.status ?? 1);
}
