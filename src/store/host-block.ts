/**
 * One encoded blob in the native host arena (page-locked memory when CUDA is usable), owned by
 * exactly one holder — a host-tier entry, or a store operation in flight. The holder frees it
 * once; a second free is a no-op, and using a freed block is an E_INTERNAL bug report instead of
 * a read of memory that may already belong to another blob.
 */
import { type ArenaBlob, arenaAddon } from '../binding.js';
import { KvtcError } from '../errors.js';

export class HostBlock {
  #handle: number | undefined;
  /** Bytes of the blob. */
  readonly bytes: number;

  private constructor(handle: number, bytes: number) {
    this.#handle = handle;
    this.bytes = bytes;
  }

  /** Takes ownership of a blob a codec worker or the GPU wrote into the arena. */
  static adopt(blob: ArenaBlob): HostBlock {
    return new HostBlock(blob.handle, blob.bytes);
  }

  /** Copies bytes (e.g. a disk record) into a new arena block. */
  static copyOf(bytes: Uint8Array): HostBlock {
    return new HostBlock(arenaAddon.arenaPut(bytes), bytes.byteLength);
  }

  /** The arena handle, for the codec calls that read the blob in place. */
  get handle(): number {
    if (this.#handle === undefined) throw new KvtcError('E_INTERNAL', 'a freed host-arena block was used');
    return this.#handle;
  }

  get freed(): boolean {
    return this.#handle === undefined;
  }

  /** A copy of the blob's bytes. */
  read(): Uint8Array {
    return arenaAddon.arenaRead(this.handle);
  }

  /** Returns the memory to the arena; later calls do nothing. */
  free(): void {
    if (this.#handle === undefined) return;
    arenaAddon.arenaFree(this.#handle);
    this.#handle = undefined;
  }
}

/** The arena's totals: blocks and bytes in use, and whether its memory is page-locked. */
export function arenaStats(): { blocks: number; bytes: number; pinned: boolean } {
  const a = arenaAddon.arenaStats();
  return { blocks: a.blocks, bytes: a.bytes, pinned: a.pinned };
}
