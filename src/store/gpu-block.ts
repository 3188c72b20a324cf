/**
 * One hot session of the CUDA backend: its raw cache in a single store-owned device allocation
 * (keys of every layer, then values), so the device tier's accounting is exact (bytes allocated
 * = raw bytes) and freeing a session returns all of it. Positions stay in host memory.
 * Every operation runs off the main thread; callers serialize operations on one block.
 */
import type { ArenaBlob } from '../binding.js';
import type { CodecProfile } from '../codec/profile.js';
import {
  type DeviceKvCache,
  type DeviceKvTarget,
  decodeToDevice,
  deviceLayerBytes,
  deviceMemory,
  encodeDeviceToArena,
  ownPositions,
} from '../cuda/device.js';
import { KvtcError } from '../errors.js';
import type { KvCache, KvLayout } from '../layout.js';

export class GpuBlock {
  readonly layout: KvLayout;
  readonly tokens: number;
  readonly positions: Int32Array;
  readonly address: bigint;
  readonly bytes: number;
  #freed = false;

  private constructor(layout: KvLayout, tokens: number, positions: Int32Array, address: bigint) {
    this.layout = layout;
    this.tokens = tokens;
    this.positions = positions;
    this.address = address;
    this.bytes = 2 * layout.layers * deviceLayerBytes(layout, tokens);
  }

  static async #alloc(layout: KvLayout, tokens: number, positions: Int32Array): Promise<GpuBlock> {
    const bytes = 2 * layout.layers * deviceLayerBytes(layout, tokens);
    return new GpuBlock(layout, tokens, positions, await deviceMemory.alloc(bytes));
  }

  /** Per-layer device addresses of the block's keys and values. */
  #layers(): { keys: bigint[]; values: bigint[] } {
    const lb = BigInt(deviceLayerBytes(this.layout, this.tokens));
    const L = this.layout.layers;
    return {
      keys: Array.from({ length: L }, (_, l) => this.address + BigInt(l) * lb),
      values: Array.from({ length: L }, (_, l) => this.address + BigInt(L + l) * lb),
    };
  }

  /** Runs fn on a fresh block; frees the block if fn fails. */
  static async #filled(layout: KvLayout, tokens: number, positions: Int32Array, fn: (b: GpuBlock) => Promise<void>): Promise<GpuBlock> {
    const b = await GpuBlock.#alloc(layout, tokens, positions);
    try {
      await fn(b);
      return b;
    } catch (err) {
      await b.free();
      throw err;
    }
  }

  /** Uploads a host cache. E_CAPACITY when device memory is exhausted. */
  static fromHost(cache: KvCache): Promise<GpuBlock> {
    return GpuBlock.#filled(cache.layout, cache.tokens, ownPositions(cache), async (b) => {
      const d = b.#layers();
      for (let l = 0; l < cache.layout.layers; l++) {
        await deviceMemory.upload(d.keys[l]!, cache.keys[l]!);
        await deviceMemory.upload(d.values[l]!, cache.values[l]!);
      }
    });
  }

  /** Copies a caller's device cache (the caller keeps its buffers). */
  static fromDevice(cache: DeviceKvCache): Promise<GpuBlock> {
    const lb = deviceLayerBytes(cache.layout, cache.tokens);
    return GpuBlock.#filled(cache.layout, cache.tokens, ownPositions(cache), async (b) => {
      const d = b.#layers();
      for (let l = 0; l < cache.layout.layers; l++) {
        await deviceMemory.copy(d.keys[l]!, cache.keys[l]!, lb, cache.stream);
        await deviceMemory.copy(d.values[l]!, cache.values[l]!, lb, cache.stream);
      }
    });
  }

  /** Decodes a blob (or host-arena handle) on the GPU into a new block. */
  static async decode(source: Uint8Array | number, profile: CodecProfile, layout: KvLayout, tokens: number): Promise<GpuBlock> {
    return GpuBlock.#filled(layout, tokens, new Int32Array(tokens), async (b) => {
      const r = await decodeToDevice(source, profile, { layout, capacityTokens: tokens, ...b.#layers() });
      if (r.tokens !== tokens) throw new KvtcError('E_CORRUPT', `record holds ${r.tokens} tokens, its metadata says ${tokens}`);
      b.positions.set(r.positions);
    });
  }

  /** The block as a DeviceKvCache (valid until the block is freed). */
  view(): DeviceKvCache {
    return { layout: this.layout, tokens: this.tokens, positions: this.positions, ...this.#layers() };
  }

  /** A host copy the caller owns. */
  async toHost(): Promise<KvCache> {
    const lb = deviceLayerBytes(this.layout, this.tokens);
    const buf = new ArrayBuffer(2 * this.layout.layers * lb);
    await deviceMemory.download(new Uint8Array(buf), this.address);
    const n = lb / (this.layout.dtype === 'f32' ? 4 : 2);
    const view = (i: number) => (this.layout.dtype === 'f32' ? new Float32Array(buf, i * lb, n) : new Uint16Array(buf, i * lb, n));
    const L = this.layout.layers;
    return {
      layout: { ...this.layout },
      tokens: this.tokens,
      positions: Int32Array.from(this.positions),
      keys: Array.from({ length: L }, (_, l) => view(l)),
      values: Array.from({ length: L }, (_, l) => view(L + l)),
    };
  }

  /** Copies the session into a caller's device buffers. */
  async copyTo(target: DeviceKvTarget): Promise<void> {
    if (target.capacityTokens < this.tokens) {
      throw new KvtcError('E_CAPACITY', `session holds ${this.tokens} tokens; the target has room for ${target.capacityTokens}`);
    }
    if (target.layout.dtype !== this.layout.dtype) {
      throw new KvtcError('E_LAYOUT', `session holds ${this.layout.dtype} values; the target is ${target.layout.dtype}`);
    }
    const lb = deviceLayerBytes(this.layout, this.tokens);
    const d = this.#layers();
    for (let l = 0; l < this.layout.layers; l++) {
      await deviceMemory.copy(target.keys[l]!, d.keys[l]!, lb, target.stream);
      await deviceMemory.copy(target.values[l]!, d.values[l]!, lb, target.stream);
    }
  }

  /** Encodes on the GPU into the host arena. */
  encode(profile: CodecProfile): Promise<ArenaBlob> {
    return encodeDeviceToArena(this.view(), profile);
  }

  async free(): Promise<void> {
    if (this.#freed) return;
    this.#freed = true;
    await deviceMemory.free(this.address);
  }
}
