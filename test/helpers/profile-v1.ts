/**
 * Rewrites a version-2 or version-3 profile into the version-1 format (before the whole-cache
 * allocation's record), to check that old profiles keep loading. Offsets follow native/profile.cc
 * (serialize_profile): v2 added 16 bytes after the calibration token count (allocation,
 * weighting, reserved, target tokens, expected ratio), 16 bytes per stream group after its
 * predicted error (weight, planned bits) and 12 per plan group (quantizer, static shift and
 * scale); v3 added 4 per plan group (the count of its reconstruction levels, 0 for a min/max
 * group). Only profiles of min/max groups have a version-1 form.
 */
import { sealed } from './sealed.js';

const KV_CONTEXTS_PER_GROUP = 5;

export function profileToVersion1(v2: Uint8Array): Uint8Array {
  const dv = new DataView(v2.buffer, v2.byteOffset, v2.byteLength);
  const version = dv.getUint32(4, true);
  if (version !== 2 && version !== 3) throw new Error('profileToVersion1: not a version-2 or -3 profile');
  const parts: Uint8Array[] = [];
  let at = 0;
  const keep = (to: number) => {
    parts.push(v2.subarray(at, to));
    at = to;
  };
  // magic, version, layers, kvHeads, headDim (u32 each), dtype u8, style u8, dims u16, theta f64,
  // then the frequency count and the frequencies.
  const nf = dv.getUint32(32, true);
  const afterTokens = 36 + 4 * nf + 4 + 4 + 4 + 8 + 8 + 8; // sinks, window, group layers, ratio, seed, tokens
  keep(afterTokens);
  at += 16; // allocation u8, weighting u8, reserved u16, target tokens u32, expected ratio f64
  const ngroups = dv.getUint32(at, true);
  keep(at + 4);
  for (let i = 0; i < 2 * ngroups; i++) {
    const p = dv.getUint32(at + 8, true);
    const k = dv.getUint32(at + 12, true);
    const nplan = dv.getUint32(at + 16, true);
    keep(at + 20 + 24); // dimensions, then energy, mean square, predicted error
    at += 16; // weight f64, planned bits f64
    for (let j = 0; j < nplan; j++) {
      if (dv.getUint32(at + 12, true) !== 0) throw new Error('profileToVersion1: static groups have no version-1 form');
      keep(at + 12); // start, size, bits
      at += 12; // quantizer u32, shift f32, scale f32
      if (version >= 3) at += 4; // level count u32: 0 for a min/max group
    }
    let end = at + 4 * p + 4 * p + 4 * k * p + 2 * nplan * KV_CONTEXTS_PER_GROUP * 256;
    end = Math.ceil(end / 4) * 4; // aligned relative to the start; the dropped fields are 16 bytes
    keep(end);
  }
  keep(v2.length - 4);
  const body = Buffer.concat(parts);
  new DataView(body.buffer, body.byteOffset, body.byteLength).setUint32(4, 1, true);
  return sealed(body);
}
