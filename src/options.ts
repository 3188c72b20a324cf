/**
 * Options of kvtc's entry points: the user-facing `Options`, the `DEFAULTS`, and `resolve*()`
 * functions that validate with messages naming the field and the value. Environment variables
 * are read here and nowhere else.
 */
import { availableParallelism } from 'node:os';
import { KvtcError } from './errors.js';
import type { KvLayout } from './layout.js';

/** Progress of a calibration run. */
export interface CalibrationProgress {
  /** 'collect': accumulating samples; 'fit': eigensolver + bit plan per stream group. */
  stage: 'collect' | 'fit';
  /** Samples (caches) consumed so far. */
  samples: number;
  /** Tokens accumulated so far (sinks excluded). */
  tokens: number;
  /** Fraction of the fit stage done, 0..1 (collect: fraction of maxTokens when set, else NaN). */
  fraction: number;
}

export interface CalibrateOptions {
  /** Target compression of the coded (middle) tokens relative to fp16. Default 16; must be > 1. */
  ratio?: number;
  /** Leading tokens (attention sinks) stored losslessly. Default 4. */
  sinkTokens?: number;
  /** Most recent tokens stored losslessly. Default 128. */
  windowTokens?: number;
  /**
   * Layers per PCA group. 'auto' (default): the fewest layers whose features reach 1024
   * (1 layer for 8 KV heads x 128 dims; all 5 for stories260K). 'all': one group of every layer.
   * More layers per group capture cross-layer correlation (better ratio) at a higher cost.
   */
  pcaGroupLayers?: number | 'all' | 'auto';
  /** Sample cap: stop after this many calibration tokens. Default 262144; 0 = no cap. */
  maxTokens?: number;
  /** Tokens kept (reservoir sample) per stream group for the bit plan and entropy tables. Default 4096. */
  sampleTokens?: number;
  /** Seed of the reservoir sampling. Default 0. Same samples + seed = identical profile bytes. */
  seed?: number;
  /** Quantizer widths (bits) the plan may choose, besides 0 (dropped). Default [2, 4, 8]. */
  widths?: number[];
  /** Component-group sizes the plan may choose. Default [1, 16, 64, 256, 1024]. */
  groupSizes?: number[];
  /**
   * Widest PCA group (features = layers x kvHeads x headDim) fitted from the full f64 covariance
   * of every calibration token. Wider groups use the exact PCA of a reservoir sample of up to
   * 1024 tokens (through its Gram matrix), which keeps memory and time linear in the features.
   * Default 2048.
   */
  maxFeatures?: number;
  /** Threads for the fit stage. Default: available parallelism. */
  threads?: number;
  /** Called as calibration advances. */
  onProgress?: (progress: CalibrationProgress) => void;
}

export interface ResolvedCalibrateOptions {
  ratio: number;
  sinkTokens: number;
  windowTokens: number;
  pcaGroupLayers: number | 'all' | 'auto';
  maxTokens: number;
  sampleTokens: number;
  seed: number;
  widths: number[];
  groupSizes: number[];
  maxFeatures: number;
  threads: number;
  onProgress: ((progress: CalibrationProgress) => void) | undefined;
}

export const CALIBRATE_DEFAULTS = {
  ratio: 16,
  sinkTokens: 4,
  windowTokens: 128,
  pcaGroupLayers: 'auto',
  maxTokens: 262144,
  sampleTokens: 4096,
  seed: 0,
  widths: [2, 4, 8],
  groupSizes: [1, 16, 64, 256, 1024],
  maxFeatures: 2048,
} as const;

function bad(field: string, want: string, got: unknown): KvtcError {
  const shown = typeof got === 'string' ? `'${got}'` : Array.isArray(got) ? `[${got.join(', ')}]` : String(got);
  return new KvtcError('E_OPTIONS', `options.${field} must be ${want}, got ${shown}`);
}

function int(v: unknown, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw bad(field, max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in ${min}..${max}`, v);
  }
  return v;
}

function intList(v: unknown, field: string, allowed: (x: number) => boolean, want: string): number[] {
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && allowed(x))) {
    throw bad(field, want, v);
  }
  return [...new Set(v as number[])].sort((a, b) => a - b);
}

export function resolveCalibrateOptions(options: CalibrateOptions = {}): ResolvedCalibrateOptions {
  if (typeof options !== 'object' || options === null) throw bad('', 'an object', options);
  const o = { ...CALIBRATE_DEFAULTS, ...stripUndefined(options) };
  if (typeof o.ratio !== 'number' || !Number.isFinite(o.ratio) || o.ratio <= 1) throw bad('ratio', 'a finite number > 1', o.ratio);
  const g = o.pcaGroupLayers;
  if (!(g === 'all' || g === 'auto' || (typeof g === 'number' && Number.isInteger(g) && g >= 1))) {
    throw bad('pcaGroupLayers', "a positive integer, 'all' or 'auto'", g);
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw bad('onProgress', 'a function', options.onProgress);
  }
  return {
    ratio: o.ratio,
    sinkTokens: int(o.sinkTokens, 'sinkTokens', 0, 1 << 20),
    windowTokens: int(o.windowTokens, 'windowTokens', 0, 1 << 24),
    pcaGroupLayers: g,
    maxTokens: int(o.maxTokens, 'maxTokens', 0),
    sampleTokens: int(o.sampleTokens, 'sampleTokens', 16, 1 << 20),
    seed: int(o.seed, 'seed', 0, 0x7fffffff),
    widths: intList(o.widths, 'widths', (x) => x >= 1 && x <= 8, 'a non-empty array of integers in 1..8'),
    groupSizes: intList(o.groupSizes, 'groupSizes', (x) => x >= 1 && x <= 65536, 'a non-empty array of integers in 1..65536'),
    maxFeatures: int(o.maxFeatures, 'maxFeatures', 1, 1 << 16),
    threads: options.threads === undefined ? availableParallelism() : int(options.threads, 'threads', 1, 1024),
    onProgress: options.onProgress,
  };
}

/** Layers per PCA group for a layout under the given setting. */
export function pcaGroupLayersFor(setting: number | 'all' | 'auto', layout: KvLayout): number {
  if (setting === 'all') return layout.layers;
  if (setting === 'auto') {
    const perLayer = layout.kvHeads * layout.headDim;
    return Math.min(layout.layers, Math.max(1, Math.ceil(1024 / perLayer)));
  }
  return Math.min(setting, layout.layers);
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
