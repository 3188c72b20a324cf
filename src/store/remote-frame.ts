/**
 * The framing of every value the remote tier stores. A remote server is shared and outside this
 * process, so nothing read from it is trusted before these checks pass: the value must be a whole
 * frame of the expected kind, made for this codec profile, under the name it is read for (a value
 * copied to another key reads as corrupt), with a matching CRC-32C over everything before it.
 *
 * Frame, little-endian:
 *
 *   off  size  field
 *     0     4  magic 'KVTR'
 *     4     1  version (1)
 *     5     1  kind: 1 chunk, 2 manifest
 *     6     2  nameLen: bytes of the name (UTF-8: the chunk key, or the session id)
 *     8    16  profile fingerprint (the 32 hex digits as 16 bytes)
 *    24     8  ttlMs (float64): a manifest's session TTL, so a reader can renew the leases; 0 for chunks
 *    32     4  payloadLen
 *    36     n  name
 *  36+n     p  payload
 *   end-4   4  CRC-32C of bytes [0, end-4)
 *
 * A manifest's payload is the list of chunk keys it names (u32 count, then per key a u8 length and
 * its ASCII hex) followed by the caller's opaque manifest bytes: the tier itself knows which chunks
 * a manifest needs, so it can renew their leases and check they are all present.
 */
import { crc32c } from '../binding.js';

const MAGIC = 0x5254564b; // 'KVTR' read as a little-endian u32
const VERSION = 1;
const HEADER = 36;
const TRAILER = 4;

/** What a frame holds. */
export const FrameKind = { chunk: 1, manifest: 2 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/** A frame that passed every check. `payload` is a view into the bytes given to readFrame. */
export interface Frame {
  ttlMs: number;
  payload: Uint8Array;
}

/** Why a value was refused: its bytes are damaged or not a frame ('corrupt'), or it was made for another profile. */
export type FrameFault = { reason: 'corrupt' | 'profile-mismatch'; detail: string };

/** Frames `payload` as a `kind` value named `name` for profile `fingerprint` (32 hex digits). */
export function writeFrame(kind: FrameKind, fingerprint: string, name: string, payload: Uint8Array, ttlMs = 0): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const out = Buffer.allocUnsafe(HEADER + nameBytes.length + payload.length + TRAILER);
  out.writeUInt32LE(MAGIC, 0);
  out.writeUInt8(VERSION, 4);
  out.writeUInt8(kind, 5);
  out.writeUInt16LE(nameBytes.length, 6);
  out.write(fingerprint, 8, 16, 'hex');
  out.writeDoubleLE(ttlMs, 24);
  out.writeUInt32LE(payload.length, 32);
  nameBytes.copy(out, HEADER);
  out.set(payload, HEADER + nameBytes.length);
  const end = out.length - TRAILER;
  out.writeUInt32LE(crc32c(out.subarray(0, end)), end);
  return out;
}

/**
 * Checks `bytes` is a whole `kind` frame named `name` for `fingerprint`; returns its payload (a
 * view, no copy) or the fault. The profile is compared only once the CRC holds, so a damaged frame
 * is reported as corrupt and never as a profile mismatch.
 */
export function readFrame(bytes: Uint8Array, kind: FrameKind, fingerprint: string, name: string): Frame | FrameFault {
  if (bytes.length < HEADER + TRAILER) return { reason: 'corrupt', detail: `${bytes.length} bytes is shorter than a frame` };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.readUInt32LE(0) !== MAGIC) return { reason: 'corrupt', detail: 'bad magic' };
  if (b.readUInt8(4) !== VERSION) return { reason: 'corrupt', detail: `unknown frame version ${b.readUInt8(4)}` };
  const nameLen = b.readUInt16LE(6);
  const payloadLen = b.readUInt32LE(32);
  if (HEADER + nameLen + payloadLen + TRAILER !== b.length) {
    return { reason: 'corrupt', detail: `frame claims ${HEADER + nameLen + payloadLen + TRAILER} bytes, holds ${b.length}` };
  }
  const end = b.length - TRAILER;
  if (crc32c(b.subarray(0, end)) !== b.readUInt32LE(end)) return { reason: 'corrupt', detail: 'CRC-32C mismatch' };
  if (b.readUInt8(5) !== kind) return { reason: 'corrupt', detail: `frame of kind ${b.readUInt8(5)} where ${kind} was expected` };
  const fp = b.toString('hex', 8, 24);
  if (fp !== fingerprint) return { reason: 'profile-mismatch', detail: `made for profile ${fp}, this tier uses ${fingerprint}` };
  if (b.toString('utf8', HEADER, HEADER + nameLen) !== name) return { reason: 'corrupt', detail: 'frame names another key or session' };
  const ttlMs = b.readDoubleLE(24);
  if (!Number.isFinite(ttlMs) || ttlMs < 0) return { reason: 'corrupt', detail: `bad ttl ${ttlMs}` };
  return { ttlMs, payload: b.subarray(HEADER + nameLen, end) };
}

/** A manifest frame's payload: the chunk keys it names, then the caller's manifest bytes. */
export function writeManifestBody(chunkKeys: readonly string[], manifest: Uint8Array): Buffer {
  let size = 4 + manifest.length;
  for (const k of chunkKeys) size += 1 + k.length;
  const out = Buffer.allocUnsafe(size);
  out.writeUInt32LE(chunkKeys.length, 0);
  let off = 4;
  for (const k of chunkKeys) {
    out.writeUInt8(k.length, off);
    out.write(k, off + 1, 'latin1');
    off += 1 + k.length;
  }
  out.set(manifest, off);
  return out;
}

/** Parses writeManifestBody's bytes (already CRC-checked, but still bounds-checked), or undefined when malformed. */
export function readManifestBody(body: Uint8Array): { chunkKeys: string[]; manifest: Uint8Array } | undefined {
  const b = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (b.length < 4) return undefined;
  const count = b.readUInt32LE(0);
  if (count > b.length) return undefined;
  const chunkKeys: string[] = [];
  let off = 4;
  for (let i = 0; i < count; i++) {
    if (off >= b.length) return undefined;
    const len = b.readUInt8(off);
    if (off + 1 + len > b.length) return undefined;
    const k = b.toString('latin1', off + 1, off + 1 + len);
    if (!/^[0-9a-f]{32,64}$/.test(k)) return undefined;
    chunkKeys.push(k);
    off += 1 + len;
  }
  return { chunkKeys, manifest: b.subarray(off) };
}
