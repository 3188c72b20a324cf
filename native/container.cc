#include "container.h"

#include <algorithm>
#include <string>

#include "bytes.h"
#include "crc32c.h"
#include "errors.h"

namespace kvtc {

void write_blob_header(const BlobHeader& h, std::vector<uint8_t>& out) {
  ByteWriter w;
  w.put<uint32_t>(kBlobMagic);
  w.put<uint16_t>(kBlobVersion);
  w.put<uint16_t>(0);  // flags, reserved
  w.bytes(h.fingerprint.data(), 16);
  w.put<uint32_t>(h.layers);
  w.put<uint32_t>(h.kv_heads);
  w.put<uint32_t>(h.head_dim);
  w.put<uint8_t>(uint8_t(h.dtype));
  w.put<uint8_t>(h.contiguous ? 0 : 1);
  w.put<uint16_t>(0);
  w.put<uint32_t>(h.tokens);
  w.put<uint32_t>(h.sinks);
  w.put<uint32_t>(h.window);
  w.put<uint32_t>(uint32_t(h.escapes.size()));
  w.put<int32_t>(h.pos_start);
  w.put<uint32_t>(uint32_t(h.sections.size()));
  for (const SectionInfo& s : h.sections) {
    w.put<uint8_t>(uint8_t(s.mode));
    w.put<uint8_t>(0);
    w.put<uint16_t>(0);
    w.put<uint32_t>(s.stored_len);
    w.put<uint32_t>(s.raw_len);
  }
  if (!h.contiguous) w.array(h.positions);
  w.array(h.escapes);
  out.insert(out.end(), w.buf.begin(), w.buf.end());
}

BlobHeader read_blob_header(const uint8_t* blob, size_t len, bool verify_checksum) {
  require_corrupt(len >= 8, "blob is too short");
  ByteReader r(blob, len - 4, "E_CORRUPT");
  require_corrupt(r.get<uint32_t>("magic") == kBlobMagic, "not a kvtc blob (bad magic)");
  const uint16_t version = r.get<uint16_t>("version");
  if (version < 1 || version > kBlobVersion) fail("E_CORRUPT", "unsupported blob version " + std::to_string(version));
  r.get<uint16_t>("flags");
  if (verify_checksum) {
    uint32_t stored;
    std::memcpy(&stored, blob + len - 4, 4);
    require_corrupt(crc32c(0, blob, len - 4) == stored, "checksum mismatch");
  }
  BlobHeader h;
  std::memcpy(h.fingerprint.data(), r.take(16, "fingerprint"), 16);
  h.layers = r.get<uint32_t>("layers");
  h.kv_heads = r.get<uint32_t>("kvHeads");
  h.head_dim = r.get<uint32_t>("headDim");
  const uint8_t dt = r.get<uint8_t>("dtype");
  require_corrupt(dt <= 2, "dtype");
  h.dtype = DType(dt);
  const uint8_t pm = r.get<uint8_t>("position mode");
  require_corrupt(pm <= 1, "position mode");
  h.contiguous = pm == 0;
  r.get<uint16_t>("reserved");
  h.tokens = r.get<uint32_t>("tokens");
  h.sinks = r.get<uint32_t>("sinks");
  h.window = r.get<uint32_t>("window");
  const uint32_t nesc = r.get<uint32_t>("escape count");
  h.pos_start = r.get<int32_t>("position start");
  const uint32_t nsec = r.get<uint32_t>("section count");
  require_corrupt(h.layers > 0 && h.kv_heads > 0 && h.head_dim > 0 && h.layers <= 4096 && h.kv_heads <= 4096 &&
                      h.head_dim <= 8192,
                  "layout");
  require_corrupt(uint64_t(h.sinks) + h.window <= h.tokens, "sink/window counts exceed the token count");
  require_corrupt(nesc <= h.tokens - h.sinks - h.window, "escape count");
  require_corrupt(nsec >= 1 && nsec <= 2 * h.layers + 1, "section count");
  h.sections.resize(nsec);
  for (SectionInfo& s : h.sections) {
    const uint8_t mode = r.get<uint8_t>("section mode");
    // Version 1 knew one-stream sections only.
    require_corrupt(mode <= (version == 1 ? 1 : 2), "section mode");
    s.mode = SectionMode(mode);
    r.get<uint8_t>("reserved");
    r.get<uint16_t>("reserved");
    s.stored_len = r.get<uint32_t>("section length");
    s.raw_len = r.get<uint32_t>("section raw length");
    require_corrupt(entropy_coded(s.mode) || s.stored_len == s.raw_len, "stored section lengths");
  }
  if (!h.contiguous) r.array(h.positions, h.tokens, "positions");
  r.array(h.escapes, nesc, "escapes");
  for (size_t i = 0; i < h.escapes.size(); i++) {
    require_corrupt(h.escapes[i] >= h.sinks && h.escapes[i] < h.tokens - h.window, "escape index");
    require_corrupt(i == 0 || h.escapes[i] > h.escapes[i - 1], "escape order");
  }
  size_t off = r.pos();
  for (SectionInfo& s : h.sections) {
    s.offset = off;
    off += s.stored_len;
  }
  require_corrupt(off + 4 == len, "section lengths do not match the blob size");
  h.total_len = len;
  return h;
}

}  // namespace kvtc
