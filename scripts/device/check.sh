#!/usr/bin/env bash
# The GPU checks of issue #5, in one command for the `device` tool (carry: [".devkit"]):
#   bash scripts/device/check.sh
# Unpacks the kit from scripts/device/pack.sh, then, with results under $OUT:
#   nvidia-smi and buildInfo(); the recompute baseline (bench/recompute_prefill.py, PyTorch);
#   test/gpu on the real CUDA backend (default GEMM: tf32x3); bench/gpu.bench.ts (8K-token
#   Llama-3.1-8B-shaped KV; its GEMM table includes cuBLAS when PyTorch's is there); then the
#   parity tests again with the FP32 CUDA-core GEMM and with cuBLAS, to tell a tensor-core
#   problem from any other.
# KIT_DRY_RUN=1 rehearses it on a machine without a GPU: the emulated addon, a --quick bench,
# no PyTorch step.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/kvtc-device-out}
mkdir -p "$OUT" /tmp/kvtc-kit
# xz may be missing there; Python's lzma is not.
unxz() {
  if command -v xz >/dev/null; then xz -dc "$1"; else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"
  fi
}
unxz .devkit/node.xz >/tmp/kvtc-kit/node && chmod +x /tmp/kvtc-kit/node
export PATH=/tmp/kvtc-kit:$PATH
rm -rf node_modules dist
unxz .devkit/node_modules.tar.xz | tar -x
unxz .devkit/dist.tar.xz | tar -x
mkdir -p build/Release && cp .devkit/kvtc.node .devkit/kvtc_emu.node build/Release/
export KVTC_REAL_CACHES="$PWD/.devkit/stories-caches.json"  # no model runtime here
node -e "console.log(JSON.stringify(require('./build/Release/kvtc.node').buildInfo()))" | tee "$OUT/buildinfo.json"
if [ "${KIT_DRY_RUN:-0}" != 1 ] && ! grep -q '"cudaDevices":[1-9]' "$OUT/buildinfo.json"; then
  # No usable device (a driver older than the CUDA 13 runtime the addon links, say): every check
  # would run on the emulation. Stop here and keep the device time.
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
  echo "no usable CUDA device: see buildinfo.json (cudaReason) and nvidia-smi.txt" | tee "$OUT/STOPPED"
  exit 2
fi
bench_args=()
if [ "${KIT_DRY_RUN:-0}" = 1 ]; then
  export KVTC_ADDON=emulated
  bench_args=(--quick)
else
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
  PYTHONUNBUFFERED=1 timeout 300 python3 bench/recompute_prefill.py "$OUT/recompute.json" 2>&1 | tee "$OUT/recompute.log"
fi
# The cuBLAS that PyTorch's wheels bring, on the library path so the optional cuBLAS GEMM modes
# can load (KVTC_CUBLAS stays unset: the default mode is still kvtc's own).
cublas=$(python3 -c 'import glob, os, nvidia; print(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "cublas/lib/libcublas.so*")))[0])' 2>/dev/null || true)
if [ -n "$cublas" ] && [ "${KIT_DRY_RUN:-0}" != 1 ]; then
  export LD_LIBRARY_PATH="$(dirname "$cublas"):${LD_LIBRARY_PATH:-}"
fi
node node_modules/vitest/vitest.mjs run test/gpu 2>&1 | tee "$OUT/test-gpu.log"
KVTC_RECOMPUTE_JSON="$OUT/recompute.json" KVTC_BENCH_OUT="$OUT/gpu.json" UV_THREADPOOL_SIZE=16 \
  node node_modules/tsx/dist/cli.mjs bench/gpu.bench.ts "${bench_args[@]}" 2>&1 | tee "$OUT/bench-gpu.log"
KVTC_GEMM=fp32 node node_modules/vitest/vitest.mjs run test/gpu/codec-parity.test.ts 2>&1 | tee "$OUT/test-gpu-fp32-gemm.log"
if [ -n "$cublas" ] && [ "${KIT_DRY_RUN:-0}" != 1 ]; then
  KVTC_CUBLAS="$cublas" node node_modules/vitest/vitest.mjs run test/gpu/codec-parity.test.ts 2>&1 | tee "$OUT/test-gpu-cublas.log"
fi
