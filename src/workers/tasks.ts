/**
 * Messages between the store (main thread) and its codec workers. Caches travel as views of
 * SharedArrayBuffers (shared, not copied); encoded blobs stay in the native host arena and travel
 * as handles; disk blobs travel as transferred ArrayBuffers.
 */
import type { DType, KvLayout } from '../layout.js';

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
}

export interface DecodeTask {
  op: 'decode';
  profile: WireProfile;
  format: BlobFormat;
  /** A host-arena handle, or a blob (transferred). */
  source: { handle: number } | { blob: Uint8Array };
  /** Threads for this one decode (kvtc blobs; default 1): idle pool capacity lent to a large restore. */
  threads?: number;
}

export type CodecTask = EncodeTask | DecodeTask;

export interface EncodeResult {
  handle: number;
  bytes: number;
  /** Thread the work ran on (tests check that it was not the main thread). */
  threadId: number;
}

export interface DecodeResult {
  cache: WireCache;
  dtype: DType;
  threadId: number;
  /** Threads the decode ran on. */
  threads: number;
}

export type WorkerReply =
  | { ok: true; value: EncodeResult | DecodeResult }
  | { ok: false; code: string; message: string };
