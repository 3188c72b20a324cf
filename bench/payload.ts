/**
 * Entropy coders compared on exactly the same bytes: the packed quantized sections of a blob
 * encoded with `entropy: false`. rANS is kvtc's own coder (its time is the difference between
 * encoding with and without entropy coding); DEFLATE is node:zlib (the KVTC paper's choice);
 * zstd is the reference implementation compiled to WebAssembly.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { compress as zstdCompress, decompress as zstdDecompress, init as zstdInit } from '@bokuweb/zstd-wasm';
import { inspect } from '../src/index.js';

let zstdReady: Promise<void> | undefined;
export function initZstd(): Promise<void> {
  zstdReady ??= zstdInit();
  return zstdReady;
}

/** The coded sections (everything but the raw tokens) of a blob encoded with entropy: false. */
export function codedPayload(plainBlob: Uint8Array): { header: number; raw: number; sections: Uint8Array[] } {
  const info = inspect(plainBlob);
  const total = info.sections.reduce((s, x) => s + x.storedBytes, 0);
  let off = plainBlob.length - 4 - total;
  const header = off;
  const raw = info.sections[0]!.storedBytes;
  off += raw;
  const sections: Uint8Array[] = [];
  for (const s of info.sections.slice(1)) {
    if (s.mode !== 'stored') throw new Error('codedPayload needs a blob encoded with entropy: false');
    sections.push(plainBlob.subarray(off, off + s.storedBytes));
    off += s.storedBytes;
  }
  return { header, raw, sections };
}

export interface CoderResult {
  bytes: number;
  encodeMs: number;
  decodeMs: number;
}

function timed<T>(fn: () => T): [T, number] {
  const t = performance.now();
  const r = fn();
  return [r, performance.now() - t];
}

/** DEFLATE (level 6, raw) on each section. */
export function deflateSections(sections: Uint8Array[]): CoderResult {
  let bytes = 0;
  let encodeMs = 0;
  let decodeMs = 0;
  for (const s of sections) {
    const [c, te] = timed(() => deflateRawSync(s, { level: 6 }));
    const [, td] = timed(() => inflateRawSync(c));
    bytes += c.length + 4; // + a length field, as a container would need
    encodeMs += te;
    decodeMs += td;
  }
  return { bytes, encodeMs, decodeMs };
}

/** zstd (level 3) on each section. Call initZstd() first. */
export function zstdSections(sections: Uint8Array[], level = 3): CoderResult {
  let bytes = 0;
  let encodeMs = 0;
  let decodeMs = 0;
  for (const s of sections) {
    const [c, te] = timed(() => zstdCompress(s, level));
    const [, td] = timed(() => zstdDecompress(c));
    bytes += c.length + 4;
    encodeMs += te;
    decodeMs += td;
  }
  return { bytes, encodeMs, decodeMs };
}
