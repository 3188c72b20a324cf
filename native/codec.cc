#include "codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "crc32c.h"
#include "errors.h"
#include "linalg.h"
#include "rans.h"

namespace kvtc {
namespace {

constexpr uint32_t kBatch = 64;  // tokens per GEMM batch: big enough to amortize the basis reads

inline size_t row_bytes(const Profile& p, DType t) { return size_t(p.row_values()) * dtype_bytes(t); }

const void* layer_row(const void* base, uint32_t token, size_t rb) {
  return static_cast<const uint8_t*>(base) + size_t(token) * rb;
}

inline int32_t position_of(const CacheView& c, uint32_t t) { return c.positions ? c.positions[t] : int32_t(t); }

// True when a middle token must be stored raw: a non-finite value, or magnitudes whose PCA
// coefficients could overflow the fp16 shift/scale (rotation does not change the norm).
bool must_escape(const Profile& pr, const CacheView& c, uint32_t t, std::vector<float>& tmp) {
  const uint32_t rv = pr.row_values();
  const size_t rb = row_bytes(pr, c.dtype);
  tmp.resize(rv);
  for (int s = 0; s < 2; s++) {
    const std::vector<const void*>& layers = s == 0 ? c.keys : c.values;
    for (const StreamGroup& g : pr.groups[s]) {
      double sq = 0;
      for (uint32_t l = 0; l < g.layer_count; l++) {
        load_row(layer_row(layers[g.layer_start + l], t, rb), c.dtype, int(rv), tmp.data());
        for (uint32_t j = 0; j < rv; j++) {
          if (!std::isfinite(tmp[j])) return true;
          sq += double(tmp[j]) * tmp[j];
        }
      }
      if (std::sqrt(sq) + mean_norm(g) > kMaxCoefficient) return true;
    }
  }
  return false;
}

}  // namespace

void gather_features(const Profile& pr, const StreamGroup& g, bool is_key, const std::vector<const void*>& layers,
                     DType dtype, const uint32_t* toks, const int32_t* pos, uint32_t n, float* X,
                     std::vector<float>& cs) {
  const uint32_t rv = pr.row_values();
  const size_t rb = row_bytes(pr, dtype);
  const bool rope = is_key && pr.rope.style != RopeStyle::None;
  const int half = pr.rope.dims / 2;
  if (rope) cs.resize(size_t(2) * half);
  for (uint32_t i = 0; i < n; i++) {
    float* x = X + size_t(i) * g.p;
    if (rope) rope_angles(pr.rope, pos[i], cs.data(), cs.data() + half);
    for (uint32_t l = 0; l < g.layer_count; l++) {
      float* seg = x + size_t(l) * rv;
      load_row(layer_row(layers[g.layer_start + l], toks[i], rb), dtype, int(rv), seg);
      if (rope) rope_rotate_row(pr.rope, seg, int(pr.kv_heads), int(pr.head_dim), cs.data(), cs.data() + half, true);
    }
    for (uint32_t j = 0; j < g.p; j++) x[j] -= g.mean[j];
  }
}

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

BlobHeader make_header(const Profile& pr, uint32_t n, DType dtype, const int32_t* positions) {
  BlobHeader h;
  h.fingerprint = pr.fingerprint;
  h.layers = pr.layers;
  h.kv_heads = pr.kv_heads;
  h.head_dim = pr.head_dim;
  h.dtype = dtype;
  h.tokens = n;
  h.sinks = std::min(pr.sinks, n);
  h.window = std::min(pr.window, n - h.sinks);
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

std::vector<uint8_t> encode_cache(const Profile& pr, const CacheView& c, const EncodeOptions& opts) {
  if (c.keys.size() != pr.layers || c.values.size() != pr.layers)
    fail("E_LAYOUT", "cache has " + std::to_string(c.keys.size()) + " layers, profile expects " +
                         std::to_string(pr.layers));
  const uint32_t n = c.tokens;
  BlobHeader h = make_header(pr, n, c.dtype, c.positions);
  std::vector<float> tmp;
  for (uint32_t t = h.sinks; t + h.window < n; t++)
    if (must_escape(pr, c, t, tmp)) h.escapes.push_back(t);
  const std::vector<uint32_t> coded = coded_tokens(n, h.sinks, h.window, h.escapes);

  std::vector<std::vector<uint8_t>> payloads;
  // Section 0: raw tokens in token order, layer by layer, keys then values.
  {
    const std::vector<uint32_t> raw = raw_tokens(h);
    const size_t rb = row_bytes(pr, c.dtype);
    std::vector<uint8_t> sec(raw.size() * rb * 2 * pr.layers);
    uint8_t* o = sec.data();
    for (uint32_t l = 0; l < pr.layers; l++)
      for (int s = 0; s < 2; s++)
        for (uint32_t t : raw) {
          std::memcpy(o, layer_row(s == 0 ? c.keys[l] : c.values[l], t, rb), rb);
          o += rb;
        }
    payloads.push_back(std::move(sec));
    h.sections.push_back({SectionMode::Stored, uint32_t(payloads[0].size()), uint32_t(payloads[0].size()), 0});
  }

  std::vector<int32_t> pos(kBatch);
  std::vector<float> X, D, cs;
  for (int s = 0; s < 2; s++) {
    for (const StreamGroup& g : pr.groups[s]) {
      const RowLayout& rl = g.row;
      std::vector<uint8_t> rows(coded.size() * rl.rowBytes);
      X.resize(size_t(kBatch) * g.p);
      D.resize(size_t(kBatch) * std::max<uint32_t>(g.k, 1));
      for (size_t b0 = 0; b0 < coded.size() && g.k > 0; b0 += kBatch) {
        const uint32_t nb = uint32_t(std::min<size_t>(kBatch, coded.size() - b0));
        for (uint32_t i = 0; i < nb; i++) pos[i] = position_of(c, coded[b0 + i]);
        gather_features(pr, g, s == 0, s == 0 ? c.keys : c.values, c.dtype, &coded[b0], pos.data(), nb, X.data(), cs);
        gemm_f32(int(nb), int(g.k), int(g.p), X.data(), int(g.p), g.basis_t.data(), int(g.k), D.data(), int(g.k), false);
        for (uint32_t i = 0; i < nb; i++)
          quantize_row(rl, D.data() + size_t(i) * g.k, rows.data() + (b0 + i) * rl.rowBytes);
      }
      SectionInfo si{SectionMode::Stored, uint32_t(rows.size()), uint32_t(rows.size()), 0};
      if (opts.entropy && !rows.empty()) {
        std::vector<uint8_t> enc = rans_encode_rows(rows.data(), uint32_t(coded.size()), rl.rowBytes,
                                                    rans_chunk_rows(rl.rowBytes), rl.context.data(), g.tables.data());
        if (enc.size() < rows.size()) {  // never store an expansion
          si.mode = SectionMode::RansChunks;
          si.stored_len = uint32_t(enc.size());
          rows = std::move(enc);
        }
      }
      h.sections.push_back(si);
      payloads.push_back(std::move(rows));
    }
  }

  return seal_blob(h, payloads);
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

void decode_blob(const Profile& pr, const uint8_t* blob, const BlobHeader& h, void* keys, void* values,
                 int32_t* positions) {
  check_blob(pr, h);
  const uint32_t n = h.tokens;
  for (uint32_t t = 0; t < n; t++) positions[t] = h.contiguous ? int32_t(int64_t(h.pos_start) + t) : h.positions[t];

  const size_t rb = row_bytes(pr, h.dtype);
  const size_t layer_bytes = size_t(n) * rb;
  auto out_row = [&](int s, uint32_t layer, uint32_t t) -> uint8_t* {
    return static_cast<uint8_t*>(s == 0 ? keys : values) + size_t(layer) * layer_bytes + size_t(t) * rb;
  };

  // Raw tokens.
  {
    const std::vector<uint32_t> raw = raw_tokens(h);
    const SectionInfo& sec = h.sections[0];
    const uint8_t* in = blob + sec.offset;
    for (uint32_t l = 0; l < pr.layers; l++)
      for (int s = 0; s < 2; s++)
        for (uint32_t t : raw) {
          std::memcpy(out_row(s, l, t), in, rb);
          in += rb;
        }
  }

  const std::vector<uint32_t> coded = coded_tokens(n, h.sinks, h.window, h.escapes);
  std::vector<uint8_t> rows;
  std::vector<float> D, X, cs(std::max(2, pr.rope.dims));
  const uint32_t rv = pr.row_values();
  const int half = pr.rope.dims / 2;
  size_t si = 1;
  for (int s = 0; s < 2; s++) {
    for (const StreamGroup& g : pr.groups[s]) {
      const SectionInfo& sec = h.sections[si++];
      const RowLayout& rl = g.row;
      require_corrupt(size_t(sec.raw_len) == coded.size() * rl.rowBytes, "coded section size");
      const uint8_t* src = blob + sec.offset;
      if (entropy_coded(sec.mode)) {
        rows.resize(sec.raw_len);
        if (sec.mode == SectionMode::Rans)
          rans_decode(src, sec.stored_len, rows.data(), rows.size(), rl.context.data(), rl.rowBytes, g.tables.data());
        else
          rans_decode_rows(src, sec.stored_len, rows.data(), uint32_t(coded.size()), rl.rowBytes, rl.context.data(),
                           g.tables.data());
        src = rows.data();
      }
      D.assign(size_t(kBatch) * std::max<uint32_t>(g.k, 1), 0.0f);
      X.resize(size_t(kBatch) * g.p);
      const bool rope = s == 0 && pr.rope.style != RopeStyle::None;
      for (size_t b0 = 0; b0 < coded.size(); b0 += kBatch) {
        const uint32_t nb = uint32_t(std::min<size_t>(kBatch, coded.size() - b0));
        for (uint32_t i = 0; i < nb; i++) dequantize_row(rl, src + (b0 + i) * rl.rowBytes, D.data() + size_t(i) * g.k);
        gemm_f32(int(nb), int(g.p), int(g.k), D.data(), int(g.k), g.basis.data(), int(g.p), X.data(), int(g.p), false);
        for (uint32_t i = 0; i < nb; i++) {
          const uint32_t t = coded[b0 + i];
          float* x = X.data() + size_t(i) * g.p;
          for (uint32_t j = 0; j < g.p; j++) x[j] += g.mean[j];
          if (rope) rope_angles(pr.rope, positions[t], cs.data(), cs.data() + half);
          for (uint32_t l = 0; l < g.layer_count; l++) {
            float* seg = x + size_t(l) * rv;
            if (rope) rope_rotate_row(pr.rope, seg, int(pr.kv_heads), int(pr.head_dim), cs.data(), cs.data() + half, false);
            store_row(seg, h.dtype, int(rv), out_row(s, g.layer_start + l, t));
          }
        }
      }
    }
  }
}

}  // namespace kvtc
