/**
 * How a session is cut into chunks below the hot tier (the store's second layout).
 *
 * A session of n tokens is a chain of full chunks of `chunkTokens` tokens, each encoded once on
 * its own, plus a tail: the tokens from the first chunk boundary that reaches into the recent
 * window to the end, encoded as the session's own blob. Only the session's first tokens are
 * sinks (a segment starting at s keeps max(0, sinks - s) of them lossless) and only the tail holds
 * the window, so cutting changes nothing the codec keeps lossless; the codec works per token, so
 * it costs no fidelity either. A session that grows by a turn re-encodes only its tail and the
 * chunks that are new.
 *
 * Chunk keys (16 bytes as 32 hex digits) say when two chunks are the same encoded bytes:
 * - with token ids (put's `tokens`): the prefix index's hash chain over (token id, position) up
 *   to the chunk's end (which binds the profile and the namespace), with the dtype, the format and
 *   the chunk's sink count: equal prefixes in one namespace give equal keys across sessions;
 * - without: the session id, the chunk's place and a SHA-256 of its raw bytes (a worker computes
 *   it while encoding), so the unchanged chunks of a grown session put again are recognised, and
 *   nothing is shared across sessions.
 */
import { createHash } from 'node:crypto';
import type { DType } from '../layout.js';
import type { BlobFormat } from '../workers/tasks.js';
import { chainKeys } from './prefix-index.js';

/** Tokens [start, start + tokens) of a session, and what of them the codec keeps lossless. */
export interface Segment {
  start: number;
  tokens: number;
  sinks: number;
  window: number;
}

export interface ChainPlan {
  /** Full chunks, in token order. */
  chunks: Segment[];
  /** The rest of the session: the session's own blob (it may hold 0 tokens). */
  tail: Segment;
}

/**
 * The cut of a session of `tokens` tokens (profile sinks and window as given). chunkTokens 0:
 * no chunks, the whole session is the tail (the first layout, one blob per session).
 */
export function planChain(tokens: number, chunkTokens: number, sinks: number, window: number): ChainPlan {
  const full = chunkTokens > 0 ? Math.floor(Math.max(0, tokens - window) / chunkTokens) : 0;
  const segment = (start: number, n: number, w: number): Segment => {
    const s = Math.min(n, Math.max(0, sinks - start));
    return { start, tokens: n, sinks: s, window: Math.min(w, n - s) };
  };
  const chunks: Segment[] = [];
  for (let i = 0; i < full; i++) chunks.push(segment(i * chunkTokens, chunkTokens, 0));
  const start = full * chunkTokens;
  return { chunks, tail: segment(start, tokens - start, window) };
}

/** What a chunk key binds besides its tokens. */
export interface KeyContext {
  fingerprint: string;
  namespace: string;
  dtype: DType;
  format: BlobFormat;
}

/** Keys of the chunks of a session put with token ids (see the file comment). */
export function tokenChunkKeys(ctx: KeyContext, tokenIds: Int32Array, positions: Int32Array, chunks: readonly Segment[], chunkTokens: number): string[] {
  if (chunks.length === 0) return [];
  const prefix = chainKeys(ctx.fingerprint, ctx.namespace, tokenIds.subarray(0, chunks.length * chunkTokens), chunkTokens, positions);
  return chunks.map((c, i) => derive(`kvtc-chunk-v1\0tokens\0${ctx.dtype}\0${ctx.format}\0${c.sinks}\0${c.tokens}`, prefix[i]!));
}

/** The salt of a token-less session's content keys: the session, the profile and the format. */
export function contentSalt(ctx: KeyContext, id: string): string {
  return `kvtc-chunk-v1\0content\0${ctx.fingerprint}\0${ctx.dtype}\0${ctx.format}\0${Buffer.byteLength(id)}\0${id}`;
}

/** A token-less chunk's key, from its salt, place and the SHA-256 of its raw bytes (hex). */
export function contentChunkKey(salt: string, c: Segment, contentHash: string): string {
  return derive(`${salt}\0${c.start}\0${c.tokens}\0${c.sinks}`, contentHash);
}

function derive(context: string, material: string): string {
  return createHash('sha256').update(context).update('\0').update(material).digest().subarray(0, 16).toString('hex');
}

/** SHA-256 of a segment's raw rows (every layer's keys, then values, then positions), hex. */
export function segmentHash(keys: readonly ArrayBufferView[], values: readonly ArrayBufferView[], positions: Int32Array, seg: Segment, rowBytes: number): string {
  const h = createHash('sha256');
  for (const a of [...keys, ...values]) h.update(new Uint8Array(a.buffer, a.byteOffset + seg.start * rowBytes, seg.tokens * rowBytes));
  h.update(new Uint8Array(positions.buffer, positions.byteOffset + 4 * seg.start, 4 * seg.tokens));
  return h.digest('hex');
}
