#!/usr/bin/env bash
# Packs what the GPU machine (the `device` tool) lacks into .devkit/, to be named in `carry`:
# the machine has CUDA, PyTorch and Python but no Node.js and no network. The kit holds this
# machine's node binary, node_modules without the packages the GPU checks do not use (the
# llama.cpp runtime, the compiler, plotting), the addon built here with CUDA (nvcc, archs
# 80;90, static cudart), the real caches of the GPU parity test, and dist/ (the store's codec
# workers run compiled JavaScript). With the working tree it must stay under the tool's 64 MiB.
# Run from the repository root after `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/../.."
kit=.devkit
rm -rf "$kit" && mkdir -p "$kit"
grep -q '"cuda": *true' <(node -e "console.log(JSON.stringify(require('./build/Release/kvtc.node').buildInfo()))") || {
  echo "build/Release/kvtc.node was built without CUDA: install the CUDA toolkit and run npx cmake-js rebuild" >&2
  exit 1
}
cp build/Release/kvtc.node build/Release/kvtc_emu.node "$kit/"
# The real stories260K caches of the GPU parity test: the GPU machine cannot run the model.
npx tsx scripts/device/real-caches.ts "$kit/stories-caches.json"
npx tsc -p tsconfig.build.json
tar -cJf "$kit/dist.tar.xz" dist
xz -T0 -6 -c "$(readlink -f "$(command -v node)")" >"$kit/node.xz"
tar -c \
  --exclude='node_modules/node-llama-cpp' --exclude='node_modules/@node-llama-cpp' \
  --exclude='node_modules/typescript' --exclude='node_modules/vega*' --exclude='node_modules/@resvg' \
  --exclude='node_modules/@types' --exclude='node_modules/.cache' \
  node_modules | xz -T0 -6 >"$kit/node_modules.tar.xz"
du -ch "$kit"/* | tail -n 1
