/**
 * Which codec backend runs: 'cuda' when the build has CUDA and a device is usable, else 'cpu'.
 * 'auto' falls back to the CPU with one process warning (code KVTC_CPU_FALLBACK); 'cuda' without
 * a usable device is E_BACKEND. Devices do not come and go while a process runs, so the answer
 * is computed once. A GPU run with $KVTC_GEMM naming no GEMM mode is E_OPTIONS, at the first
 * choice of a backend rather than at the first GPU encode.
 */
import { GPU_GEMM_MODES, buildInfoAddon, gpuAddon } from './binding.js';
import { KvtcError } from './errors.js';

export type BackendChoice = 'auto' | 'cuda' | 'cpu';
export type Backend = 'cuda' | 'cpu';

let cudaProblem: string | null | undefined;
let warned = false;

/** null when the CUDA backend is usable, else why not. */
export function cudaUnavailableReason(): string | null {
  if (cudaProblem === undefined) {
    const info = buildInfoAddon.buildInfo();
    if (!info.cuda || !gpuAddon) cudaProblem = 'this build of kvtc has no CUDA support (no toolkit at build time, or KVTC_CUDA=OFF)';
    else if (info.cudaDevices === 0) cudaProblem = `no CUDA device is usable: ${info.cudaReason ?? 'unknown reason'}`;
    else cudaProblem = null;
  }
  return cudaProblem;
}

const GEMM_MODES: ReadonlySet<string> = new Set(GPU_GEMM_MODES);

export function resolveBackend(requested: BackendChoice): Backend {
  if (requested === 'cpu') return 'cpu';
  const problem = cudaUnavailableReason();
  if (problem === null) {
    const gemm = buildInfoAddon.buildInfo().cudaGemm ?? '';
    if (!GEMM_MODES.has(gemm)) throw new KvtcError('E_OPTIONS', gemm);
    return 'cuda';
  }
  if (requested === 'cuda') throw new KvtcError('E_BACKEND', `backend 'cuda' requested but ${problem}`);
  if (!warned) {
    warned = true;
    process.emitWarning(`kvtc: backend 'auto' is using the CPU: ${problem}`, { code: 'KVTC_CPU_FALLBACK' });
  }
  return 'cpu';
}

export function checkBackendChoice(value: unknown, what: string): BackendChoice {
  if (value === 'auto' || value === 'cuda' || value === 'cpu') return value;
  throw new KvtcError('E_OPTIONS', `${what} must be 'auto', 'cuda' or 'cpu', got ${String(value)}`);
}
