/**
 * What the store puts on the remote tier for a session: its manifest (the disk record's metadata,
 * naming its chunks, and the key of its tail) — the same record the disk tier keeps, so a session
 * read from the remote is checked like a disk record (profile fingerprint, layout, chunk sizes,
 * the tail's CRC-32C) before any of it is decoded.
 *
 *   u8 version | 32 ASCII hex: the tail's key | the framed disk record (disk-record.ts)
 *
 * The tail is stored as a chunk under a key derived from its bytes (the remote's chunks are
 * content-addressed: same key, same bytes).
 */
import { createHash } from 'node:crypto';
import { type DiskPutMeta, type DiskRecordMeta, decodeMeta, encodeFramed, normalizeMeta, storedMeta } from './disk-record.js';
import { crc32c } from '../binding.js';

const VERSION = 1;
const HEX32 = /^[0-9a-f]{32}$/;

/** The content key of a session's tail blob. */
export function tailKey(tail: Uint8Array): string {
  return createHash('sha256').update('kvtc-tail-v1\0').update(tail).digest().subarray(0, 16).toString('hex');
}

/** A session's remote manifest: its record (checksum and size of `tail` filled in) and the tail's key. */
export function encodeRemoteManifest(meta: DiskPutMeta, tail: Uint8Array): { manifest: Uint8Array; tailKey: string } {
  const key = tailKey(tail);
  const record = encodeFramed(storedMeta(normalizeMeta(meta, tail.byteLength, crc32c(tail) >>> 0)));
  const out = new Uint8Array(1 + 32 + record.length);
  out[0] = VERSION;
  out.set(Buffer.from(key, 'latin1'), 1);
  out.set(record, 33);
  return { manifest: out, tailKey: key };
}

/** The record and tail key of a remote manifest stored under `id`, or what is wrong with it. */
export function decodeRemoteManifest(bytes: Uint8Array, id: string): { ok: true; meta: DiskRecordMeta; tailKey: string } | { ok: false; detail: string } {
  if (bytes.byteLength < 34 || bytes[0] !== VERSION) return { ok: false, detail: 'remote manifest has a bad header' };
  const key = Buffer.from(bytes.buffer, bytes.byteOffset + 1, 32).toString('latin1');
  if (!HEX32.test(key)) return { ok: false, detail: 'remote manifest has a bad tail key' };
  const d = decodeMeta(bytes.subarray(33), id);
  if (!d.ok) return { ok: false, detail: `remote manifest: ${d.detail}` };
  return { ok: true, meta: d.meta, tailKey: key };
}
