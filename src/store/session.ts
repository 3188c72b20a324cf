/**
 * What the store knows about one session, whatever tier holds it, and the helpers that copy
 * caches in and out of store-owned (shared) memory.
 */
import { copyBytes, copyBytesAsync, copyBytesScanAsync } from '../binding.js';
import { KvtcError } from '../errors.js';
import { type KvCache, type KvLayout, dtypeBytes, rowValues } from '../layout.js';
import type { BufferPool, Lease } from './buffer-pool.js';

/** Where a session is: the local tiers, or (KvStore `remote` option) the shared remote tier. */
export type Tier = 'device' | 'host' | 'disk' | 'remote';

export interface SessionMeta {
  id: string;
  /** The model layout with the dtype the session's data has. */
  layout: KvLayout;
  tokens: number;
  /** Bytes of the raw cache in its dtype. */
  rawBytes: number;
  pinned: boolean;
  priority: number;
  /** 0 = no TTL. */
  ttlMs: number;
  createdAt: number;
  lastAccess: number;
  /** Caller's opaque bytes kept with the session (e.g. an engine's token ids). */
  attachment?: Uint8Array;
  /** Token ids, one per cached position (put's `tokens`): indexed for prefix lookups. */
  tokenIds?: Int32Array;
  /** Prefixes are shared within one namespace only. */
  namespace?: string;
}

/** Longest id accepted, in UTF-8 bytes: LMDB keys are limited to 1978 bytes in lmdb-js; room is left for a key prefix. */
export const MAX_ID_BYTES = 1900;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The one check of a session id, applied by every public call and by the disk tier: a non-empty,
 * well-formed string (a lone surrogate would be stored as U+FFFD and come back as another id) of
 * at most MAX_ID_BYTES UTF-8 bytes. Throws E_OPTIONS naming what is wrong.
 */
export function validateId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new KvtcError('E_OPTIONS', `session id must be a non-empty string, got ${typeof id === 'string' ? "''" : String(id)}`);
  }
  if (LONE_SURROGATE.test(id)) {
    throw new KvtcError('E_OPTIONS', 'session id must be well-formed Unicode (it contains a lone surrogate)');
  }
  const bytes = Buffer.byteLength(id, 'utf8');
  if (bytes > MAX_ID_BYTES) {
    throw new KvtcError('E_OPTIONS', `session id must be at most ${MAX_ID_BYTES} UTF-8 bytes, got ${bytes}`);
  }
  return id;
}

/** What a session's bookkeeping costs besides its cache: its id, its metadata fields. */
const META_BYTES = 160;

/**
 * Bytes a session holds in a tier besides its cache data: the attachment, the metadata and, in
 * the hot tier, the positions array (blobs below carry their positions).
 */
export function overheadOf(meta: SessionMeta, hot: boolean): number {
  return (meta.attachment?.byteLength ?? 0) + (meta.tokenIds?.byteLength ?? 0) + Buffer.byteLength(meta.id, 'utf8') + META_BYTES + (hot ? 4 * meta.tokens : 0);
}

/** Bytes of a cache's arrays (keys, values; positions not counted). */
export function rawBytesOf(layout: KvLayout, tokens: number): number {
  return 2 * layout.layers * tokens * rowValues(layout) * dtypeBytes(layout.dtype);
}

/**
 * Copies a cache into one buffer (keys, values, positions), shared (for the device tier, which
 * hands caches to workers without copying) or plain (for callers, who must not alias store
 * memory). Positions are always materialized. Bytes move with a native memcpy: V8's own copy
 * to or from shared memory goes element by element.
 */
export function copyCache(cache: KvCache, shared: boolean): KvCache {
  const { out, pairs } = layoutCopy(cache, shared);
  for (const [dst, src] of pairs) copyBytes(dst, src);
  return out;
}

/**
 * copyCache with the bytes moved on the addon's thread pool (the store's copies of whole caches:
 * a long session of a large model is hundreds of MB, which must not hold the event loop). The
 * source arrays must not change until it resolves.
 */
export async function copyCacheAsync(cache: KvCache, shared: boolean): Promise<KvCache> {
  const { out, pairs } = layoutCopy(cache, shared);
  await copyBytesAsync(pairs);
  return out;
}

/** Where a cache holds a NaN or an Inf (its first one). */
export interface NonFiniteAt {
  stream: 'keys' | 'values';
  layer: number;
  token: number;
}

/**
 * copyCacheAsync into a store-owned buffer from `pool` (the hot tier's copy of a put cache): the
 * cache and its lease, held once for the caller, who hands it on or releases it. On failure the
 * buffer is released. With `scan`, the copy is also checked for NaN/Inf as it is made (one pass
 * over the bytes): `nonFinite` is the first one of the copy, or null.
 */
export async function copyCacheLeased(cache: KvCache, pool: BufferPool, scan = false): Promise<{ cache: KvCache; lease: Lease; nonFinite: NonFiniteAt | null }> {
  const lease = pool.acquire(cacheBytes(cache.layout, cache.tokens));
  try {
    const { out, pairs } = layoutCopy(cache, true, lease.buffer);
    const L = cache.layout.layers;
    if (!scan) {
      await copyBytesAsync(pairs);
      return { cache: out, lease, nonFinite: null };
    }
    // The pairs are keys[0..L), values[0..L), then positions (not scanned).
    const at = await copyBytesScanAsync(pairs, { dtype: DTYPE_CODES[cache.layout.dtype], pairs: 2 * L });
    const nonFinite = at ? { stream: at.pair < L ? ('keys' as const) : ('values' as const), layer: at.pair % L, token: Math.floor(at.element / rowValues(cache.layout)) } : null;
    return { cache: out, lease, nonFinite };
  } catch (err) {
    lease.release();
    throw err;
  }
}

const DTYPE_CODES = { f32: 0, f16: 1, bf16: 2 } as const;

/** Bytes of a cache laid out in one buffer as copyCache does (keys, values, positions). */
export function cacheBytes(layout: KvLayout, tokens: number): number {
  return 2 * layout.layers * tokens * rowValues(layout) * dtypeBytes(layout.dtype) + 4 * tokens;
}

/** The new cache of a copy (one buffer: keys, values, positions) and the copies that fill it. */
function layoutCopy(cache: KvCache, shared: boolean, into?: SharedArrayBuffer): { out: KvCache; pairs: [ArrayBufferView, ArrayBufferView][] } {
  const { layout, tokens } = cache;
  const perLayer = tokens * rowValues(layout) * dtypeBytes(layout.dtype);
  const total = 2 * layout.layers * perLayer + 4 * tokens;
  // Every byte is written below, so a private copy skips the zero fill (allocUnsafeSlow: a whole,
  // unpooled ArrayBuffer); a large cache's fill would otherwise be a pass over it on the event loop.
  // A pooled buffer (`into`, at least `total` bytes) holds an earlier cache: it is overwritten.
  const buf = into ?? (shared ? new SharedArrayBuffer(total) : Buffer.allocUnsafeSlow(total).buffer);
  const bytes = new Uint8Array(buf, 0, total);
  const n = tokens * rowValues(layout);
  const views: ArrayBufferView[] = [];
  const pairs: [ArrayBufferView, ArrayBufferView][] = [];
  let off = 0;
  for (const src of [...cache.keys, ...cache.values]) {
    pairs.push([bytes.subarray(off, off + src.byteLength), src]);
    views.push(layout.dtype === 'f32' ? new Float32Array(buf, off, n) : new Uint16Array(buf, off, n));
    off += perLayer;
  }
  const positions = new Int32Array(buf, off, tokens);
  if (cache.positions) pairs.push([positions, cache.positions]);
  else for (let i = 0; i < tokens; i++) positions[i] = i;
  const out: KvCache = {
    layout: { ...layout },
    tokens,
    positions,
    keys: views.slice(0, layout.layers),
    values: views.slice(layout.layers),
  };
  return { out, pairs };
}
