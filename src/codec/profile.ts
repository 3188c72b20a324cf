import { createHash } from 'node:crypto';
import { readFile, rename, writeFile, unlink } from 'node:fs/promises';
import { callNative, callNativeSync, codecAddon, type NativeProfileHandle, type NativeProfileInfo } from '../binding.js';
import { KvtcError } from '../errors.js';
import type { KvLayout } from '../layout.js';
import { layoutFromProfileInfo } from './marshal.js';

/** One group of principal components of a bit plan. */
export interface PlanGroupInfo {
  start: number;
  size: number;
  bits: number;
  quantizer: 'minmax' | 'static';
  /** Static groups: value = shift + code * scale. */
  shift?: number;
  scale?: number;
  /**
   * Static groups of at most 4 bits (profile version 3): what code c of the group's component j
   * decodes to, at levels[j * 2^bits + c], in place of shift + c * scale — the mean of the
   * calibration values in that code's bin, the component's levels scaled together to a
   * reconstruction gain of 1 (native/bitplan.h). Absent: the uniform reconstruction.
   */
  levels?: Float32Array;
}

/** One PCA group of one stream (keys or values) of a profile. */
export interface ProfileGroup {
  stream: 'keys' | 'values';
  /** First layer of the group and how many layers it spans. */
  layerStart: number;
  layerCount: number;
  /** Features per token (layerCount x kvHeads x headDim). */
  features: number;
  /** Principal components kept (coded with > 0 bits). */
  components: number;
  /**
   * The bit plan: contiguous component groups with their code width and quantizer — 'minmax'
   * (fp16 shift and scale per token) or 'static' (shift and scale fixed at calibration, given here).
   */
  plan: readonly PlanGroupInfo[];
  /** Pre-entropy bits per token, fp16 shift/scale included. */
  bitsPerToken: number;
  /** Calibration eigenvalues (descending): per-component variance, for rate–distortion bounds. */
  eigenvalues: Float32Array;
  /** Sum of the eigenvalues (total variance per token). */
  totalEnergy: number;
  /** Mean squared norm of a token's features (mean included). */
  meanSquare: number;
  /** Predicted squared error per token on the calibration sample. */
  predictedError: number;
  /** Distortion weight of a unit of this group's squared error in the allocation (1: unweighted). */
  weight: number;
  /** Bits per token the plan expects to cost: entropy-coded under the global allocation, pre-entropy under 'stream'. */
  plannedBits: number;
}

/** Settings the profile was calibrated with. */
export interface ProfileSettings {
  ratio: number;
  sinkTokens: number;
  windowTokens: number;
  pcaGroupLayers: number;
  seed: number;
  calibrationTokens: number;
  /** How the budget was split ('stream' for profiles of format version 1). */
  allocation: 'global' | 'stream';
  weighting: 'attention' | 'mse';
  /** Cache length the ratio was aimed at (0: the coded tokens only). */
  targetTokens: number;
  /** Whole-blob ratio vs fp16 calibration expects for a cache of targetTokens (0: unknown). */
  expectedRatio: number;
}

/**
 * What calibration learned about one model's KV caches: per PCA group and stream the mean, the
 * principal basis, the bit plan and the entropy tables. Blobs record the profile's fingerprint
 * and decode only with the same profile.
 */
export class CodecProfile {
  /** 32 hex digits: the first 128 bits of the SHA-256 of the profile's bytes. */
  readonly fingerprint: string;
  /** The model shape (and the dtype of the calibration samples). */
  readonly layout: KvLayout;
  readonly settings: ProfileSettings;
  readonly groups: readonly ProfileGroup[];
  readonly #bytes: Uint8Array;
  readonly #fingerprintBytes: Uint8Array;
  #handle: Promise<NativeProfileHandle> | undefined;

  private constructor(bytes: Uint8Array, info: NativeProfileInfo) {
    this.#bytes = bytes;
    this.#fingerprintBytes = new Uint8Array(createHash('sha256').update(bytes).digest().subarray(0, 16));
    this.fingerprint = Buffer.from(this.#fingerprintBytes).toString('hex');
    this.layout = layoutFromProfileInfo(info);
    this.settings = {
      ratio: info.ratio,
      sinkTokens: info.sinks,
      windowTokens: info.window,
      pcaGroupLayers: info.groupLayers,
      seed: info.seed,
      calibrationTokens: info.calibrationTokens,
      allocation: info.allocation,
      weighting: info.weighting,
      targetTokens: info.targetTokens,
      expectedRatio: info.expectedRatio,
    };
    this.groups = info.groups.map((g) => ({
      stream: g.stream,
      layerStart: g.layerStart,
      layerCount: g.layerCount,
      features: g.features,
      components: g.components,
      plan: g.plan,
      bitsPerToken: g.bitsPerToken,
      eigenvalues: g.eigenvalues,
      totalEnergy: g.totalEnergy,
      meanSquare: g.meanSquare,
      predictedError: g.predictedError,
      weight: g.weight,
      plannedBits: g.plannedBits,
    }));
  }

  /** Parses and validates serialized profile bytes (throws E_PROFILE when malformed). */
  static fromBytes(bytes: Uint8Array): CodecProfile {
    if (!(bytes instanceof Uint8Array)) {
      throw new KvtcError('E_PROFILE', `profile bytes must be a Uint8Array, got ${String(bytes)}`);
    }
    const own = new Uint8Array(bytes); // private copy: later changes by the caller cannot reach it
    const info = callNativeSync(() => codecAddon.profileInfo(own));
    return new CodecProfile(own, info);
  }

  /** Reads a profile file written by save(). */
  static async load(path: string): Promise<CodecProfile> {
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      throw new KvtcError('E_IO', `cannot read profile ${path}: ${(err as Error).message}`, { cause: err });
    }
    return CodecProfile.fromBytes(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** The serialized profile (a copy). */
  toBytes(): Uint8Array {
    return new Uint8Array(this.#bytes);
  }

  /** Size of the serialized profile in bytes. */
  get byteLength(): number {
    return this.#bytes.byteLength;
  }

  /** Pre-entropy bits per coded token, all stream groups together. */
  get bitsPerToken(): number {
    return this.groups.reduce((s, g) => s + g.bitsPerToken, 0);
  }

  /** Writes the profile atomically (temp file + rename): a crash never leaves half a profile. */
  async save(path: string): Promise<void> {
    const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
    try {
      await writeFile(tmp, this.#bytes);
      await rename(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw new KvtcError('E_IO', `cannot write profile ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** @internal The native profile, parsed once per thread off the event loop. */
  nativeHandle(): Promise<NativeProfileHandle> {
    this.#handle ??= callNative(() => codecAddon.loadProfile(this.#bytes, this.#fingerprintBytes));
    return this.#handle;
  }
}
