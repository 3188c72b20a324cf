/**
 * Rewrites the static groups' reconstruction levels of a version-3 profile (native/profile.cc,
 * serialize_profile: after a plan group's shift and scale, a u32 level count and that many f32),
 * to check how the decoder reads them. `levels` maps one plan group's levels to their
 * replacement: an array of the same length, or null to drop them (count 0: the uniform decoder).
 */
import { sealed } from './sealed.js';

const CONTEXTS_PER_GROUP = 5;

export interface LevelGroup {
  start: number;
  size: number;
  bits: number;
  shift: number;
  scale: number;
  levels: Float32Array;
}

export function rewriteLevels(v3: Uint8Array, levels: (g: LevelGroup) => Float32Array | null): Uint8Array {
  const dv = new DataView(v3.buffer, v3.byteOffset, v3.byteLength);
  if (dv.getUint32(4, true) !== 3) throw new Error('rewriteLevels: not a version-3 profile');
  const parts: Uint8Array[] = [];
  let at = 0;
  const keep = (to: number) => {
    parts.push(v3.subarray(at, to));
    at = to;
  };
  const nf = dv.getUint32(32, true);
  const groupCount = 36 + 4 * nf + 12 + 24 + 16; // after the calibration record (see profile-v1.ts)
  const ngroups = dv.getUint32(groupCount, true);
  keep(groupCount + 4);
  for (let i = 0; i < 2 * ngroups; i++) {
    const p = dv.getUint32(at + 8, true);
    const k = dv.getUint32(at + 12, true);
    const nplan = dv.getUint32(at + 16, true);
    keep(at + 20 + 40);
    for (let j = 0; j < nplan; j++) {
      const g = {
        start: dv.getUint32(at, true),
        size: dv.getUint32(at + 4, true),
        bits: dv.getUint32(at + 8, true),
        shift: dv.getFloat32(at + 16, true),
        scale: dv.getFloat32(at + 20, true),
      };
      const count = dv.getUint32(at + 24, true);
      const old = new Float32Array(v3.slice(at + 28, at + 28 + 4 * count).buffer);
      keep(at + 24);
      at += 4 + 4 * count;
      const next = count ? levels({ ...g, levels: old }) : null;
      const head = new Uint8Array(4);
      new DataView(head.buffer).setUint32(0, next ? next.length : 0, true);
      parts.push(head);
      if (next) parts.push(new Uint8Array(next.buffer, next.byteOffset, next.byteLength));
    }
    keep(at + 4 * p + 4 * p + 4 * k * p + 2 * nplan * CONTEXTS_PER_GROUP * 256); // 4-aligned: no padding
  }
  keep(v3.length - 4);
  const body = Buffer.concat(parts);
  return sealed(body);
}
