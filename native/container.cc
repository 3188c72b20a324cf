#include "container.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

namespace {
inline size_t row_bytes(const Profile& p, DType t) { return size_t(p.row_values()) * dtype_bytes(t); }
}  // namespace

std::vector<uint32_t> coded_tokens(uint32_t tokens, uint32_t sinks, uint32_t window,
                                   const std::vector<uint32_t>& escapes) {
  std::vector<uint32_t> out;
  size_t e = 0;
  for (uint32_t t = sinks; t + window < tokens; t++) {
    if (e < escapes.size() && escapes[e] == t) {
      e++;
      continue;
    }
    out.push_back(t);
  }
  return out;
}

double mean_norm(const StreamGroup& g) {
  double msq = 0;
  for (float m : g.mean) msq += double(m) * m;
  return std::sqrt(msq);
}

BlobHeader make_header(const Profile& pr, uint32_t n, DType dtype, const int32_t* positions, uint32_t sinks,
                       uint32_t window) {
  BlobHeader h;
  h.fingerprint = pr.fingerprint;
  h.layers = pr.layers;
  h.kv_heads = pr.kv_heads;
  h.head_dim = pr.head_dim;
  h.dtype = dtype;
  h.tokens = n;
  h.sinks = std::min(sinks, n);
  h.window = std::min(window, n - h.sinks);
  auto position_of = [&](uint32_t t) { return positions ? positions[t] : int32_t(t); };
  h.pos_start = n > 0 ? position_of(0) : 0;
  for (uint32_t t = 1; t < n && h.contiguous; t++)
    h.contiguous = int64_t(position_of(t)) == int64_t(h.pos_start) + t;
  if (!h.contiguous) h.positions.assign(positions, positions + n);
  return h;
}

std::vector<uint32_t> raw_tokens(const BlobHeader& h) {
  std::vector<uint32_t> raw;
  for (uint32_t t = 0; t < h.tokens; t++)
    if (t < h.sinks || t + h.window >= h.tokens) raw.push_back(t);
  raw.insert(raw.end(), h.escapes.begin(), h.escapes.end());
  std::sort(raw.begin(), raw.end());
  return raw;
}

std::vector<uint8_t> seal_blob(const BlobHeader& h, const std::vector<std::vector<uint8_t>>& payloads) {
  std::vector<uint8_t> out;
  write_blob_header(h, out);
  for (const auto& p : payloads) out.insert(out.end(), p.begin(), p.end());
  if (out.size() > 0xffffffffull) fail("E_CAPACITY", "encoded blob exceeds 4 GiB");
  const uint32_t crc = crc32c(0, out.data(), out.size());
  const size_t at = out.size();
  out.resize(at + 4);
  std::memcpy(out.data() + at, &crc, 4);
  return out;
}

size_t check_blob(const Profile& pr, const BlobHeader& h) {
  if (h.fingerprint != pr.fingerprint)
    fail("E_PROFILE_MISMATCH", "blob was encoded with another profile (fingerprint differs)");
  // Same fingerprint, different shape: the header is damaged, not from another model.
  require_corrupt(h.layers == pr.layers && h.kv_heads == pr.kv_heads && h.head_dim == pr.head_dim,
                  "layout does not match the blob's own profile");
  require_corrupt(h.sections.size() == 1 + 2 * pr.groups[0].size(), "section count does not match the profile");
  const size_t rb = row_bytes(pr, h.dtype);
  // Every claimed size must agree with the token count before anything is allocated.
  const uint64_t raw_count = uint64_t(h.sinks) + h.window + h.escapes.size();
  require_corrupt(h.sections[0].mode == SectionMode::Stored &&
                      uint64_t(h.sections[0].raw_len) == raw_count * rb * 2 * pr.layers,
                  "raw section size");
  const uint64_t coded = uint64_t(h.tokens) - raw_count;
  size_t si = 1;
  for (int s = 0; s < 2; s++)
    for (const StreamGroup& g : pr.groups[s])
      require_corrupt(uint64_t(h.sections[si++].raw_len) == coded * g.row.rowBytes, "coded section size");
  return size_t(h.tokens) * rb * pr.layers;
}

}  // namespace kvtc
