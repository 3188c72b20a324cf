/**
 * A checksummed record as the native code writes profiles and blobs: the body, then a CRC-32C of
 * it (little-endian u32). For test helpers that rewrite such a record into an older format.
 */
import { native } from '../../src/binding.js';

export function sealed(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(body.length + 4);
  out.set(body);
  new DataView(out.buffer).setUint32(body.length, native.crc32c(body), true);
  return out;
}
