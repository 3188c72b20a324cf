/**
 * Conversions between kvtc's public types (KvLayout, KvCache) and the plain objects the addon
 * reads. Typed arrays cross the boundary as they are; nothing is copied here.
 */
import type { NativeCache, NativeCalibrateSettings, NativeLayout, NativeProfileInfo } from '../binding.js';
import type { DType, KvCache, KvLayout, RopeSpec } from '../layout.js';
import { ropeFreqs } from '../layout.js';
import { type ResolvedCalibrateOptions, pcaGroupLayersFor } from '../options.js';

export const DTYPE_CODE: Record<DType, number> = { f32: 0, f16: 1, bf16: 2 };
const ROPE_STYLE_CODE = { interleaved: 1, neox: 2 } as const;

export function nativeLayout(layout: KvLayout): NativeLayout {
  const rope = layout.rope;
  return {
    layers: layout.layers,
    kvHeads: layout.kvHeads,
    headDim: layout.headDim,
    dtype: DTYPE_CODE[layout.dtype],
    ropeStyle: rope ? ROPE_STYLE_CODE[rope.style] : 0,
    ropeDims: rope ? (rope.dims ?? layout.headDim) : 0,
    // theta 0 records "explicit frequencies" in the profile.
    ropeTheta: rope && !rope.freqs ? rope.theta : 0,
    ropeFreqs: rope ? ropeFreqs(rope, layout.headDim) : new Float32Array(0),
  };
}

/** Calibration options as the addon's calibrator takes them, for a model layout. */
export function nativeCalibrateSettings(opts: ResolvedCalibrateOptions, layout: KvLayout): NativeCalibrateSettings {
  return {
    sinks: opts.sinkTokens,
    window: opts.windowTokens,
    groupLayers: pcaGroupLayersFor(opts.pcaGroupLayers, layout),
    ratio: opts.ratio,
    seed: opts.seed,
    sampleTokens: opts.sampleTokens,
    maxTokens: opts.maxTokens,
    maxFeatures: opts.maxFeatures,
    groupSizes: opts.groupSizes,
    widths: opts.widths,
    allocation: opts.allocation === 'global' ? 1 : 0,
    weighting: opts.weighting === 'attention' ? 1 : 0,
    targetTokens: opts.targetTokens,
    threads: opts.threads,
  };
}

export function nativeCache(cache: KvCache): NativeCache {
  const c: NativeCache = {
    tokens: cache.tokens,
    dtype: DTYPE_CODE[cache.layout.dtype],
    keys: cache.keys,
    values: cache.values,
  };
  if (cache.positions) c.positions = cache.positions;
  return c;
}

/** The KvLayout a profile was calibrated for, rebuilt from its native description. */
export function layoutFromProfileInfo(info: NativeProfileInfo): KvLayout {
  const layout: KvLayout = { layers: info.layers, kvHeads: info.kvHeads, headDim: info.headDim, dtype: info.dtype };
  if (info.ropeStyle !== 0) {
    const rope: RopeSpec = {
      theta: info.ropeTheta,
      style: info.ropeStyle === 1 ? 'interleaved' : 'neox',
      dims: info.ropeDims,
    };
    if (info.ropeTheta === 0) rope.freqs = info.ropeFreqs;
    layout.rope = rope;
  }
  return layout;
}
