import { type BackendChoice, checkBackendChoice, resolveBackend } from '../backend.js';
import { type ArenaBlob, callNative, callNativeSync, codecAddon, copyBytesAsync } from '../binding.js';
import { KvtcError, invalidParameter } from '../errors.js';
import { type KvCache, type KvLayout, rowValues, sameShape, validateCache } from '../layout.js';
import { nativeCache } from './marshal.js';
import type { CodecProfile } from './profile.js';

export interface EncodeOptions {
  /**
   * Entropy-code the quantized sections with rANS (default true). false stores the packed
   * quantized rows as they are — for comparing entropy coders on exactly the same bytes.
   */
  entropy?: boolean;
  /**
   * 'auto' (default): the CUDA backend when a device is usable, else the CPU (one warning).
   * 'cuda' fails with E_BACKEND without a device. Both write the same format.
   */
  backend?: BackendChoice;
  /**
   * CPU threads for this one call, 1 to 64 (default 1): the stream groups are coded in parallel.
   * The blob is the same for every value. Ignored by the CUDA backend.
   */
  threads?: number;
}

export interface DecodeOptions {
  /** As EncodeOptions.backend. A blob decodes on either backend, whichever encoded it. */
  backend?: BackendChoice;
  /** As EncodeOptions.threads: the decoded cache is the same for every value. */
  threads?: number;
  /**
   * A cache to decode into instead of allocating one: an engine's own KV buffers, reused from
   * call to call, so the decode pays no allocation and no first-touch page faults (a fresh
   * output of hundreds of MB costs ~15% of the decode) and makes no garbage. Its layout must be
   * the profile's (else E_PROFILE_MISMATCH) with the blob's dtype, and `into.tokens`, its
   * capacity, at least the blob's tokens (else E_LAYOUT). The result's arrays are views of the first rows of `into`'s arrays (and of
   * `into.positions` when it has one); rows past the blob's are left as they were. Must not
   * overlap the blob. Default: a new cache.
   */
  into?: KvCache;
}

/** Most CPU threads one encode/decode call may use. */
const MAX_CALL_THREADS = 64;

function checkThreads(threads: unknown): number {
  if (threads === undefined) return 1;
  if (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > MAX_CALL_THREADS) {
    throw new KvtcError('E_OPTIONS', `options.threads must be an integer from 1 to ${MAX_CALL_THREADS}, got ${String(threads)}`);
  }
  return threads;
}

/**
 * Compresses one cache with a profile. Tokens [0, sinkTokens) and the last windowTokens are kept
 * losslessly; the rest are transform-coded. Middle tokens holding NaN/Inf (or values too large
 * for the fp16 quantization parameters) are stored raw, so they round-trip exactly.
 * Runs off the main thread. The cache's arrays must not be modified until the promise settles.
 */
export async function encode(cache: KvCache, profile: CodecProfile, options: EncodeOptions = {}): Promise<Uint8Array> {
  validateCache(cache);
  checkProfileFits(cache.layout, profile);
  if (options.entropy !== undefined && typeof options.entropy !== 'boolean') {
    throw new KvtcError('E_OPTIONS', `options.entropy must be a boolean, got ${String(options.entropy)}`);
  }
  const threads = checkThreads(options.threads);
  const gpu = resolveBackend(checkBackendChoice(options.backend ?? 'auto', 'options.backend')) === 'cuda';
  const handle = await profile.nativeHandle();
  const ab = await callNative(() => codecAddon.encode(handle, nativeCache(cache), { entropy: options.entropy ?? true, gpu, threads }));
  return new Uint8Array(ab);
}

/**
 * Encodes a validated cache straight into the host arena (the store's demotions): on the worker
 * it runs on (CPU), or on the GPU (`gpu`). The caller owns the returned block.
 */
export async function encodeToArena(cache: KvCache, profile: CodecProfile, options: { gpu?: boolean; sinks?: number; window?: number } = {}): Promise<ArenaBlob> {
  const handle = await profile.nativeHandle();
  const o: { toArena: true; gpu: boolean; sinks?: number; window?: number } = { toArena: true, gpu: options.gpu ?? false };
  if (options.sinks !== undefined) o.sinks = options.sinks;
  if (options.window !== undefined) o.window = options.window;
  return callNative(() => codecAddon.encode(handle, nativeCache(cache), o));
}

/** Where decodeSlice writes: rows [offset, offset + n) of one cache of `tokens` tokens (one buffer per stream). */
export interface OutputSlice {
  keys: Uint8Array;
  values: Uint8Array;
  positions: Int32Array;
  offset: number;
  tokens: number;
  dtype: KvLayout['dtype'];
}

/**
 * Decodes a blob (or host-arena handle) of exactly `expectTokens` tokens into its place in a
 * larger output (the chunks of one session, side by side). E_CORRUPT when the blob is damaged or
 * is not the chunk its manifest says (token count, dtype).
 */
export async function decodeSlice(source: Uint8Array | number, profile: CodecProfile, out: OutputSlice, expectTokens: number, threads = 1): Promise<void> {
  const handle = await profile.nativeHandle();
  const prep = await callNative(() => codecAddon.decodePrepare(handle, source));
  if (prep.tokens !== expectTokens || prep.dtype !== out.dtype) {
    throw new KvtcError('E_CORRUPT', `chunk holds ${prep.tokens} ${prep.dtype} tokens, its session expects ${expectTokens} ${out.dtype} tokens`);
  }
  if (expectTokens === 0) return;
  await callNative(() => codecAddon.decodeInto(handle, source, out.keys, out.values, out.positions, false, threads, out.offset, out.tokens));
}

/** The first NaN/Inf of a cache (scanned off the main thread), or null. */
export function findNonFinite(cache: KvCache): Promise<{ stream: 'keys' | 'values'; layer: number; token: number } | null> {
  return callNative(() => codecAddon.scanNonFinite(nativeCache(cache), cache.layout.layers, rowValues(cache.layout)));
}

/**
 * Restores a cache from a blob made by encode() with the same profile. Fails with E_CORRUPT for
 * a damaged or truncated blob and E_PROFILE_MISMATCH for a blob of another profile — never
 * returns wrong data. Output dtype is the dtype that was encoded.
 */
export async function decode(blob: Uint8Array, profile: CodecProfile, options: DecodeOptions = {}): Promise<KvCache> {
  if (!(blob instanceof Uint8Array)) {
    throw invalidParameter('blob', 'a Uint8Array', blob);
  }
  const threads = checkThreads(options.threads);
  const gpu = resolveBackend(checkBackendChoice(options.backend ?? 'auto', 'options.backend')) === 'cuda';
  if (options.into === undefined) return decodeSource(blob, profile, { gpu, threads });
  const into = checkInto(options.into, profile);
  const handle = await profile.nativeHandle();
  const prep = await callNative(() => codecAddon.decodePrepare(handle, blob));
  const out = cacheRows(into, prep.tokens, prep.dtype);
  if (gpu) {
    // The GPU decode writes whole contiguous outputs: decoded there, then copied into place.
    await copyRows(await decodeSource(blob, profile, { gpu, threads }), out);
  } else {
    await callNative(() => codecAddon.decodeInto(handle, blob, out.keys, out.values, out.positions!, false, threads));
  }
  return out;
}

/** A caller's cache to write into (options.into): a valid cache of the profile's layout. */
export function checkInto(into: unknown, profile: CodecProfile): KvCache {
  const c = validateCache(into, 'options.into');
  checkProfileFits(c.layout, profile);
  return c;
}

/**
 * The first `tokens` rows of a caller's cache (views of its arrays) to write a decode of that
 * dtype into; E_LAYOUT when the cache has another dtype or too few tokens.
 */
export function cacheRows(into: KvCache, tokens: number, dtype: KvLayout['dtype']): KvCache {
  if (into.layout.dtype !== dtype) {
    throw new KvtcError('E_LAYOUT', `options.into has dtype ${into.layout.dtype}; the cache to write into it is ${dtype}`);
  }
  if (into.tokens < tokens) {
    throw new KvtcError('E_LAYOUT', `options.into holds ${into.tokens} tokens; the cache to write into it has ${tokens}`);
  }
  const n = tokens * rowValues(into.layout);
  const rows = (a: ArrayBufferView) => (a as Uint16Array | Float32Array).subarray(0, n);
  return {
    layout: { ...into.layout },
    tokens,
    positions: into.positions ? into.positions.subarray(0, tokens) : new Int32Array(tokens),
    keys: into.keys.map(rows),
    values: into.values.map(rows),
  };
}

/** Copies a cache's arrays into another's of the same layout and tokens, off the event loop. */
export function copyRows(src: KvCache, dst: KvCache): Promise<void> {
  const pairs: [ArrayBufferView, ArrayBufferView][] = [];
  for (const stream of ['keys', 'values'] as const) src[stream].forEach((a, l) => pairs.push([dst[stream][l]!, a]));
  if (src.positions) pairs.push([dst.positions!, src.positions]);
  else dst.positions!.forEach((_, i, p) => (p[i] = i));
  return copyBytesAsync(pairs);
}

/**
 * Decodes a blob or a host-arena handle. Output memory is allocated here, in JavaScript, and
 * only after the native side verified the checksum and every size in the header: a damaged or
 * forged header can at worst make the allocation fail (E_CAPACITY), never crash the process.
 */
export async function decodeSource(
  source: Uint8Array | number,
  profile: CodecProfile,
  options: { shared?: boolean; gpu?: boolean; threads?: number } = {},
): Promise<KvCache> {
  const handle = await profile.nativeHandle();
  const prep = await callNative(() => codecAddon.decodePrepare(handle, source));
  // shared: the store keeps decoded caches in SharedArrayBuffers it can hand to workers uncopied.
  const Buf = options.shared ? SharedArrayBuffer : ArrayBuffer;
  let keysBuf: ArrayBufferLike;
  let valuesBuf: ArrayBufferLike;
  let positions: Int32Array;
  try {
    keysBuf = new Buf(prep.bytesPerStream);
    valuesBuf = new Buf(prep.bytesPerStream);
    positions = new Int32Array(new Buf(prep.tokens * 4));
  } catch (err) {
    throw new KvtcError('E_CAPACITY', `cannot allocate 2 x ${prep.bytesPerStream} bytes for the decoded cache`, { cause: err });
  }
  await callNative(() =>
    codecAddon.decodeInto(
      handle,
      source,
      new Uint8Array(keysBuf),
      new Uint8Array(valuesBuf),
      positions,
      options.gpu ?? false,
      options.threads ?? 1,
    ),
  );
  const layout: KvLayout = { ...profile.layout, dtype: prep.dtype };
  const perLayer = prep.tokens * rowValues(layout);
  const view = (buf: ArrayBufferLike, l: number) =>
    layout.dtype === 'f32' ? new Float32Array(buf, l * perLayer * 4, perLayer) : new Uint16Array(buf, l * perLayer * 2, perLayer);
  const keys: ArrayBufferView[] = [];
  const values: ArrayBufferView[] = [];
  for (let l = 0; l < layout.layers; l++) {
    keys.push(view(keysBuf, l));
    values.push(view(valuesBuf, l));
  }
  return { layout, tokens: prep.tokens, positions, keys, values };
}

/** Header facts of a blob, read without decoding. */
export interface BlobInfo {
  /** Fingerprint of the profile the blob needs (32 hex digits). */
  fingerprint: string;
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: 'f32' | 'f16' | 'bf16';
  tokens: number;
  /** Tokens stored losslessly at the start / end. */
  sinkTokens: number;
  windowTokens: number;
  /** Middle tokens stored raw because they held NaN/Inf or out-of-range values. */
  escapedTokens: number;
  /** Positions are positionStart + i (stored compactly); otherwise listed explicitly. */
  contiguousPositions: boolean;
  positionStart: number;
  /** Blob size in bytes. */
  bytes: number;
  /** Size of the same cache as fp16 (the reference for ratios). */
  rawBytesF16: number;
  /** rawBytesF16 / bytes. */
  ratio: number;
  /** Section 0: raw tokens; then one per stream group (keys groups, then values groups). */
  sections: { mode: 'rans' | 'stored'; storedBytes: number; rawBytes: number }[];
  /** Whether the checksum was verified (inspect(blob, { verify: true })). */
  verified: boolean;
}

/**
 * Reads a blob's header (and, with verify, checks its checksum) without decoding.
 * Throws E_CORRUPT for anything that is not an intact kvtc blob.
 */
export function inspect(blob: Uint8Array, options: { verify?: boolean } = {}): BlobInfo {
  if (!(blob instanceof Uint8Array)) throw invalidParameter('blob', 'a Uint8Array', blob);
  const verify = options.verify ?? false;
  const h = callNativeSync(() => codecAddon.inspectBlob(blob, verify));
  const rawBytesF16 = 2 * h.layers * h.tokens * h.kvHeads * h.headDim * 2;
  return { ...h, fingerprint: Buffer.from(h.fingerprint).toString('hex'), rawBytesF16, ratio: rawBytesF16 / h.bytes, verified: verify };
}

/** A cache must have the profile's model shape (dtype may differ). */
export function checkProfileFits(layout: KvLayout, profile: CodecProfile): void {
  if (!sameShape(layout, profile.layout)) {
    const p = profile.layout;
    throw new KvtcError(
      'E_PROFILE_MISMATCH',
      `cache layout (${layout.layers} layers x ${layout.kvHeads} kvHeads x ${layout.headDim}, rope ${layout.rope?.style ?? 'none'}) ` +
        `does not match the profile (${p.layers} x ${p.kvHeads} x ${p.headDim}, rope ${p.rope?.style ?? 'none'}; fingerprint ${profile.fingerprint})`,
    );
  }
}
