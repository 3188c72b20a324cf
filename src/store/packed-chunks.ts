/**
 * A record's chunk list as the disk tier keeps it in memory: one byte array of 24 bytes per chunk
 * (the key's 16 bytes, then size and tokens as little-endian u32), not an object and a key string
 * per chunk. At a million chunks the objects were most of the V8 heap, and every major GC marked
 * them; a byte array is one object whatever its length.
 */
import type { ChunkRef, DiskRecordMeta } from './disk-record.js';

const STRIDE = 24;

export function packChunks(chunks: readonly ChunkRef[]): Uint8Array {
  // One hex decode for the list, not one per chunk.
  const keys = Buffer.from(chunks.map((c) => c.key).join(''), 'hex');
  return packStored(keys, chunks.map((c) => c.bytes), chunks.map((c) => c.tokens));
}

/** A packed list from a stored manifest's columns (keys: 16 bytes each, already decoded). */
export function packStored(keys: Uint8Array, bytes: readonly number[], tokens: readonly number[]): Uint8Array {
  const out = new Uint8Array(bytes.length * STRIDE);
  const view = new DataView(out.buffer);
  for (let i = 0; i < bytes.length; i++) {
    out.set(keys.subarray(16 * i, 16 * i + 16), i * STRIDE);
    view.setUint32(i * STRIDE + 16, bytes[i]!, true);
    view.setUint32(i * STRIDE + 20, tokens[i]!, true);
  }
  return out;
}

export function unpackChunks(packed: Uint8Array): ChunkRef[] {
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  const out: ChunkRef[] = [];
  for (let o = 0; o < packed.byteLength; o += STRIDE) {
    out.push({ key: Buffer.from(packed.buffer, packed.byteOffset + o, 16).toString('hex'), bytes: view.getUint32(o + 16, true), tokens: view.getUint32(o + 20, true) });
  }
  return out;
}

/** A live record in the disk tier's memory: its metadata with the chunk list packed. */
export type MemRecord = Omit<DiskRecordMeta, 'chunks'> & { packedChunks?: Uint8Array };

export function toMemRecord(meta: DiskRecordMeta): MemRecord {
  const { chunks, ...rest } = meta;
  return chunks ? { ...rest, packedChunks: packChunks(chunks) } : rest;
}

/** The record's metadata as the tier's callers see it (chunks unpacked; other fields shared). */
export function fromMemRecord(m: MemRecord): DiskRecordMeta {
  const { packedChunks, ...rest } = m;
  return packedChunks ? { ...rest, chunks: unpackChunks(packedChunks) } : rest;
}

/** The chunks a live record names (fresh objects; none for a record without chunks). */
export function chunksOf(m: MemRecord | undefined): ChunkRef[] {
  return m?.packedChunks ? unpackChunks(m.packedChunks) : [];
}
