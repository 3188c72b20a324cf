/**
 * Options of kvtc's entry points: the user-facing `Options`, the `DEFAULTS`, and `resolve*()`
 * functions that validate with messages naming the field and the value. Environment variables
 * are read here and nowhere else.
 */
import { availableParallelism } from 'node:os';
import { checkKeys, invalidParameter } from './errors.js';
import type { KvLayout } from './layout.js';
import { LruPriorityPolicy, type Policy, isPolicy } from './store/policy.js';

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
  /**
   * Target compression relative to fp16. Default 16; must be > 1. Under `allocation: 'global'`
   * it is the ratio of the whole blob (sinks, window and header included) for a cache of
   * `targetTokens` tokens; under 'stream' it is the pre-entropy ratio of the coded (middle) tokens.
   */
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
  /** Quantizer widths (bits) the plan may choose, besides 0 (dropped). Default [1, 2, 3, 4, 5, 6, 8]. */
  widths?: number[];
  /**
   * How the bit budget is split. 'global' (default): one budget for the whole cache, spread over
   * every component of every PCA group of keys and values where it lowers the weighted error the
   * most, with entropy-coded costs. 'stream': the paper's plan, each stream group its equal share
   * of 16·features/ratio bits per coded token at pre-entropy cost.
   */
  allocation?: 'global' | 'stream';
  /**
   * What the global allocation minimizes. 'attention' (default): squared errors weighted by their
   * first-order effect on each layer's attention output (keys through the logits, values through
   * the output; estimated from the sample caches). 'mse': plain squared error.
   */
  weighting?: 'attention' | 'mse';
  /** Cache length (tokens) the global budget is aimed at. Default 0: the mean sample length. */
  targetTokens?: number;
  /** Component-group sizes the plan may choose. Default [1, 16, 64, 256, 1024]. */
  groupSizes?: number[];
  /**
   * Widest PCA group (features = layers x kvHeads x headDim) fitted from the full f64 covariance
   * of every calibration token. Wider groups use the exact PCA of a reservoir sample of up to
   * 1024 tokens (through its Gram matrix), which keeps memory and time linear in the features.
   * Default 2048.
   */
  maxFeatures?: number;
  /** Threads for accumulating samples and for the fit stage. Default: available parallelism. */
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
  allocation: 'global' | 'stream';
  weighting: 'attention' | 'mse';
  targetTokens: number;
  maxFeatures: number;
  threads: number;
  onProgress: ((progress: CalibrationProgress) => void) | undefined;
}

const CALIBRATE_KEYS = ['ratio', 'sinkTokens', 'windowTokens', 'pcaGroupLayers', 'maxTokens', 'sampleTokens', 'seed', 'widths', 'groupSizes', 'maxFeatures', 'threads', 'allocation', 'weighting', 'targetTokens', 'onProgress'] as const satisfies readonly (keyof CalibrateOptions)[];

export const CALIBRATE_DEFAULTS = {
  ratio: 16,
  sinkTokens: 4,
  windowTokens: 128,
  pcaGroupLayers: 'auto',
  maxTokens: 262144,
  sampleTokens: 4096,
  seed: 0,
  widths: [1, 2, 3, 4, 5, 6, 8],
  groupSizes: [1, 16, 64, 256, 1024],
  maxFeatures: 2048,
  allocation: 'global',
  weighting: 'attention',
  targetTokens: 0,
} as const;

function bad(field: string, want: string, got: unknown) {
  return invalidParameter(field ? `options.${field}` : 'options', want, got);
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
  checkKeys(options, CALIBRATE_KEYS, 'calibrate options');
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
    allocation: oneOf(o.allocation, 'allocation', ['global', 'stream'] as const, 'global'),
    weighting: oneOf(o.weighting, 'weighting', ['attention', 'mse'] as const, 'attention'),
    targetTokens: int(o.targetTokens, 'targetTokens', 0, 0x7fffffff),
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

// ------------------------------------------------------------------------------- store options

/** Tier policies. Sizes in bytes, times in milliseconds; 0 disables a time-based policy. */
export interface TierOptions {
  device?: {
    /** Raw bytes the hot tier may hold. Default 1 GiB. */
    capacityBytes?: number;
    /** Demote a session untouched for this long. Default 60000; 0 = never. */
    idleMs?: number;
  };
  host?: {
    /** Encoded bytes the warm tier may hold. Default 4 GiB. */
    capacityBytes?: number;
    /** Spill a session untouched for this long to disk. Default 600000; 0 = never. */
    idleMs?: number;
  };
  disk?: {
    /** Encoded bytes the disk tier may hold before evicting least-recently-used sessions. Default 64 GiB. */
    capacityBytes?: number;
    /** Expire sessions untouched for this long. Default 0 = never. */
    ttlMs?: number;
    /** LMDB map size. Default capacityBytes * 1.25 + 64 MiB. */
    mapSizeBytes?: number;
    /**
     * Bytes the quarantine (records that failed a check, kept for inspection) may hold; the
     * oldest quarantined records are dropped beyond it. Default min(16 MiB, mapSizeBytes / 8).
     */
    quarantineBytes?: number;
  };
}

export interface StoreOptions {
  /** A CodecProfile, or the path of a saved one. Required. */
  profile: import('./codec/profile.js').CodecProfile | string;
  /** LMDB directory of the disk tier. Default: $KVTC_STORE_PATH, else ./.kvtc/store. */
  path?: string;
  /** 'auto' (default, $KVTC_BACKEND): CUDA when usable, else CPU. 'cuda' throws E_BACKEND when unusable. */
  backend?: 'auto' | 'cuda' | 'cpu';
  tiers?: TierOptions;
  /** 'write-back' (default): disk on spill only. 'write-through': every demotion also persists to disk before it resolves. */
  writePolicy?: 'write-back' | 'write-through';
  /** 'kvtc' (default): lower tiers hold transform-coded blobs. 'none': raw blobs (a baseline for benchmarks). */
  compression?: 'kvtc' | 'none';
  /** Persist hot and warm sessions to disk on close() so nothing acknowledged is lost. Default true. */
  flushOnClose?: boolean;
  /**
   * Codec worker threads, per pool: restores run on one pool at normal priority, background
   * encodes on another whose threads are niced (so restores and the event loop go first).
   * Default min 1, max min(cores, 8).
   */
  workers?: { minThreads?: number; maxThreads?: number };
  /** How often idle/TTL policies are checked. Default: a quarter of the smallest idle/TTL, 50..5000 ms. */
  sweepIntervalMs?: number;
  /**
   * A cache holding NaN or Inf: 'reject' (default) fails put() with E_LAYOUT naming the first bad
   * value (a non-finite KV cache is an engine bug worth surfacing; a DeviceKvCache is scanned on
   * the GPU); 'store' keeps it (the codec stores such tokens raw, so they round-trip bit-exactly).
   */
  nonFinite?: 'reject' | 'store';
  /**
   * Disk records written with another profile (fingerprint) than this store's: 'refuse'
   * (default) fails open() with E_PROFILE_MISMATCH, so a wrong profile never touches them;
   * 'miss' opens the store and leaves them on disk untouched, each get() of one a miss with
   * reason 'profile-mismatch' (put and delete replace or remove them; capacity evicts them).
   */
  foreignRecords?: 'refuse' | 'miss';
  /**
   * Victim choice, idleness and admission of the tiers (see src/store/policy.ts).
   * Default: `new LruPriorityPolicy()` (least recently used, lower priority first).
   */
  policy?: import('./store/policy.js').Policy;
  /**
   * Tokens per chunk. Below the hot tier a session is a chain of chunks of this many tokens, each
   * encoded once and shared by every session of the namespace with the same prefix (put with
   * `tokens`), plus its own tail (the last partial chunk and the recent window). Also the
   * granularity of matchPrefix/getPrefix. Default 256.
   */
  chunkTokens?: number;
  /**
   * A shared tier on Redis / Valkey (`{ url, namespace, ttlMs, tls, username, password, … }`, see
   * RemoteOptions): a session leaves the hot tier also to the remote (in the background, or
   * before the demotion resolves under `writePolicy: 'write-through'`), and a session missing
   * locally is looked up there — any process pointed at the same remote and namespace, with the
   * same profile, resumes it. Default: none.
   */
  remote?: import('./store/remote-tier.js').RemoteOptions;
  /**
   * Store each session as one blob below the hot tier (the first version's layout: every demotion
   * re-encodes the whole session, nothing is shared) — a baseline for benchmarks. Default false.
   */
  blobPerSession?: boolean;
}

export interface ResolvedStoreOptions {
  path: string;
  backend: 'auto' | 'cuda' | 'cpu';
  device: { capacityBytes: number; idleMs: number };
  host: { capacityBytes: number; idleMs: number };
  disk: { capacityBytes: number; ttlMs: number; mapSizeBytes: number; quarantineBytes: number };
  writePolicy: 'write-back' | 'write-through';
  compression: 'kvtc' | 'none';
  flushOnClose: boolean;
  workers: { minThreads: number; maxThreads: number };
  sweepIntervalMs: number;
  nonFinite: 'reject' | 'store';
  foreignRecords: 'refuse' | 'miss';
  policy: import('./store/policy.js').Policy;
  chunkTokens: number;
  blobPerSession: boolean;
  remote: import('./store/remote-tier.js').RemoteOptions | undefined;
}

const GiB = 1024 ** 3;

export const STORE_DEFAULTS = {
  path: '.kvtc/store',
  backend: 'auto',
  device: { capacityBytes: 1 * GiB, idleMs: 60_000 },
  host: { capacityBytes: 4 * GiB, idleMs: 600_000 },
  disk: { capacityBytes: 64 * GiB, ttlMs: 0 },
  writePolicy: 'write-back',
  compression: 'kvtc',
  flushOnClose: true,
} as const;

/** Environment variables kvtc reads (only here). */
export function readEnv(env: NodeJS.ProcessEnv = process.env): { backend?: string; storePath?: string } {
  const out: { backend?: string; storePath?: string } = {};
  if (env.KVTC_BACKEND) out.backend = env.KVTC_BACKEND;
  if (env.KVTC_STORE_PATH) out.storePath = env.KVTC_STORE_PATH;
  return out;
}

function oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[], fallback: T): T {
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !allowed.includes(v as T)) throw bad(field, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, v);
  return v as T;
}

function sizeOpt(v: unknown, field: string, fallback: number, min = 1): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw bad(field, min === 0 ? 'a non-negative integer' : 'a positive integer', v);
  }
  return v;
}

function objOpt(v: unknown, field: string, keys: readonly string[]): Record<string, unknown> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(field, 'an object', v);
  checkKeys(v, keys, `options.${field}`);
  return v as Record<string, unknown>;
}

const STORE_KEYS = ['profile', 'path', 'backend', 'tiers', 'writePolicy', 'compression', 'flushOnClose', 'workers', 'sweepIntervalMs', 'nonFinite', 'foreignRecords', 'policy', 'chunkTokens', 'blobPerSession', 'remote'] as const satisfies readonly (keyof StoreOptions)[];

/** Validates store options (all but the profile, which the store loads) and fills defaults. */
export function resolveStoreOptions(options: StoreOptions, env = readEnv()): ResolvedStoreOptions {
  if (typeof options !== 'object' || options === null) throw bad('', 'an object', options);
  checkKeys(options, STORE_KEYS, 'store options');
  const tiers = objOpt(options.tiers, 'tiers', ['device', 'host', 'disk']);
  const dev = objOpt(tiers.device, 'tiers.device', ['capacityBytes', 'idleMs']);
  const host = objOpt(tiers.host, 'tiers.host', ['capacityBytes', 'idleMs']);
  const disk = objOpt(tiers.disk, 'tiers.disk', ['capacityBytes', 'ttlMs', 'mapSizeBytes', 'quarantineBytes']);
  const workers = objOpt(options.workers, 'workers', ['minThreads', 'maxThreads']);
  const path = options.path ?? env.storePath ?? STORE_DEFAULTS.path;
  if (typeof path !== 'string' || path.length === 0) throw bad('path', 'a non-empty string', path);
  const diskCap = sizeOpt(disk.capacityBytes, 'tiers.disk.capacityBytes', STORE_DEFAULTS.disk.capacityBytes);
  const device = {
    capacityBytes: sizeOpt(dev.capacityBytes, 'tiers.device.capacityBytes', STORE_DEFAULTS.device.capacityBytes, 0),
    idleMs: sizeOpt(dev.idleMs, 'tiers.device.idleMs', STORE_DEFAULTS.device.idleMs, 0),
  };
  const hostT = {
    capacityBytes: sizeOpt(host.capacityBytes, 'tiers.host.capacityBytes', STORE_DEFAULTS.host.capacityBytes, 0),
    idleMs: sizeOpt(host.idleMs, 'tiers.host.idleMs', STORE_DEFAULTS.host.idleMs, 0),
  };
  const diskT = {
    capacityBytes: diskCap,
    ttlMs: sizeOpt(disk.ttlMs, 'tiers.disk.ttlMs', STORE_DEFAULTS.disk.ttlMs, 0),
    mapSizeBytes: sizeOpt(disk.mapSizeBytes, 'tiers.disk.mapSizeBytes', Math.ceil(diskCap * 1.25) + 64 * 1024 * 1024),
    quarantineBytes: 0,
  };
  diskT.quarantineBytes = sizeOpt(disk.quarantineBytes, 'tiers.disk.quarantineBytes', Math.min(16 << 20, Math.floor(diskT.mapSizeBytes / 8)), 0);
  const def = defaultWorkerThreads();
  const minThreads = sizeOpt(workers.minThreads, 'workers.minThreads', def.minThreads, 0);
  const maxThreads = sizeOpt(workers.maxThreads, 'workers.maxThreads', Math.max(def.maxThreads, minThreads));
  if (maxThreads < minThreads) throw bad('workers.maxThreads', `>= workers.minThreads (${minThreads})`, maxThreads);
  const times = [device.idleMs, hostT.idleMs, diskT.ttlMs].filter((t) => t > 0);
  const sweepDefault = Math.min(5000, Math.max(50, Math.floor(Math.min(...times, 20_000) / 4)));
  return {
    path,
    backend: oneOf(options.backend ?? env.backend, 'backend', ['auto', 'cuda', 'cpu'] as const, 'auto'),
    device,
    host: hostT,
    disk: diskT,
    writePolicy: oneOf(options.writePolicy, 'writePolicy', ['write-back', 'write-through'] as const, 'write-back'),
    compression: oneOf(options.compression, 'compression', ['kvtc', 'none'] as const, 'kvtc'),
    flushOnClose: options.flushOnClose === undefined ? true : boolOpt(options.flushOnClose, 'flushOnClose'),
    workers: { minThreads, maxThreads },
    sweepIntervalMs: sizeOpt(options.sweepIntervalMs, 'sweepIntervalMs', sweepDefault, 1),
    nonFinite: oneOf(options.nonFinite, 'nonFinite', ['reject', 'store'] as const, 'reject'),
    foreignRecords: oneOf(options.foreignRecords, 'foreignRecords', ['refuse', 'miss'] as const, 'refuse'),
    policy: policyOpt(options.policy),
    chunkTokens: sizeOpt(options.chunkTokens, 'chunkTokens', 256, 1),
    blobPerSession: options.blobPerSession === undefined ? false : boolOpt(options.blobPerSession, 'blobPerSession'),
    remote: remoteOpt(options.remote),
  };
}

function policyOpt(v: unknown): Policy {
  if (v === undefined) return new LruPriorityPolicy();
  if (!isPolicy(v)) throw bad('policy', 'an object with deviceVictim, hostVictim, isIdle and admit methods', v);
  return v;
}

/** The remote tier's options are checked when it connects (RemoteTier.connect); here only their shape. */
function remoteOpt(v: unknown): import('./store/remote-tier.js').RemoteOptions | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null) throw invalidParameter('options.remote', 'an object ({ url, ... })', v);
  return v as import('./store/remote-tier.js').RemoteOptions;
}

function boolOpt(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw bad(field, 'a boolean', v);
  return v;
}

function defaultWorkerThreads(): { minThreads: number; maxThreads: number } {
  return { minThreads: 1, maxThreads: Math.max(1, Math.min(availableParallelism(), 8)) };
}
