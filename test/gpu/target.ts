/**
 * Chooses what the GPU tests run on; import it before anything that loads kvtc. With a usable
 * CUDA device: the real CUDA backend. Without one (CI, dev machines): the same kernels and
 * pipeline on the CPU emulation of the CUDA runtime (the kvtc_emu addon), so every GPU code path
 * is still exercised. KVTC_ADDON=emulated forces the emulation. Checks that only mean something
 * on real hardware (page-locked memory, speed) use REAL_DEVICE to skip.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
if (process.env.KVTC_ADDON !== 'emulated') {
  const info = (require('../../build/Release/kvtc.node') as { buildInfo(): { cuda: boolean; cudaDevices: number } }).buildInfo();
  if (!(info.cuda && info.cudaDevices > 0)) process.env.KVTC_ADDON = 'emulated';
}

export const TARGET: 'cuda' | 'emulated' = process.env.KVTC_ADDON === 'emulated' ? 'emulated' : 'cuda';
export const REAL_DEVICE = TARGET === 'cuda';
