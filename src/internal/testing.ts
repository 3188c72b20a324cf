/**
 * Test-only access to a store's internals: fault injection and the threads that decoded. Not part
 * of the public API (the package's exports do not reach this module, and `@internal` members are
 * stripped from the published types).
 */
import { fileURLToPath } from 'node:url';
import type { KvStore } from '../store/store.js';
import { storeTestHooks } from '../store/store.js';

/** The compiled crash worker (dist/internal/crash-worker.js), whether this runs from src/ or dist/. */
const CRASH_WORKER = fileURLToPath(new URL('../../dist/internal/crash-worker.js', import.meta.url));

function hooks(store: KvStore) {
  const h = storeTestHooks.get(store);
  if (!h) throw new Error('not a KvStore');
  return h;
}

/** The next `n` codec tasks of the store's pool run on a worker thread that dies mid-task. */
export function injectWorkerCrashes(store: KvStore, n: number): void {
  hooks(store).pool.injectCrashes(n, CRASH_WORKER);
}

/** How many threads each recent restore on the pool decoded with. */
export function restoreThreads(store: KvStore): readonly number[] {
  return hooks(store).restoreThreads;
}

/** Thread ids the store's pool reported for decodes (the main thread never decodes). */
export function decodeThreads(store: KvStore): ReadonlySet<number> {
  return hooks(store).decodeThreads;
}

/** The store's pool of recycled cache buffers (buffer-pool.ts): its counts, and poisoning for reuse tests. */
export function bufferPool(store: KvStore): { readonly counts: { reused: number; allocated: number; recycled: number; dropped: number }; readonly idleBytes: number; poison: boolean } {
  return hooks(store).buffers;
}
