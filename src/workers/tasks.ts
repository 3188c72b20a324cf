/**
 * Messages between the store (main thread) and its codec workers. Caches travel as views of
 * SharedArrayBuffers (shared, not copied); encoded blobs stay in the native host arena and travel
 * as handles; disk blobs travel as transferred ArrayBuffers.
 */
import type { KvLayout } from '../layout.js';
import type { OutputSlice } from '../codec/codec.js';
import type { Segment } from '../store/chain.js';

/** A cache whose arrays are views of SharedArrayBuffers (or transferable ArrayBuffers). */
export interface WireCache {
  layout: KvLayout;
  tokens: number;
  positions?: Int32Array;
  keys: ArrayBufferView[];
  values: ArrayBufferView[];
}

/** The profile as the worker needs it: bytes shared once, identified by fingerprint. */
export interface WireProfile {
  fingerprint: string;
  bytes: Uint8Array; // view of a SharedArrayBuffer
}

export type BlobFormat = 'kvtc' | 'raw';

export interface EncodeTask {
  op: 'encode';
  profile: WireProfile;
  cache: WireCache;
  format: BlobFormat;
  /**
   * The segments to encode, in order (one task for several chunks of a session: one round trip
   * between the threads); none: the whole cache.
   */
  segments: EncodeSegment[];
}

export interface EncodeSegment {
  /** Encode only these tokens of the cache, with these sink and window counts (a chunk); absent: all. */
  segment?: Segment;
  /**
   * Key the segment by its content (chain.ts contentChunkKey with this salt); when the key is one
   * of `known`, nothing is encoded (the store holds that chunk already).
   */
  contentKey?: { salt: string; known: string[] };
}

export interface DecodeTask {
  op: 'decode';
  profile: WireProfile;
  format: BlobFormat;
  /**
   * The blobs to decode, in order, each into its place in the one shared output: several parts
   * of a session in one task cost one round trip between the threads, not one each.
   */
  parts: DecodePart[];
  /** Threads for each decode (kvtc blobs; default 1): idle pool capacity lent to a large restore. */
  threads?: number;
  /** The shared output (its `offset` is each part's). */
  into: Omit<OutputSlice, 'offset'>;
}

export interface DecodePart {
  /** A host-arena handle, or a blob (transferred). */
  source: { handle: number } | { blob: Uint8Array };
  /** The part's first token in the output, and its token count. */
  offset: number;
  expectTokens: number;
}

export type CodecTask = EncodeTask | DecodeTask;

export interface EncodeResult {
  /** The blob in the host arena; -1 when `skipped`. */
  handle: number;
  bytes: number;
  /** The content key (EncodeTask.contentKey). */
  key?: string;
  /** The key was known: nothing was encoded. */
  skipped?: boolean;
  /** Thread the work ran on (tests check that it was not the main thread). */
  threadId: number;
}

export interface DecodeResult {
  threadId: number;
  /** Threads the decode ran on. */
  threads: number;
}

export type WorkerReply =
  | { ok: true; value: EncodeResult[] | DecodeResult }
  | { ok: false; code: string; message: string };
