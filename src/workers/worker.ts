/**
 * A codec worker (Piscina). Encodes caches into the native host arena and decodes arena
 * handles or disk blobs into their place in a shared output, so the main thread never runs the
 * codec. The addon is process-wide,
 * so arena handles made here are valid on every thread.
 */
import { threadId } from 'node:worker_threads';
import { arenaAddon, runAddonWorkOnThisThread } from '../binding.js';
import { CodecProfile } from '../codec/profile.js';
import { decodeSlice, encodeToArena } from '../codec/codec.js';
import { contentChunkKey, segmentHash } from '../store/chain.js';
import { decodeRawSlice, encodeRaw } from '../store/raw-format.js';
import { dtypeBytes, rowValues } from '../layout.js';
import type { CodecTask, DecodeResult, EncodeResult, EncodeSegment, WireProfile, WorkerReply } from './tasks.js';
import type { KvCache } from '../layout.js';

// A worker thread is a codec thread: the native work runs here, at this thread's priority.
runAddonWorkOnThisThread();

const profiles = new Map<string, CodecProfile>();

function profileOf(p: WireProfile): CodecProfile {
  let prof = profiles.get(p.fingerprint);
  if (!prof) {
    prof = CodecProfile.fromBytes(p.bytes);
    profiles.set(p.fingerprint, prof);
  }
  return prof;
}

/** The tokens [start, start + n) of a cache, as views of the same memory. */
function sliceOf(cache: KvCache, start: number, n: number): KvCache {
  const rv = rowValues(cache.layout);
  const cut = (a: ArrayBufferView) => (a as Uint16Array | Float32Array).subarray(start * rv, (start + n) * rv);
  const positions = cache.positions ?? Int32Array.from({ length: cache.tokens }, (_, i) => i);
  return { layout: cache.layout, tokens: n, keys: cache.keys.map(cut), values: cache.values.map(cut), positions: positions.subarray(start, start + n) };
}

async function encodeSegment(task: Extract<CodecTask, { op: 'encode' }>, item: EncodeSegment): Promise<EncodeResult> {
  const whole = task.cache as KvCache;
  const seg = item.segment;
  let key: string | undefined;
  if (item.contentKey && seg) {
    const positions = whole.positions ?? Int32Array.from({ length: whole.tokens }, (_, i) => i);
    const hash = segmentHash(whole.keys, whole.values, positions, seg, rowValues(whole.layout) * dtypeBytes(whole.layout.dtype));
    key = contentChunkKey(item.contentKey.salt, seg, hash);
    if (item.contentKey.known.includes(key)) return { handle: -1, bytes: 0, key, skipped: true, threadId };
  }
  const cache = seg ? sliceOf(whole, seg.start, seg.tokens) : whole;
  if (task.format === 'raw') {
    const blob = encodeRaw(cache);
    const handle = arenaAddon.arenaPut(blob);
    return { handle, bytes: blob.length, threadId, ...(key ? { key } : {}) };
  }
  const r = await encodeToArena(cache, profileOf(task.profile), seg ? { sinks: seg.sinks, window: seg.window } : {});
  return { handle: r.handle, bytes: r.bytes, threadId, ...(key ? { key } : {}) };
}

/** Encodes the task's segments in order; if one fails, the blobs made before it are freed. */
async function encodeTask(task: Extract<CodecTask, { op: 'encode' }>): Promise<EncodeResult[]> {
  const out: EncodeResult[] = [];
  try {
    for (const item of task.segments) out.push(await encodeSegment(task, item));
    return out;
  } catch (err) {
    for (const r of out) if (r.handle >= 0) arenaAddon.arenaFree(r.handle);
    throw err;
  }
}

/** Decodes blobs into their places in a shared output (parts of one session). */
async function decodeTask(task: Extract<CodecTask, { op: 'decode' }>): Promise<DecodeResult> {
  const profile = profileOf(task.profile);
  for (const part of task.parts) {
    const src = 'handle' in part.source ? part.source.handle : part.source.blob;
    const into = { ...task.into, offset: part.offset };
    if (task.format === 'raw') {
      decodeRawSlice(typeof src === 'number' ? arenaAddon.arenaRead(src) : src, profile.layout, into, part.expectTokens);
    } else {
      await decodeSlice(src, profile, into, part.expectTokens, task.threads ?? 1);
    }
  }
  return { threadId, threads: task.format === 'raw' ? 1 : task.threads ?? 1 };
}

/**
 * The Piscina handler. Failures come back as values, not throws: a thrown error loses its
 * `code` crossing the thread boundary, and the pool needs it to rebuild the KvtcError.
 * Decoded caches live in SharedArrayBuffers, which postMessage shares without copying.
 */
export default async function handle(task: CodecTask): Promise<WorkerReply> {
  try {
    return { ok: true, value: task.op === 'encode' ? await encodeTask(task) : await decodeTask(task) };
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    return {
      ok: false,
      code: typeof e.code === 'string' ? e.code : 'E_INTERNAL',
      message: typeof e.message === 'string' ? e.message : String(err),
    };
  }
}
