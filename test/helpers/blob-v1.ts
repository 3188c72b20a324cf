/**
 * Rewrites a blob encoded with entropy: false into the version-1 container (one rANS stream per
 * section, the format before chunked sections), to check that old blobs keep decoding.
 * Offsets follow native/container.cc (write_blob_header).
 */
import { native } from '../../src/binding.js';
import { sealed } from './sealed.js';
import type { CodecProfile } from '../../src/index.js';

const VERSION = 4;
const SECTION_COUNT = 60;
const SECTIONS = 64;

export async function toVersion1(storedBlob: Uint8Array, profile: CodecProfile): Promise<Uint8Array> {
  const dv = new DataView(storedBlob.buffer, storedBlob.byteOffset, storedBlob.byteLength);
  const nsec = dv.getUint32(SECTION_COUNT, true);
  let payloadStart = storedBlob.length - 4;
  for (let i = 0; i < nsec; i++) payloadStart -= dv.getUint32(SECTIONS + 12 * i + 4, true);
  const header = storedBlob.slice(0, payloadStart);
  const hv = new DataView(header.buffer);
  hv.setUint16(VERSION, 1, true);
  const handle = await profile.nativeHandle();
  const groupsPerStream = (nsec - 1) / 2;
  const parts: Uint8Array[] = [];
  let at = payloadStart;
  for (let i = 0; i < nsec; i++) {
    const len = dv.getUint32(SECTIONS + 12 * i + 4, true);
    let part = storedBlob.subarray(at, at + len);
    at += len;
    if (i > 0 && len > 0) {
      const g = i - 1;
      part = native.internals.ransEncode(handle, g < groupsPerStream ? 0 : 1, g % groupsPerStream, part);
      header[SECTIONS + 12 * i] = 1; // one-stream rANS
      hv.setUint32(SECTIONS + 12 * i + 4, part.length, true);
    }
    parts.push(part);
  }
  const body = Buffer.concat([header, ...parts]);
  return sealed(body);
}
