#include "codec.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "crc32c.h"
#include "errors.h"
#include "gemm.h"
#include "rans.h"
#include "rope_simd.h"

namespace kvtc {
namespace {

constexpr uint32_t kBatch = 64;  // tokens per GEMM batch: whole 8-row tiles, the batch stays in L2

inline size_t row_bytes(const Profile& p, DType t) { return size_t(p.row_values()) * dtype_bytes(t); }

const void* layer_row(const void* base, uint32_t token, size_t rb) {
  return static_cast<const uint8_t*>(base) + size_t(token) * rb;
}

inline int32_t position_of(const CacheView& c, uint32_t t) { return c.positions ? c.positions[t] : int32_t(t); }

void check_threads(int threads) {
  if (threads < 1 || threads > kMaxThreads)
    fail("E_OPTIONS", "options.threads must be an integer from 1 to " + std::to_string(kMaxThreads) + ", got " +
                          std::to_string(threads));
}

// RoPE angles of the tokens of one call. Positions are the same in every layer, so they are
// computed once per token, not once per token and layer group.
struct Angles {
  int half = 0;
  std::vector<float> cos, sin;  // [token][half]
  const float* cos_at(size_t i) const { return cos.data() + i * half; }
  const float* sin_at(size_t i) const { return sin.data() + i * half; }
};

template <typename PosOf>
Angles make_angles(const RopeParams& rope, size_t n, PosOf pos_of) {
  Angles a;
  if (rope.style == RopeStyle::None) return a;
  a.half = rope.dims / 2;
  a.cos.resize(n * a.half);
  a.sin.resize(n * a.half);
  for (size_t i = 0; i < n; i++) rope_angles(rope, pos_of(i), a.cos.data() + i * a.half, a.sin.data() + i * a.half);
  return a;
}

// Sum of squares in double (exact products; four chains so the adds overlap).
double sum_squares(const float* x, uint32_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  uint32_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += double(x[j]) * x[j];
    s1 += double(x[j + 1]) * x[j + 1];
    s2 += double(x[j + 2]) * x[j + 2];
    s3 += double(x[j + 3]) * x[j + 3];
  }
  for (; j < n; j++) s0 += double(x[j]) * x[j];
  return (s0 + s1) + (s2 + s3);
}

// One token's feature row x[g.p] for one stream group: its layers side by side, keys with RoPE
// removed by the angles (cos_a/sin_a; unused without RoPE), g.mean subtracted. Returns the sum
// of squares of the raw values (NaN or Inf when one is non-finite) for the escape test, in the
// same pass. features=false only loads and measures (a group that keeps no components).
double gather_token(const Profile& pr, const StreamGroup& g, bool rope, const std::vector<const void*>& layers,
                    DType dtype, uint32_t tok, const float* cos_a, const float* sin_a, float* x, bool features,
                    bool measure) {
  const uint32_t rv = pr.row_values();
  const size_t rb = row_bytes(pr, dtype);
  double sq = 0;
  for (uint32_t l = 0; l < g.layer_count; l++) {
    float* seg = x + size_t(l) * rv;
    load_row(layer_row(layers[g.layer_start + l], tok, rb), dtype, int(rv), seg);
    if (measure) sq += sum_squares(seg, rv);
    if (!features) continue;
    if (rope) rope_rotate_row(pr.rope, seg, int(pr.kv_heads), int(pr.head_dim), cos_a, sin_a, true);
    const float* m = g.mean.data() + size_t(l) * rv;
    for (uint32_t j = 0; j < rv; j++) seg[j] -= m[j];
  }
  return sq;
}

// True when a token's features in one group must be stored raw: a non-finite value, or a norm
// whose PCA coefficients could overflow the fp16 shift/scale (rotation keeps the norm). NaN
// fails the comparison, so one test covers both.
inline bool escapes(double sq, const StreamGroup& g) { return !(std::sqrt(sq) + g.mean_norm <= kMaxCoefficient); }

// Runs fn(item, worker) for item in [0, count) on up to `threads` threads, the caller's among
// them; items are independent, so which thread runs one never changes the result. The first
// exception stops the rest and is rethrown here.
template <typename Fn>
void parallel_for(int threads, size_t count, Fn&& fn) {
  if (threads <= 1 || count <= 1) {
    for (size_t i = 0; i < count; i++) fn(i, 0);
    return;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex m;
  std::exception_ptr err;
  auto work = [&](int w) {
    while (!stop.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1);
      if (i >= count) return;
      try {
        fn(i, w);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!err) err = std::current_exception();
        stop = true;
      }
    }
  };
  std::vector<std::thread> pool;
  const int n = int(std::min<size_t>(size_t(threads), count));
  for (int w = 1; w < n; w++) {
    try {
      pool.emplace_back(work, w);
    } catch (const std::system_error&) {
      break;  // no more threads to be had: the ones running (and this one) do the work
    }
  }
  work(0);
  for (std::thread& t : pool) t.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace

void gather_features(const Profile& pr, const StreamGroup& g, bool is_key, const std::vector<const void*>& layers,
                     DType dtype, const uint32_t* toks, const int32_t* pos, uint32_t n, float* X,
                     std::vector<float>& cs) {
  const bool rope = is_key && pr.rope.style != RopeStyle::None;
  const int half = pr.rope.dims / 2;
  if (rope) cs.resize(size_t(2) * half);
  for (uint32_t i = 0; i < n; i++) {
    if (rope) rope_angles(pr.rope, pos[i], cs.data(), cs.data() + half);
    gather_token(pr, g, rope, layers, dtype, toks[i], cs.data(), cs.data() + half, X + size_t(i) * g.p, true, false);
  }
}

std::vector<uint8_t> encode_cache(const Profile& pr, const CacheView& c, const EncodeOptions& opts) {
  if (c.keys.size() != pr.layers || c.values.size() != pr.layers)
    fail("E_LAYOUT", "cache has " + std::to_string(c.keys.size()) + " layers, profile expects " +
                         std::to_string(pr.layers));
  check_threads(opts.threads);
  const SimdPath path = gemm_path();
  const uint32_t n = c.tokens;
  BlobHeader h = make_header(pr, n, c.dtype, c.positions, sinks_of(pr, opts), window_of(pr, opts));
  // Every middle token is a candidate; the escape test runs inside the gather of each group,
  // and the rows of tokens that any group escapes are dropped before entropy coding.
  std::vector<uint32_t> cand;
  for (uint32_t t = h.sinks; t + h.window < n; t++) cand.push_back(t);
  const bool any_rope = pr.rope.style != RopeStyle::None;
  const Angles ang = make_angles(pr.rope, any_rope ? cand.size() : 0, [&](size_t i) { return position_of(c, cand[i]); });

  const size_t ng = pr.groups[0].size(), items = 2 * ng;
  std::vector<std::vector<uint8_t>> rows(items), bad(items);
  struct Scratch {
    std::vector<float> X, D;
  };
  const int threads = int(std::min<size_t>(size_t(opts.threads), std::max<size_t>(items, 1)));
  std::vector<Scratch> scratch(threads);
  parallel_for(threads, items, [&](size_t it, int w) {
    const int s = int(it / ng);
    const StreamGroup& g = pr.groups[s][it % ng];
    const std::vector<const void*>& layers = s == 0 ? c.keys : c.values;
    const bool rope = s == 0 && any_rope, features = g.k > 0;
    const RowLayout& rl = g.row;
    std::vector<float>& X = scratch[w].X;
    std::vector<float>& D = scratch[w].D;
    X.resize(size_t(kBatch) * g.p);
    D.resize(size_t(kBatch) * std::max<uint32_t>(g.k, 1));
    rows[it].resize(cand.size() * rl.rowBytes);
    bad[it].assign(cand.size(), 0);
    for (size_t b0 = 0; b0 < cand.size(); b0 += kBatch) {
      const uint32_t nb = uint32_t(std::min<size_t>(kBatch, cand.size() - b0));
      for (uint32_t i = 0; i < nb; i++) {
        float* x = X.data() + size_t(i) * g.p;
        const double sq = gather_token(pr, g, rope, layers, c.dtype, cand[b0 + i], rope ? ang.cos_at(b0 + i) : nullptr,
                                       rope ? ang.sin_at(b0 + i) : nullptr, x, features, true);
        if (escapes(sq, g)) {
          bad[it][b0 + i] = 1;
          // Its row is dropped later; zeros keep the GEMM and quantizer on finite values.
          if (features) std::fill(x, x + g.p, 0.0f);
        }
      }
      if (!features) continue;
      gemm_packed(path, int(nb), X.data(), int(g.p), g.encode_b, D.data(), int(g.k), nullptr, false);
      quantize_rows(rl, D.data(), nb, g.k, rows[it].data() + b0 * rl.rowBytes);
    }
  });

  std::vector<uint8_t> escaped(cand.size(), 0);
  for (const std::vector<uint8_t>& b : bad)
    for (size_t i = 0; i < cand.size(); i++) escaped[i] |= b[i];
  for (size_t i = 0; i < cand.size(); i++)
    if (escaped[i]) h.escapes.push_back(cand[i]);
  const size_t coded = cand.size() - h.escapes.size();

  std::vector<std::vector<uint8_t>> payloads(1 + items);
  std::vector<SectionInfo> infos(items);
  parallel_for(threads, items, [&](size_t it, int) {
    const int s = int(it / ng);
    const StreamGroup& g = pr.groups[s][it % ng];
    const RowLayout& rl = g.row;
    std::vector<uint8_t>& r = rows[it];
    if (!h.escapes.empty() && rl.rowBytes > 0) {  // drop escaped tokens' rows, keeping token order
      size_t o = 0;
      for (size_t i = 0; i < cand.size(); i++)
        if (!escaped[i]) {
          if (o != i) std::memcpy(r.data() + o * rl.rowBytes, r.data() + i * rl.rowBytes, rl.rowBytes);
          o++;
        }
    }
    r.resize(coded * rl.rowBytes);
    SectionInfo si{SectionMode::Stored, uint32_t(r.size()), uint32_t(r.size()), 0};
    if (opts.entropy && !r.empty()) {
      std::vector<uint8_t> enc = rans_encode_rows(r.data(), uint32_t(coded), rl.rowBytes, rans_chunk_rows(rl.rowBytes),
                                                  rl.context.data(), g.tables.data());
      if (rans_keeps(enc.size(), r.size())) {
        si.mode = SectionMode::RansChunks;
        si.stored_len = uint32_t(enc.size());
        r = std::move(enc);
      }
    }
    infos[it] = si;
    payloads[1 + it] = std::move(r);
  });

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
    h.sections.push_back({SectionMode::Stored, uint32_t(sec.size()), uint32_t(sec.size()), 0});
    payloads[0] = std::move(sec);
  }
  h.sections.insert(h.sections.end(), infos.begin(), infos.end());
  return seal_blob(h, payloads);
}

void decode_blob(const Profile& pr, const uint8_t* blob, const BlobHeader& h, void* keys, void* values,
                 int32_t* positions, int threads, OutputSlice out) {
  const size_t layer_bytes = size_t(out.tokens == 0 ? h.tokens : out.tokens) * row_bytes(pr, h.dtype);
  std::vector<uint8_t*> kl(pr.layers), vl(pr.layers);
  for (uint32_t l = 0; l < pr.layers; l++) {
    kl[l] = static_cast<uint8_t*>(keys) + size_t(l) * layer_bytes;
    vl[l] = static_cast<uint8_t*>(values) + size_t(l) * layer_bytes;
  }
  decode_blob_layers(pr, blob, h, kl, vl, positions, threads, out);
}

void decode_blob_layers(const Profile& pr, const uint8_t* blob, const BlobHeader& h,
                        const std::vector<uint8_t*>& key_layers, const std::vector<uint8_t*>& value_layers,
                        int32_t* positions, int threads, OutputSlice out) {
  check_threads(threads);
  if (key_layers.size() != pr.layers || value_layers.size() != pr.layers) fail("E_INTERNAL", "decode output layer count");
  if (out.tokens == 0) out.tokens = h.tokens;
  if (uint64_t(out.offset) + h.tokens > out.tokens) fail("E_INTERNAL", "decode output slice exceeds the output");
  const SimdPath path = gemm_path();
  const bool int8 = int8_decode_selected();
  check_blob(pr, h);
  const uint32_t n = h.tokens;
  positions += out.offset;
  for (uint32_t t = 0; t < n; t++) positions[t] = h.contiguous ? int32_t(int64_t(h.pos_start) + t) : h.positions[t];

  const size_t rb = row_bytes(pr, h.dtype);
  auto out_row = [&](int s, uint32_t layer, uint32_t t) -> uint8_t* {
    return (s == 0 ? key_layers : value_layers)[layer] + size_t(out.offset + t) * rb;
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
  const bool any_rope = pr.rope.style != RopeStyle::None;
  const Angles ang = make_angles(pr.rope, any_rope ? coded.size() : 0, [&](size_t i) { return positions[coded[i]]; });
  const uint32_t rv = pr.row_values();
  const size_t ng = pr.groups[0].size(), items = 2 * ng;
  struct Scratch {
    std::vector<uint8_t> rows, u8;
    std::vector<float> D, X;
  };
  threads = int(std::min<size_t>(size_t(threads), std::max<size_t>(items, 1)));
  std::vector<Scratch> scratch(threads);
  // Sections follow the groups, keys first; each group writes only its own layers.
  parallel_for(threads, items, [&](size_t it, int w) {
    const int s = int(it / ng);
    const StreamGroup& g = pr.groups[s][it % ng];
    const SectionInfo& sec = h.sections[1 + it];
    const RowLayout& rl = g.row;
    require_corrupt(size_t(sec.raw_len) == coded.size() * rl.rowBytes, "coded section size");
    Scratch& sc = scratch[w];
    const uint8_t* src = blob + sec.offset;
    if (entropy_coded(sec.mode)) {
      sc.rows.resize(sec.raw_len);
      if (sec.mode == SectionMode::Rans)
        rans_decode(src, sec.stored_len, sc.rows.data(), sc.rows.size(), rl.context.data(), rl.rowBytes, g.tables.data());
      else
        rans_decode_rows(src, sec.stored_len, sc.rows.data(), uint32_t(coded.size()), rl.rowBytes, rl.context.data(),
                         g.tables.data());
      src = sc.rows.data();
    }
    // Zeros: components inside k that the plan drops (a gap between its groups) are never written.
    sc.D.assign(size_t(kBatch) * std::max<uint32_t>(g.k, 1), 0.0f);
    sc.X.resize(size_t(kBatch) * g.p);
    const bool rope = s == 0 && any_rope;
    for (size_t b0 = 0; b0 < coded.size(); b0 += kBatch) {
      const uint32_t nb = uint32_t(std::min<size_t>(kBatch, coded.size() - b0));
      if (int8 && g.decode_i8.data) {
        decode_rows_int8(rl, g.decode_i8, g.mean.data(), src + b0 * rl.rowBytes, int(nb), sc.X.data(), int(g.p), sc.u8);
      } else {
        dequantize_rows(rl, src + b0 * rl.rowBytes, nb, sc.D.data(), g.k);
        // The mean is the GEMM's bias: added to each finished sum, as a separate pass would.
        gemm_packed(path, int(nb), sc.D.data(), int(g.k), g.decode_b, sc.X.data(), int(g.p), g.mean.data(), false);
      }
      for (uint32_t i = 0; i < nb; i++) {
        const uint32_t t = coded[b0 + i];
        float* x = sc.X.data() + size_t(i) * g.p;
        for (uint32_t l = 0; l < g.layer_count; l++) {
          float* seg = x + size_t(l) * rv;
          if (rope)
            rope_rotate_row_path(path, pr.rope, seg, int(pr.kv_heads), int(pr.head_dim), ang.cos_at(b0 + i),
                                 ang.sin_at(b0 + i), false);
          store_row(seg, h.dtype, int(rv), out_row(s, g.layer_start + l, t));
        }
      }
    }
  });
}

}  // namespace kvtc
