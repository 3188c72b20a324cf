/**
 * Reference counts of stored chunks, kept for millions of chunks outside the JavaScript object
 * graph: an open-addressing hash table (linear probing, backward-shift deletion) in typed arrays,
 * keyed by the chunk key's 16 bytes. A Map of key strings cost ~90 bytes of V8 heap per chunk
 * that every major GC had to mark (~100 MB at a million chunks, tens of ms a pause); here a
 * chunk is 29 bytes of array memory, which the GC never walks. Totals are maintained on every
 * change (O(1) reads).
 */
import { KvtcError } from '../errors.js';

const MIN_SLOTS = 1024;
const KEY = /^[0-9a-f]{32}$/i;

export class ChunkCounts {
  /** Slots: a power of two, at most half full. */
  #slots = MIN_SLOTS;
  /** The key of each slot, as four 32-bit words. */
  #keys = new Uint32Array(MIN_SLOTS * 4);
  /** The stored chunk's size, bytes. */
  #sizes = new Float64Array(MIN_SLOTS);
  /** References (0: stored, not referenced, not removed yet). */
  #refs = new Uint32Array(MIN_SLOTS);
  #used = new Uint8Array(MIN_SLOTS);
  #count = 0;
  #total = 0;
  #refTotal = 0;
  #saved = 0;
  /** The key being looked up, parsed once per call. */
  readonly #probe = new Uint32Array(4);

  get size(): number {
    return this.#count;
  }

  has(key: string): boolean {
    return this.#find(key) >= 0;
  }

  /** A stored chunk's size, or undefined. */
  bytesOf(key: string): number | undefined {
    const i = this.#find(key);
    return i >= 0 ? this.#sizes[i] : undefined;
  }

  /** References to a chunk (0 for one not stored). */
  refs(key: string): number {
    const i = this.#find(key);
    return i >= 0 ? this.#refs[i]! : 0;
  }

  /** One more reference (a chunk not counted yet is stored now, with this size). */
  ref(key: string, bytes: number): void {
    this.#find(key);
    this.#refProbe(bytes);
  }

  #refProbe(bytes: number): void {
    let i = this.#findProbe();
    if (i < 0) {
      i = this.#insert(-i - 1, bytes);
      this.#total += bytes;
    } else {
      const n = this.#refs[i]!;
      if (n > 0) this.#saved += this.#sizes[i]!;
    }
    this.#refs[i]!++;
    this.#refTotal++;
  }

  /** One reference fewer; the chunk stays counted (at 0) until `drop`. */
  unref(key: string): void {
    this.#find(key);
    this.#unrefProbe();
  }

  #unrefProbe(): void {
    const i = this.#findProbe();
    if (i < 0) return;
    const n = this.#refs[i]!;
    if (n === 0) return;
    this.#refs[i] = n - 1;
    this.#refTotal--;
    if (n > 1) this.#saved -= this.#sizes[i]!;
  }

  /** Forgets a chunk removed from storage. */
  drop(key: string): void {
    const i = this.#find(key);
    if (i < 0) return;
    const n = this.#refs[i]!;
    const size = this.#sizes[i]!;
    this.#refTotal -= n;
    if (n > 1) this.#saved -= (n - 1) * size;
    this.#total -= size;
    this.#remove(i);
  }

  /** Chunks, references, their bytes, and the bytes sharing saves. */
  totals(): { chunks: number; refs: number; bytes: number; saved: number } {
    return { chunks: this.#count, refs: this.#refTotal, bytes: this.#total, saved: this.#saved };
  }

  /**
   * One more reference to every chunk of a packed chunk list (packed-chunks.ts: 24 bytes per
   * chunk, the key's 16 bytes then its size): the string-free path of loading a record.
   */
  refPacked(packed: Uint8Array): void {
    const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
    for (let o = 0; o + 24 <= packed.byteLength; o += 24) {
      this.#probeBytes(view, o);
      this.#refProbe(view.getUint32(o + 16, true));
    }
  }

  /** unref for every chunk of a packed chunk list. */
  unrefPacked(packed: Uint8Array): void {
    const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
    for (let o = 0; o + 24 <= packed.byteLength; o += 24) {
      this.#probeBytes(view, o);
      this.#unrefProbe();
    }
  }

  /** `has` for a key given as its 16 bytes (the disk tier's sweep reads a million LMDB keys). */
  hasKeyBytes(key: Uint8Array): boolean {
    if (key.length !== 16) return false;
    const p = this.#probe;
    for (let w = 0; w < 4; w++) p[w] = ((key[4 * w]! << 24) | (key[4 * w + 1]! << 16) | (key[4 * w + 2]! << 8) | key[4 * w + 3]!) >>> 0;
    return this.#findProbe() >= 0;
  }

  /** Room for `n` chunks without rehashing (a store's chunk count is known at open). */
  reserve(n: number): void {
    while (2 * n > this.#slots) this.#grow();
  }

  /** The slot holding `key` (>= 0), or -(the free slot where it would go) - 1. */
  #find(key: string): number {
    const p = this.#probe;
    if (!KEY.test(key)) throw new KvtcError('E_INTERNAL', `chunk key '${key}' is not 32 hex digits`);
    for (let w = 0; w < 4; w++) p[w] = Number.parseInt(key.slice(8 * w, 8 * w + 8), 16);
    return this.#findProbe();
  }

  /** The probe words of a key given as bytes (big-endian words: the order of its hex digits). */
  #probeBytes(view: DataView, offset: number): void {
    for (let w = 0; w < 4; w++) this.#probe[w] = view.getUint32(offset + 4 * w, false);
  }

  /** #find for the key in #probe. */
  #findProbe(): number {
    const p = this.#probe;
    const mask = this.#slots - 1;
    const k = this.#keys;
    for (let i = this.#home(p[0]!, p[1]!, p[2]!, p[3]!); ; i = (i + 1) & mask) {
      if (!this.#used[i]) return -i - 1;
      const o = 4 * i;
      if (k[o] === p[0] && k[o + 1] === p[1] && k[o + 2] === p[2] && k[o + 3] === p[3]) return i;
    }
  }

  /** The first slot a key probes (keys are hashes already; the mix guards against patterned ones). */
  #home(a: number, b: number, c: number, d: number): number {
    let h = Math.imul(a ^ Math.imul(b, 0x9e3779b1), 0x85ebca6b) ^ Math.imul(c ^ (d >>> 7), 0xc2b2ae35);
    h ^= h >>> 15;
    return h & (this.#slots - 1);
  }

  /** Stores the probed key in free slot `i` with 0 references; returns its slot (after any growth). */
  #insert(i: number, bytes: number): number {
    if (2 * (this.#count + 1) > this.#slots) {
      this.#grow();
      i = -this.#findProbe() - 1; // the free slot in the grown table
    }
    this.#keys.set(this.#probe, 4 * i);
    this.#sizes[i] = bytes;
    this.#refs[i] = 0;
    this.#used[i] = 1;
    this.#count++;
    return i;
  }

  /** Empties slot `i`, shifting later entries of its probe run back so lookups never stop early. */
  #remove(i: number): void {
    const mask = this.#slots - 1;
    const k = this.#keys;
    let hole = i;
    for (let j = (i + 1) & mask; this.#used[j]; j = (j + 1) & mask) {
      const home = this.#home(k[4 * j]!, k[4 * j + 1]!, k[4 * j + 2]!, k[4 * j + 3]!);
      // Entry j may fill the hole when its home is not in the cyclic range (hole, j].
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (between) continue;
      k.copyWithin(4 * hole, 4 * j, 4 * j + 4);
      this.#sizes[hole] = this.#sizes[j]!;
      this.#refs[hole] = this.#refs[j]!;
      hole = j;
    }
    this.#used[hole] = 0;
    this.#count--;
  }

  #grow(): void {
    const { keys, sizes, refs, used, old } = { keys: this.#keys, sizes: this.#sizes, refs: this.#refs, used: this.#used, old: this.#slots };
    this.#slots = old * 2;
    this.#keys = new Uint32Array(this.#slots * 4);
    this.#sizes = new Float64Array(this.#slots);
    this.#refs = new Uint32Array(this.#slots);
    this.#used = new Uint8Array(this.#slots);
    const mask = this.#slots - 1;
    for (let s = 0; s < old; s++) {
      if (!used[s]) continue;
      let i = this.#home(keys[4 * s]!, keys[4 * s + 1]!, keys[4 * s + 2]!, keys[4 * s + 3]!);
      while (this.#used[i]) i = (i + 1) & mask;
      this.#keys.set(keys.subarray(4 * s, 4 * s + 4), 4 * i);
      this.#sizes[i] = sizes[s]!;
      this.#refs[i] = refs[s]!;
      this.#used[i] = 1;
    }
  }
}
