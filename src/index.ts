/**
 * kvtc: an embeddable, tiered KV-cache store with KV cache transform coding.
 */
export { KVTC_ERROR_CODES, KvtcError, type KvtcErrorCode } from './errors.js';
export {
  type DType,
  type KvCache,
  type KvLayout,
  type RopeSpec,
  cacheBytes,
  dtypeBytes,
  rowValues,
  ropeFreqs,
  validateCache,
  validateLayout,
} from './layout.js';
export { buildInfo, type BuildInfo } from './binding.js';
export {
  CALIBRATE_DEFAULTS,
  type CalibrateOptions,
  type CalibrationProgress,
} from './options.js';
export { CodecProfile, type ProfileGroup, type ProfileSettings } from './codec/profile.js';
export { calibrate } from './codec/calibrate.js';
export { encode, decode, inspect, type EncodeOptions, type DecodeOptions, type BlobInfo } from './codec/codec.js';
export { type BackendChoice, type Backend } from './backend.js';
export {
  type DeviceKvCache,
  type DeviceKvTarget,
  encodeDevice,
  decodeToDevice,
  deviceMemory,
} from './cuda/device.js';
export {
  KvStore,
  type GetOptions,
  type PutOptions,
  type SessionEntry,
  type StoreEvent,
  type StoreEventName,
  type MissReason,
  type GetStatus,
  type StoreQuarantine,
  type PrefixOptions,
} from './store/store.js';
export type { QuarantinedRecord } from './store/disk-tier.js';
export type { RemoteOptions, RemoteStats } from './store/remote-tier.js';
export type { StoreStats, TierStats } from './store/stats.js';
export { LruPriorityPolicy, type Policy, type PolicyEntry, type TierState } from './store/policy.js';
export { registerStoreMetrics, type StoreMetricsOptions } from './store/metrics.js';
export type { Tier } from './store/session.js';
export { STORE_DEFAULTS, type StoreOptions, type TierOptions } from './options.js';
export { f16BitsToF32, f32ToF16Bits, bf16BitsToF32, f32ToBf16Bits, toFloat32, fromFloat32 } from './half.js';
export {
  parseSequenceState,
  writeSequenceState,
  type LlamaSequenceState,
} from './adapters/llama-cpp/state.js';
