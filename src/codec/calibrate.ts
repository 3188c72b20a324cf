import { callNative, calibratorAddon } from '../binding.js';
import { KvtcError } from '../errors.js';
import { type KvCache, type KvLayout, rowValues, sameShape, validateCache } from '../layout.js';
import { type CalibrateOptions, resolveCalibrateOptions } from '../options.js';
import { nativeCache, nativeCalibrateSettings, nativeLayout } from './marshal.js';
import { CodecProfile } from './profile.js';

/**
 * Learns a CodecProfile from sample caches of one model: per PCA group of layers and per stream,
 * the mean and principal basis (streaming f64 covariance + symmetric eigensolver), the bit plan
 * (by default one budget for the whole blob at the asked ratio, split over every stream group by
 * attention-weighted rate–distortion curves; `allocation: 'stream'` gives each stream group
 * 16·features/ratio bits per coded token) and the rANS tables.
 * Samples may come from any (async) iterable; each is consumed once, off the main thread.
 * Sink tokens are left out (they are always stored raw). All samples must share one model shape.
 */
export async function calibrate(
  samples: Iterable<KvCache> | AsyncIterable<KvCache>,
  options: CalibrateOptions = {},
): Promise<CodecProfile> {
  const opts = resolveCalibrateOptions(options);
  if (samples === null || typeof samples !== 'object' || (!(Symbol.iterator in samples) && !(Symbol.asyncIterator in samples))) {
    throw new KvtcError('E_OPTIONS', `samples must be an iterable or async iterable of KvCache, got ${String(samples)}`);
  }
  let layout: KvLayout | undefined;
  let handle: ReturnType<typeof calibratorAddon.calibratorCreate> | undefined;
  let count = 0;
  let tokens = 0;
  for await (const sample of samples as AsyncIterable<KvCache>) {
    validateCache(sample, `samples[${count}]`);
    if (!layout) {
      layout = sample.layout;
      const l = layout;
      handle = await callNative(() =>
        calibratorAddon.calibratorCreate(nativeLayout(l), nativeCalibrateSettings(opts, l)),
      );
    } else if (!sameShape(sample.layout, layout)) {
      throw new KvtcError('E_LAYOUT', `samples[${count}] has another model shape than samples[0]`);
    }
    const h = handle!;
    tokens = await callNative(() => calibratorAddon.calibratorAdd(h, nativeCache(sample), layout!.layers, rowValues(layout!)));
    count++;
    opts.onProgress?.({
      stage: 'collect',
      samples: count,
      tokens,
      fraction: opts.maxTokens > 0 ? Math.min(1, tokens / opts.maxTokens) : Number.NaN,
    });
    if (opts.maxTokens > 0 && tokens >= opts.maxTokens) break;
  }
  if (!handle) throw new KvtcError('E_CALIBRATION', 'calibration needs at least one sample cache');
  const h = handle;
  const progress = opts.onProgress
    ? (fraction: number) => opts.onProgress!({ stage: 'fit', samples: count, tokens, fraction })
    : undefined;
  const bytes = await callNative(() => calibratorAddon.calibratorFinish(h, progress, opts.threads));
  return CodecProfile.fromBytes(new Uint8Array(bytes));
}
