/**
 * A codec worker (Piscina). Encodes caches into the native host arena and decodes arena
 * handles or disk blobs, so the main thread never runs the codec. The addon is process-wide,
 * so arena handles made here are valid on every thread.
 */
import { threadId } from 'node:worker_threads';
import { arenaAddon } from '../binding.js';
import { CodecProfile } from '../codec/profile.js';
import { decodeSource, encodeToArena } from '../codec/codec.js';
import { decodeRaw, encodeRaw } from '../store/raw-format.js';
import type { CodecTask, DecodeResult, EncodeResult, WireProfile, WorkerReply } from './tasks.js';
import type { KvCache } from '../layout.js';

const profiles = new Map<string, CodecProfile>();

function profileOf(p: WireProfile): CodecProfile {
  let prof = profiles.get(p.fingerprint);
  if (!prof) {
    prof = CodecProfile.fromBytes(p.bytes);
    profiles.set(p.fingerprint, prof);
  }
  return prof;
}

async function encodeTask(task: Extract<CodecTask, { op: 'encode' }>): Promise<EncodeResult> {
  if (task.format === 'raw') {
    const blob = encodeRaw(task.cache);
    const handle = arenaAddon.arenaPut(blob);
    return { handle, bytes: blob.length, threadId };
  }
  const r = await encodeToArena(task.cache as KvCache, profileOf(task.profile));
  return { handle: r.handle, bytes: r.bytes, threadId };
}

async function decodeTask(task: Extract<CodecTask, { op: 'decode' }>): Promise<DecodeResult> {
  const profile = profileOf(task.profile);
  let cache: KvCache;
  if (task.format === 'raw') {
    const blob = 'handle' in task.source ? arenaAddon.arenaRead(task.source.handle) : task.source.blob;
    cache = decodeRaw(blob, profile.layout, true);
  } else {
    const src = 'handle' in task.source ? task.source.handle : task.source.blob;
    cache = await decodeSource(src, profile, { shared: true, threads: task.threads ?? 1 });
  }
  return { cache, dtype: cache.layout.dtype, threadId, threads: task.format === 'raw' ? 1 : task.threads ?? 1 };
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
