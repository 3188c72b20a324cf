/**
 * The only place that loads the native addon. Everything else imports `native` from here, so
 * there is one answer to "which binary is running and what was compiled into it".
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlobInfo } from './codec/codec.js';
import { KvtcError, toKvtcError } from './errors.js';

/** Opaque handles owned by native code. */
export type NativeProfileHandle = { readonly __nativeProfile: unique symbol };
export type NativeCalibratorHandle = { readonly __nativeCalibrator: unique symbol };

/** Cache as the addon reads it: dtype as a code (0 f32, 1 f16, 2 bf16). */
export interface NativeCache {
  tokens: number;
  dtype: number;
  keys: ArrayBufferView[];
  values: ArrayBufferView[];
  positions?: Int32Array;
}

/** Options of the addon's encode. */
export interface NativeEncodeOptions {
  /** rANS-code the quantized sections (default true). */
  entropy?: boolean;
  /** Write the blob into the host arena and return its handle (default false: a new ArrayBuffer). */
  toArena?: boolean;
  /** Run on the CUDA backend (E_BACKEND in a build without it). Default false. */
  gpu?: boolean;
  /** Threads for this call on the CPU, 1..64 (default 1); the blob does not depend on it. */
  threads?: number;
  /** Tokens kept lossless at the start / the end (default: the profile's); a chunk of a longer session overrides them. */
  sinks?: number;
  window?: number;
}

/** A blob living in the native host arena. */
export interface ArenaBlob {
  handle: number;
  bytes: number;
}

export interface NativeLayout {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: number;
  ropeStyle: number;
  ropeDims: number;
  ropeTheta: number;
  ropeFreqs: Float32Array;
}

export interface NativeProfileGroup {
  stream: 'keys' | 'values';
  layerStart: number;
  layerCount: number;
  features: number;
  components: number;
  totalEnergy: number;
  meanSquare: number;
  predictedError: number;
  weight: number;
  plannedBits: number;
  plan: { start: number; size: number; bits: number; quantizer: 'minmax' | 'static'; shift?: number; scale?: number; levels?: Float32Array }[];
  bitsPerToken: number;
  rowBytes: number;
  eigenvalues: Float32Array;
}

/** A bit plan as native/bitplan.h returns it. */
export interface NativePlan {
  /** Static groups carry their calibrated shift and scale (value = shift + code * scale). */
  groups: { start: number; size: number; bits: number; quantizer: 'minmax' | 'static'; shift?: number; scale?: number; levels?: Float32Array }[];
  /** Squared error summed over the sample (dropped components included). */
  error: number;
  /** Pre-entropy bits per token. */
  bitsPerToken: number;
  /** Bits per token under the cost model (entropy-coded or packed). */
  costBits: number;
}

export interface NativeProfileInfo {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: 'f32' | 'f16' | 'bf16';
  ropeStyle: number;
  ropeDims: number;
  ropeTheta: number;
  ropeFreqs: Float32Array;
  sinks: number;
  window: number;
  groupLayers: number;
  ratio: number;
  seed: number;
  calibrationTokens: number;
  allocation: 'global' | 'stream';
  weighting: 'attention' | 'mse';
  targetTokens: number;
  expectedRatio: number;
  groups: NativeProfileGroup[];
}

/** A blob's header as the addon reads it: the public BlobInfo before the facts computed in TypeScript. */
export type NativeBlobInfo = Omit<BlobInfo, 'fingerprint' | 'rawBytesF16' | 'ratio' | 'verified'> & { fingerprint: Uint8Array };

export interface NativeCalibrateSettings {
  sinks: number;
  window: number;
  groupLayers: number;
  ratio: number;
  seed: number;
  sampleTokens: number;
  maxTokens: number;
  maxFeatures: number;
  groupSizes: number[];
  widths: number[];
  /** 0 stream, 1 global. */
  allocation: number;
  /** 0 mse, 1 attention. */
  weighting: number;
  targetTokens: number;
  /** Worker threads for calibratorAdd (stream groups in parallel). Default 1. */
  threads?: number;
}

/** A cache in device memory as the addon reads it: per-layer device addresses. */
export interface NativeDeviceCache {
  tokens: number;
  dtype: number;
  keys: bigint[];
  values: bigint[];
  positions?: Int32Array;
  /** A cudaStream_t to order the work after (0n or absent: a private stream). */
  stream?: bigint;
}

/** The CUDA backend's device-address API (CUDA builds only). Every call runs off the main thread. */
export interface NativeGpu {
  encodeDevice(profile: NativeProfileHandle, cache: NativeDeviceCache, entropy: boolean, toArena: false): Promise<ArrayBuffer>;
  encodeDevice(profile: NativeProfileHandle, cache: NativeDeviceCache, entropy: boolean, toArena: true): Promise<ArenaBlob>;
  decodeToDevice(
    profile: NativeProfileHandle,
    source: Uint8Array | number,
    target: { keys: bigint[]; values: bigint[]; stream?: bigint },
    positions: Int32Array,
  ): Promise<void>;
  /** The first NaN/Inf of a device cache, scanned on the GPU, or null. */
  scanNonFinite(cache: NativeDeviceCache, rowValues: number): Promise<{ stream: 'keys' | 'values'; layer: number; token: number } | null>;
  alloc(bytes: number): Promise<bigint>;
  /** Releases in stream order: after the work queued on `stream` (default: the legacy default stream). */
  free(address: bigint, stream?: bigint): Promise<void>;
  /** Copies complete when they resolve; stream orders them after a caller's queued work. */
  copyToDevice(dst: bigint, src: ArrayBufferView, stream?: bigint): Promise<void>;
  copyToHost(dst: ArrayBufferView, src: bigint, stream?: bigint): Promise<void>;
  copyOnDevice(dst: bigint, src: bigint, bytes: number, stream?: bigint): Promise<void>;
  /** A host-arena blob to the device (page-locked when a device is usable). */
  copyFromArena(dst: bigint, handle: number): Promise<void>;
  memoryInfo(): Promise<{ free: number; total: number }>;
  /**
   * The projection GEMM alone, C[m x n] = A[m x k] * op(B) (op(B) = B [k x n], or with transB the
   * transpose of B [n x k]), in GEMM mode `mode` (see GpuGemmMode), run `repeats` times on the
   * device: tests and benchmarks. seconds: one run's mean wall time, operands on the device.
   */
  gemm(
    mode: GpuGemmMode,
    a: Float32Array,
    b: Float32Array,
    size: { m: number; n: number; k: number; transB: boolean; repeats?: number },
  ): Promise<{ c: Float32Array; seconds: number }>;
}

/**
 * How the GPU computes the PCA projections: 'tf32x3' (default: TF32 tensor cores, each operand
 * split in two for FP32 accuracy), 'tf32' (one TF32 product: faster, ~1e-3 relative error),
 * 'fp32' (CUDA cores), or cuBLAS SGEMM ('cublas-fp32', 'cublas-tf32') when it can be loaded.
 * $KVTC_GEMM picks among kvtc's own; $KVTC_CUBLAS=fp32|tf32|path prefers cuBLAS.
 */
export const GPU_GEMM_MODES = ['tf32x3', 'tf32', 'fp32', 'cublas-fp32', 'cublas-tf32'] as const;
export type GpuGemmMode = (typeof GPU_GEMM_MODES)[number];

interface NativeAddon {
  buildInfo(): Omit<BuildInfo, 'addon'>;
  loadProfile(bytes: Uint8Array, fingerprint: Uint8Array): Promise<NativeProfileHandle>;
  profileInfo(bytes: Uint8Array): NativeProfileInfo;
  /** Encodes into a new buffer, or with `toArena` straight into the host arena (the blob's handle and size). */
  encode(profile: NativeProfileHandle, cache: NativeCache, options: NativeEncodeOptions & { toArena?: false }): Promise<ArrayBuffer>;
  encode(profile: NativeProfileHandle, cache: NativeCache, options: NativeEncodeOptions & { toArena: true }): Promise<ArenaBlob>;
  /** Verifies a blob (or host-arena handle) against the profile; returns the output sizes. */
  decodePrepare(
    profile: NativeProfileHandle,
    source: Uint8Array | number,
  ): Promise<{ tokens: number; dtype: 'f32' | 'f16' | 'bf16'; bytesPerStream: number }>;
  /**
   * Decodes into caller-allocated buffers of the sizes decodePrepare returned: per stream, one
   * array holding every layer, or one array per layer (CPU only).
   */
  decodeInto(
    profile: NativeProfileHandle,
    source: Uint8Array | number,
    keys: ArrayBufferView | readonly ArrayBufferView[],
    values: ArrayBufferView | readonly ArrayBufferView[],
    positions: Int32Array,
    gpu: boolean,
    threads?: number,
    /** Place the blob's tokens at rows [offset, offset + n) of an output of `tokens` tokens (CPU only). */
    offset?: number,
    tokens?: number,
  ): Promise<void>;
  /** Present in CUDA builds. */
  gpu?: NativeGpu;
  inspectBlob(blob: Uint8Array, verify: boolean): NativeBlobInfo;
  /** The first NaN/Inf of a cache (scanned off the main thread), or null. */
  scanNonFinite(cache: NativeCache, layers: number, rowValues: number): Promise<{ stream: 'keys' | 'values'; layer: number; token: number } | null>;
  /** memcpy between two typed arrays of equal byte length (fast for SharedArrayBuffer views too). */
  copyBytes(dst: ArrayBufferView, src: ArrayBufferView): void;
  copyBytesAsync(pairs: [ArrayBufferView, ArrayBufferView][], scan?: CopyScan): Promise<{ pair: number; element: number } | null | undefined>;
  /** The calling thread runs the addon's async work itself (a codec worker), not libuv's pool. */
  setInlineExecution(on: boolean): void;
  /** Host arena: encoded blobs in native (page-locked when CUDA is usable) memory, by handle. */
  arenaPut(blob: Uint8Array): number;
  arenaRead(handle: number): Uint8Array;
  arenaFree(handle: number): boolean;
  arenaStats(): { blocks: number; bytes: number; pinnedBytes: number; pinned: boolean };
  /** CRC-32C (Castagnoli) of a byte range. */
  crc32c(data: Uint8Array): number;
  calibratorCreate(layout: NativeLayout, settings: NativeCalibrateSettings): NativeCalibratorHandle;
  calibratorAdd(cal: NativeCalibratorHandle, cache: NativeCache, layers: number, rowValues: number): Promise<number>;
  calibratorFinish(
    cal: NativeCalibratorHandle,
    progress: ((fraction: number, stage: string) => void) | undefined,
    threads: number,
  ): Promise<ArrayBuffer>;
  internals: {
    /** The per-stream bit plan of n x kmax projections (native/bitplan.h); statics: also offer static groups. */
    planBits(proj: Float32Array, n: number, kmax: number, budgetBits: number, widths: number[], sizes: number[], entropy: boolean, statics?: boolean): NativePlan;
    /** The reconstruction levels calibration fits to a static group of n x size projections (size << bits floats). */
    staticLevels(proj: Float32Array, n: number, size: number, bits: number, shift: number, scale: number): Float32Array;
    /** The whole-cache allocation over several stream groups' projections, then each group's plan. */
    planSplit(
      projs: Float32Array[], n: number, kmaxs: number[], weights: number[], totalBits: number, unitBits: number,
      capBits: number[], widths: number[], sizes: number[], entropy: boolean, statics?: boolean,
    ): { units: number[]; plans: NativePlan[]; objective: number };
    /** path: 'reference' (the classic tred2/tql2 solver) or a vector path to force ('avx512' | 'avx2' | 'generic'). */
    symEig(a: Float64Array, n: number, path?: string): { values: Float64Array; vectors: Float64Array };
    /** The vector path symEig uses on this CPU. */
    symEigPath(): string;
    /** CPU seconds per calibration stage so far, summed over threads. */
    calibratorStageSeconds(cal: NativeCalibratorHandle): { add: number; fit: number; gram: number; eigen: number; plan: number; tables: number };
    /** Entropy-codes packed rows of one stream group (0 keys / 1 values) synchronously. */
    ransEncode(profile: NativeProfileHandle, stream: number, group: number, rows: Uint8Array): Uint8Array;
    ransDecode(profile: NativeProfileHandle, stream: number, group: number, coded: Uint8Array, rawLength: number): Uint8Array;
    /**
     * C = A·B (+ bias per row) (+ C when accumulate) through the packed-B GEMM on a SIMD path
     * ('avx512' | 'avx2' | 'scalar'; null: the active one). transB: B is n x k, use its transpose.
     */
    gemm(
      path: string | null,
      m: number,
      n: number,
      k: number,
      a: Float32Array,
      lda: number,
      b: Float32Array,
      ldb: number,
      transB: boolean,
      c: Float32Array,
      ldc: number,
      bias: Float32Array | null,
      accumulate: boolean,
    ): void;
    /** Runs an m x n x k packed GEMM reps times on random operands; returns the FLOP count (callers time it). */
    gemmRepeat(path: string | null, m: number, n: number, k: number, reps: number): number;
    /** Runs a register-only FP32 FMA loop; returns its FLOP count (callers time it). */
    fmaPeak(path: string | null, iterations: number): number;
    /** SIMD paths this CPU can run, widest first. */
    simdPaths(): string[];
    /**
     * Rotates token rows of x in place (style 1 interleaved, 2 neox); inverse undoes. path: the
     * decoder's SIMD rotation on that path (rope_simd.h); absent, the scalar rotation.
     */
    rope(
      x: Float32Array,
      kvHeads: number,
      headDim: number,
      style: number,
      freqs: Float32Array,
      positions: Int32Array,
      inverse: boolean,
      path?: string,
    ): void;
  };
}

/**
 * KVTC_ADDON=emulated loads kvtc_emu.node instead: the same addon with the CUDA backend compiled
 * for the CPU emulation of the CUDA runtime (cuda/emu). It exists to test the GPU code paths on
 * machines without a GPU; it is slow and never a production choice.
 */
function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const file of addonCandidates()) {
    try {
      const addon = require(file) as NativeAddon;
      loadedFrom = file;
      return addon;
    } catch (err) {
      tried.push(`${file}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new KvtcError(
    'E_BACKEND',
    `kvtc native addon could not be loaded (reinstall the package, or run \`npm ci\` / \`npm run build\` in a checkout): ${tried.join('; ') || 'no addon found'}`,
  );
}

/**
 * Where the addon may be, in order: a source build (build/Release, what `npm ci` makes in a
 * checkout and what the install step makes when no prebuild fits), then the package's prebuilds
 * — the CUDA variant first on a machine with an NVIDIA driver, the CPU-only one first elsewhere.
 */
function addonCandidates(): string[] {
  // src/ and dist/ both sit one level below the package root, beside build/ and prebuilds/.
  const root = fileURLToPath(new URL('../', import.meta.url));
  if (process.env.KVTC_ADDON === 'emulated') return [join(root, 'build', 'Release', 'kvtc_emu.node')];
  const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const variants = existsSync('/proc/driver/nvidia/version') ? ['kvtc.cuda.node', 'kvtc.node'] : ['kvtc.node', 'kvtc.cuda.node'];
  return [join(root, 'build', 'Release', 'kvtc.node'), ...variants.map((v) => join(prebuilt, v))].filter((f) => existsSync(f));
}

/** The file the addon was loaded from (buildInfo().addon). */
let loadedFrom = '';

/**
 * @internal The loaded addon, whole: for src/internal (test hooks) and the tests only. The rest
 * of kvtc sees it through the facades below, each the part one concept needs (a test checks that
 * nothing else imports this). Calls that can throw go through `callNative` to get KvtcErrors.
 */
export const native: NativeAddon = load();

/** Profiles, encode, decode, inspect and the non-finite scan (src/codec, src/cuda, the workers). */
export const codecAddon: Pick<NativeAddon, 'loadProfile' | 'profileInfo' | 'encode' | 'decodePrepare' | 'decodeInto' | 'inspectBlob' | 'scanNonFinite'> = native;
/** Calibration (src/codec/calibrate). */
export const calibratorAddon: Pick<NativeAddon, 'calibratorCreate' | 'calibratorAdd' | 'calibratorFinish'> = native;
/** The host arena, by handle (src/store/host-block, the workers). */
export const arenaAddon: Pick<NativeAddon, 'arenaPut' | 'arenaRead' | 'arenaFree' | 'arenaStats'> = native;
/** The CUDA backend of a CUDA build, undefined otherwise (src/cuda, src/backend). */
export const gpuAddon: NativeGpu | undefined = native.gpu;
/** What was compiled in, raw (src/backend; users call buildInfo()). */
export const buildInfoAddon: Pick<NativeAddon, 'buildInfo'> = native;

/**
 * For the store's codec workers: the addon's work (encode, decode, copies) started on this
 * thread runs on it, synchronously, and its promises settle before the call returns. The work
 * then runs at the worker thread's own priority (background encodes are niced) and on as many
 * threads as the pool has, instead of on libuv's pool next to the main thread.
 */
export function runAddonWorkOnThisThread(): void {
  native.setInlineExecution(true);
}

/** memcpy between two views of equal byte length (V8's own copy to or from shared memory goes element by element). */
export function copyBytes(dst: ArrayBufferView, src: ArrayBufferView): void {
  native.copyBytes(dst, src);
}

/** The same copies (dst, src pairs) on the addon's thread pool: whole caches never hold the event loop. */
export function copyBytesAsync(pairs: [ArrayBufferView, ArrayBufferView][]): Promise<void> {
  return callNative(() => native.copyBytesAsync(pairs)) as Promise<void>;
}

/** NaN/Inf check of the first `pairs` destinations of a copy, as it copies (dtype: 0 f32, 1 f16, 2 bf16). */
export interface CopyScan {
  dtype: 0 | 1 | 2;
  pairs: number;
}

/**
 * copyBytesAsync that also finds the first NaN or Inf in the first `scan.pairs` destinations (one
 * pass over the bytes): resolves with its pair and element index, or null.
 */
export function copyBytesScanAsync(pairs: [ArrayBufferView, ArrayBufferView][], scan: CopyScan): Promise<{ pair: number; element: number } | null> {
  return callNative(() => native.copyBytesAsync(pairs, scan)) as Promise<{ pair: number; element: number } | null>;
}

/** CRC-32C (Castagnoli) of `bytes`, as an unsigned 32-bit integer: the checksum of every record. */
export function crc32c(bytes: Uint8Array): number {
  return native.crc32c(bytes) >>> 0;
}

/** Runs a synchronous or promise-returning native call, converting its errors to KvtcError. */
export async function callNative<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toKvtcError(err);
  }
}

/** Synchronous variant of callNative. */
export function callNativeSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toKvtcError(err);
  }
}

/** What this build of kvtc contains and which accelerators it can use right now. */
export interface BuildInfo {
  /** This is the test-only addon whose CUDA backend runs on the CPU emulator (KVTC_ADDON=emulated). */
  cudaEmulated: boolean;
  /** CUDA code was compiled in. */
  cuda: boolean;
  /** Usable CUDA devices now (0 without a driver or device). */
  cudaDevices: number;
  /** Why no CUDA device is usable (null when one is). */
  cudaReason: string | null;
  /** The GPU projection GEMM mode in use (GpuGemmMode; or why $KVTC_GEMM is invalid); null without CUDA. */
  cudaGemm: string | null;
  /** OpenBLAS/LAPACKE were found at build time and are used for GEMM and the eigensolver. */
  openblas: boolean;
  /** Kernel path of calibration's dense algebra: 'openblas', or as codecGemm. */
  linalg: string;
  /**
   * Kernel path of the codec's projection GEMM: 'avx512', 'avx2' or 'scalar' — the widest the
   * CPU supports, lowered by $KVTC_SIMD (a path above the CPU's is ignored). For a $KVTC_SIMD
   * that names no path: the reason (CPU encode/decode/calibration then fail with E_OPTIONS).
   */
  codecGemm: string;
  /**
   * The CPU decoder's reconstruction: 'int8' (the default on a CPU with AVX-512 VNNI whose
   * codec runs the avx512 path, for profiles of ratio 6 and up — lower ones decode on FP32 unless
   * $KVTC_DECODE=int8: codes against an int8 copy of the basis, ~2x faster, relMSE within 0.3% of
   * FP32's) or 'f32' (dequantize, then the FP32 GEMM: other CPUs, or $KVTC_DECODE=f32). For an
   * invalid $KVTC_DECODE: the reason (CPU decode fails with E_OPTIONS).
   */
  codecDecode: string;
  /** SIMD extensions the CPU offers. */
  simd: string[];
  /** The addon file in use: a source build (build/Release) or a prebuild (prebuilds/). */
  addon: string;
}

export function buildInfo(): BuildInfo {
  return { ...native.buildInfo(), addon: loadedFrom };
}
