/**
 * Caches in GPU memory: what an engine running in the same process hands kvtc without a host
 * round trip. Device addresses are bigints (a CUdeviceptr / the value of a `void*` from
 * cudaMalloc). kvtc checks that every address is device memory of the current device (device
 * 0 unless the process selected another), aligned to its elements, and that its allocation
 * (as the driver reports it) holds the bytes the call needs from that address on; a buffer
 * shorter than the tokens claimed is E_LAYOUT, never an out-of-bounds kernel.
 * All of this needs the CUDA backend (E_BACKEND otherwise) and runs off the main thread.
 */
import { cudaUnavailableReason } from '../backend.js';
import { type ArenaBlob, callNative, codecAddon, gpuAddon, type NativeDeviceCache, type NativeGpu } from '../binding.js';
import type { CodecProfile } from '../codec/profile.js';
import { checkProfileFits } from '../codec/codec.js';
import { DTYPE_CODE } from '../codec/marshal.js';
import { KvtcError } from '../errors.js';
import { type KvCache, type KvLayout, dtypeBytes, rowValues, validateLayout } from '../layout.js';

/** A cache whose layers live in device memory. */
export interface DeviceKvCache {
  layout: KvLayout;
  tokens: number;
  /** Per layer: device address of [tokens][kvHeads][headDim] elements of layout.dtype. */
  keys: bigint[];
  values: bigint[];
  /** Absolute positions (host memory); default 0..tokens-1. */
  positions?: Int32Array;
  /** The cudaStream_t the cache was written on: kvtc's reads are ordered after it. */
  stream?: bigint;
}

/** Device buffers to decode into: room for capacityTokens tokens per layer, in layout.dtype. */
export interface DeviceKvTarget {
  layout: KvLayout;
  capacityTokens: number;
  keys: bigint[];
  values: bigint[];
  /** kvtc's writes are ordered on this stream (and complete when the promise settles). */
  stream?: bigint;
}

export function gpuApi(): NativeGpu {
  const problem = cudaUnavailableReason();
  if (problem !== null || !gpuAddon) throw new KvtcError('E_BACKEND', `the CUDA backend is not usable: ${problem}`);
  return gpuAddon;
}

function checkAddresses(value: unknown, layers: number, field: string): bigint[] {
  if (!Array.isArray(value) || value.length !== layers) {
    throw new KvtcError('E_LAYOUT', `${field} must be an array of ${layers} device addresses (bigint)`);
  }
  value.forEach((a, i) => {
    if (typeof a !== 'bigint' || a <= 0n || a >= 1n << 64n) {
      throw new KvtcError('E_LAYOUT', `${field}[${i}] must be a non-zero bigint device address, got ${String(a)}`);
    }
  });
  return value as bigint[];
}

function checkStream(value: unknown, field: string): void {
  if (value !== undefined && (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n)) {
    throw new KvtcError('E_LAYOUT', `${field} must be a cudaStream_t as a bigint, got ${String(value)}`);
  }
}

export function isDeviceKvCache(value: unknown): value is DeviceKvCache {
  const keys = (value as { keys?: unknown[] } | null)?.keys;
  return Array.isArray(keys) && typeof keys[0] === 'bigint';
}

export function validateDeviceCache(cache: unknown, field = 'cache'): DeviceKvCache {
  if (typeof cache !== 'object' || cache === null) throw new KvtcError('E_LAYOUT', `${field} must be an object`);
  const c = cache as Partial<DeviceKvCache>;
  const layout = validateLayout(c.layout, `${field}.layout`);
  if (typeof c.tokens !== 'number' || !Number.isInteger(c.tokens) || c.tokens < 0 || c.tokens > 0x7fffffff) {
    throw new KvtcError('E_LAYOUT', `${field}.tokens must be a non-negative integer, got ${String(c.tokens)}`);
  }
  checkAddresses(c.keys, layout.layers, `${field}.keys`);
  checkAddresses(c.values, layout.layers, `${field}.values`);
  if (c.positions !== undefined && (!(c.positions instanceof Int32Array) || c.positions.length !== c.tokens)) {
    throw new KvtcError('E_LAYOUT', `${field}.positions must be an Int32Array of ${c.tokens} values (one per token)`);
  }
  checkStream(c.stream, `${field}.stream`);
  return c as DeviceKvCache;
}

export function validateDeviceTarget(target: unknown, field = 'target'): DeviceKvTarget {
  if (typeof target !== 'object' || target === null) throw new KvtcError('E_LAYOUT', `${field} must be an object`);
  const t = target as Partial<DeviceKvTarget>;
  const layout = validateLayout(t.layout, `${field}.layout`);
  if (typeof t.capacityTokens !== 'number' || !Number.isInteger(t.capacityTokens) || t.capacityTokens < 0) {
    throw new KvtcError('E_LAYOUT', `${field}.capacityTokens must be a non-negative integer, got ${String(t.capacityTokens)}`);
  }
  checkAddresses(t.keys, layout.layers, `${field}.keys`);
  checkAddresses(t.values, layout.layers, `${field}.values`);
  checkStream(t.stream, `${field}.stream`);
  return t as DeviceKvTarget;
}

function nativeDeviceCache(c: DeviceKvCache): NativeDeviceCache {
  const n: NativeDeviceCache = { tokens: c.tokens, dtype: DTYPE_CODE[c.layout.dtype], keys: c.keys, values: c.values };
  if (c.positions) n.positions = c.positions;
  if (c.stream !== undefined) n.stream = c.stream;
  return n;
}

/** Encodes a cache that lives in device memory, on the GPU. Same blob format as encode(). */
export async function encodeDevice(cache: DeviceKvCache, profile: CodecProfile, options: { entropy?: boolean } = {}): Promise<Uint8Array> {
  const c = validateDeviceCache(cache);
  checkProfileFits(c.layout, profile);
  const gpu = gpuApi();
  const handle = await profile.nativeHandle();
  return new Uint8Array(await callNative(() => gpu.encodeDevice(handle, nativeDeviceCache(c), options.entropy ?? true, false)));
}

/** The first NaN/Inf of a validated device cache (keys before values, then layer, then token), or null. */
export function findNonFiniteDevice(cache: DeviceKvCache): Promise<{ stream: 'keys' | 'values'; layer: number; token: number } | null> {
  const gpu = gpuApi();
  return callNative(() => gpu.scanNonFinite(nativeDeviceCache(cache), rowValues(cache.layout)));
}

/** encodeDevice into the host arena (the store's host tier), for a validated cache. */
export async function encodeDeviceToArena(cache: DeviceKvCache, profile: CodecProfile): Promise<ArenaBlob> {
  const gpu = gpuApi();
  const handle = await profile.nativeHandle();
  return callNative(() => gpu.encodeDevice(handle, nativeDeviceCache(cache), true, true));
}

/**
 * Decodes a blob (or a host-arena handle, for the store) straight into device buffers. The
 * target's dtype must be the blob's and its capacity at least the blob's tokens. Returns the
 * token count and positions; the device buffers hold the cache when the promise resolves.
 */
export async function decodeToDevice(
  blob: Uint8Array | number,
  profile: CodecProfile,
  target: DeviceKvTarget,
): Promise<{ tokens: number; positions: Int32Array }> {
  if (!(blob instanceof Uint8Array) && typeof blob !== 'number') throw new KvtcError('E_CORRUPT', 'blob must be a Uint8Array');
  const t = validateDeviceTarget(target);
  checkProfileFits(t.layout, profile);
  const gpu = gpuApi();
  const handle = await profile.nativeHandle();
  const prep = await callNative(() => codecAddon.decodePrepare(handle, blob));
  if (prep.dtype !== t.layout.dtype) {
    throw new KvtcError('E_LAYOUT', `blob holds ${prep.dtype} values; the target is ${t.layout.dtype}`);
  }
  if (prep.tokens > t.capacityTokens) {
    throw new KvtcError('E_CAPACITY', `blob holds ${prep.tokens} tokens; the target has room for ${t.capacityTokens}`);
  }
  const positions = new Int32Array(prep.tokens);
  await callNative(() =>
    gpu.decodeToDevice(handle, blob, { keys: t.keys, values: t.values, ...(t.stream !== undefined ? { stream: t.stream } : {}) }, positions),
  );
  return { tokens: prep.tokens, positions };
}

/** Bytes of one layer of one stream of a cache of `tokens` tokens. */
export function deviceLayerBytes(layout: KvLayout, tokens: number): number {
  return tokens * rowValues(layout) * dtypeBytes(layout.dtype);
}

/** A private copy of a cache's positions (0..tokens-1 when it has none). */
export function ownPositions(cache: { tokens: number; positions?: Int32Array | undefined }): Int32Array {
  return cache.positions ? Int32Array.from(cache.positions) : Int32Array.from({ length: cache.tokens }, (_, i) => i);
}

/** A host copy of a device cache (plain ArrayBuffers the caller owns). */
export async function downloadDeviceCache(cache: DeviceKvCache): Promise<KvCache> {
  const lb = deviceLayerBytes(cache.layout, cache.tokens);
  const L = cache.layout.layers;
  const buf = new ArrayBuffer(2 * L * lb);
  const n = cache.tokens * rowValues(cache.layout);
  const views = [...cache.keys, ...cache.values].map((_, i) => (cache.layout.dtype === 'f32' ? new Float32Array(buf, i * lb, n) : new Uint16Array(buf, i * lb, n)));
  for (let i = 0; i < 2 * L; i++) await deviceMemory.download(views[i]!, i < L ? cache.keys[i]! : cache.values[i - L]!, cache.stream);
  return {
    layout: { ...cache.layout },
    tokens: cache.tokens,
    positions: ownPositions(cache),
    keys: views.slice(0, L),
    values: views.slice(L),
  };
}

/** Uploads a host cache into a caller's device buffers (checked like decodeToDevice). */
export async function uploadToTarget(cache: KvCache, target: DeviceKvTarget): Promise<void> {
  if (cache.layout.dtype !== target.layout.dtype) {
    throw new KvtcError('E_LAYOUT', `session holds ${cache.layout.dtype} values; the target is ${target.layout.dtype}`);
  }
  if (cache.tokens > target.capacityTokens) {
    throw new KvtcError('E_CAPACITY', `session holds ${cache.tokens} tokens; the target has room for ${target.capacityTokens}`);
  }
  for (let l = 0; l < cache.layout.layers; l++) {
    await deviceMemory.upload(target.keys[l]!, cache.keys[l]!, target.stream);
    await deviceMemory.upload(target.values[l]!, cache.values[l]!, target.stream);
  }
}

/**
 * Device memory through kvtc's CUDA backend: for engines and tests that need buffers to hand to
 * encodeDevice / decodeToDevice, and for the store's device tier. Allocation failure is
 * E_CAPACITY; every call runs off the main thread.
 */
export const deviceMemory = {
  alloc: (bytes: number): Promise<bigint> => callNative(() => gpuApi().alloc(bytes)),
  /**
   * Only addresses from alloc, once. The memory returns to the pool in stream order: pass the
   * stream of any work still using it (default: after the legacy default stream's work).
   */
  free: (address: bigint, stream?: bigint): Promise<void> => callNative(() => gpuApi().free(address, stream)),
  /** Copies resolve when complete; `stream` orders them after that cudaStream_t's queued work. */
  upload: (dst: bigint, src: ArrayBufferView, stream?: bigint): Promise<void> => callNative(() => gpuApi().copyToDevice(dst, src, stream)),
  download: (dst: ArrayBufferView, src: bigint, stream?: bigint): Promise<void> => callNative(() => gpuApi().copyToHost(dst, src, stream)),
  copy: (dst: bigint, src: bigint, bytes: number, stream?: bigint): Promise<void> =>
    callNative(() => gpuApi().copyOnDevice(dst, src, bytes, stream)),
  info: (): Promise<{ free: number; total: number }> => callNative(() => gpuApi().memoryInfo()),
};
