#include "calibrate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <time.h>

#include "errors.h"
#include "eigen.h"
#include "linalg.h"
#include "bitplan.h"

namespace kvtc {
namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// CPU seconds of the calling thread: stage timings that other processes' load does not inflate.
double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

void add_seconds(std::atomic<double>& total, double dt) {
  double cur = total.load();
  while (!total.compare_exchange_weak(cur, cur + dt)) {
  }
}

constexpr uint32_t kAddBatch = 128;
constexpr uint32_t kMaxGramTokens = 1024;
constexpr uint32_t kCovBlock = 64;  // rows per GEMM of the upper-triangle covariance update

}  // namespace

Calibrator::Calibrator(const Profile& layout, const CalibrateSettings& settings)
    : base_(layout), set_(settings), rng_state_(settings.seed ^ 0x6b767463ull) {
  if (!(set_.ratio > 1)) fail("E_OPTIONS", "ratio must be > 1");
  const uint32_t gl = std::max<uint32_t>(1, std::min(set_.group_layers, base_.layers));
  set_.group_layers = gl;
  uint32_t max_p = 0;
  for (int s = 0; s < 2; s++)
    for (uint32_t l0 = 0; l0 < base_.layers; l0 += gl) {
      Accumulator a;
      a.layer_start = l0;
      a.layer_count = std::min(gl, base_.layers - l0);
      a.p = a.layer_count * base_.row_values();
      // Wide groups skip the p x p covariance (O(p^2) memory, O(p^3) eigensolver) and take the
      // exact PCA of the reservoir sample through its Gram matrix instead.
      a.gram = a.p > set_.max_features;
      a.sum.assign(a.p, 0.0);
      if (!a.gram) a.cov.assign(size_t(a.p) * a.p, 0.0);
      max_p = std::max(max_p, a.p);
      acc_[s].push_back(std::move(a));
    }
  // Keep the reservoir to ~16M floats per stream group whatever the shape.
  reservoir_rows_ = std::max<uint32_t>(64, std::min<uint32_t>(set_.sample_tokens, (16u << 20) / max_p));
  // The Gram path's eigensolver is cubic in the sample size.
  if (max_p > set_.max_features) reservoir_rows_ = std::min(reservoir_rows_, kMaxGramTokens);
  for (int s = 0; s < 2; s++)
    for (Accumulator& a : acc_[s]) a.sample.reserve(size_t(reservoir_rows_) * a.p);
}

// Moments of one stream group over one batch stream: sum and upper-triangle covariance of
// (x - shift), and the reservoir rows.
void Calibrator::add_group(Accumulator& a, bool is_key, const CacheView& c, const std::vector<uint32_t>& toks,
                           const std::vector<int64_t>& slot, AddScratch& sc) const {
  StreamGroup g;
  g.layer_start = a.layer_start;
  g.layer_count = a.layer_count;
  g.p = a.p;
  g.mean.assign(a.p, 0.0f);  // gather_features subtracts the mean; raw features here
  std::vector<float>& X = sc.X;
  std::vector<float>& XC = sc.XC;
  std::vector<float>& XCT = sc.XCT;
  std::vector<float>& Cb = sc.Cb;
  std::vector<int32_t>& pos = sc.pos;
  pos.resize(kAddBatch);
  X.resize(size_t(kAddBatch) * a.p);
  if (!a.gram) {
    XC.resize(size_t(kAddBatch) * a.p);
    XCT.resize(size_t(kAddBatch) * a.p);
    Cb.resize(size_t(a.p) * a.p);
  }
  const uint32_t p = a.p;
  for (size_t b0 = 0; b0 < toks.size(); b0 += kAddBatch) {
    const uint32_t nb = uint32_t(std::min<size_t>(kAddBatch, toks.size() - b0));
    for (uint32_t i = 0; i < nb; i++) pos[i] = c.positions ? c.positions[toks[b0 + i]] : int32_t(toks[b0 + i]);
    gather_features(base_, g, is_key, is_key ? c.keys : c.values, c.dtype, &toks[b0], pos.data(), nb, X.data(),
                    sc.cs);
    // Non-finite tokens would poison the covariance: calibration needs clean samples.
    for (size_t i = 0; i < size_t(nb) * p; i++)
      if (!std::isfinite(X[i]))
        fail("E_LAYOUT", "calibration sample holds NaN or Inf (token " + std::to_string(toks[b0 + i / p]) + ")");
    // Moments are taken around a fixed shift (the first batch's mean): products of centred
    // values are small, so float GEMMs per batch lose nothing that matters, and the f64
    // running sums avoid the cancellation of E[xx^T] - mu mu^T.
    if (a.shift.empty()) {
      a.shift.assign(p, 0.0f);
      for (uint32_t i = 0; i < nb; i++)
        for (uint32_t j = 0; j < p; j++) a.shift[j] += X[size_t(i) * p + j] / float(nb);
    }
    for (uint32_t i = 0; i < nb; i++)
      for (uint32_t j = 0; j < p; j++) {
        const float v = X[size_t(i) * p + j] - a.shift[j];
        a.sum[j] += v;
        if (a.gram) continue;
        XC[size_t(i) * p + j] = v;
        XCT[size_t(j) * nb + i] = v;
      }
    if (!a.gram) {
      // The covariance is symmetric: only blocks on or right of the diagonal are computed (half
      // the products), and only the upper triangle is accumulated; fit_group mirrors it.
      for (uint32_t i0 = 0; i0 < p; i0 += kCovBlock) {
        const uint32_t mb = std::min(kCovBlock, p - i0);
        gemm_f32(int(mb), int(p - i0), int(nb), XCT.data() + size_t(i0) * nb, int(nb), XC.data() + i0, int(p),
                 Cb.data() + size_t(i0) * p + i0, int(p), false);
      }
      for (uint32_t i = 0; i < p; i++) {
        double* crow = a.cov.data() + size_t(i) * p;
        const float* brow = Cb.data() + size_t(i) * p;
        for (uint32_t j = i; j < p; j++) crow[j] += brow[j];
      }
    }
    for (uint32_t i = 0; i < nb; i++) {
      const int64_t sl = slot[b0 + i];
      if (sl < 0) continue;
      const float* row = X.data() + size_t(i) * p;
      if (size_t(sl) * p == a.sample.size())
        a.sample.insert(a.sample.end(), row, row + p);
      else
        std::copy(row, row + p, a.sample.begin() + size_t(sl) * p);
    }
  }
}

void Calibrator::add(const CacheView& c) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) fail("E_CLOSED", "calibrator already finished");
  if (c.keys.size() != base_.layers || c.values.size() != base_.layers)
    fail("E_LAYOUT", "sample has " + std::to_string(c.keys.size()) + " layers, calibration expects " +
                         std::to_string(base_.layers));
  // Sinks are attention sinks with outlier statistics; they are stored raw, so leave them out.
  std::vector<uint32_t> toks;
  for (uint32_t t = std::min(set_.sinks, c.tokens); t < c.tokens; t++) {
    if (set_.max_tokens && seen_ + toks.size() >= set_.max_tokens) break;
    toks.push_back(t);
  }
  sample_tokens_ += c.tokens;
  samples_++;
  if (toks.empty()) return;
  // Reservoir decisions are made once per token so every stream group samples the same tokens.
  std::vector<int64_t> slot(toks.size(), -1);
  for (size_t i = 0; i < toks.size(); i++) {
    const uint64_t idx = seen_ + i;
    if (idx < reservoir_rows_) {
      slot[i] = int64_t(idx);
    } else {
      const uint64_t j = splitmix64(rng_state_) % (idx + 1);
      if (j < reservoir_rows_) slot[i] = int64_t(j);
    }
  }
  // Stream groups are independent: spread them over the threads. Each group's arithmetic is the
  // same whichever thread runs it, so the profile does not depend on the thread count.
  std::vector<Accumulator*> work;
  std::vector<bool> is_key;
  for (int s = 0; s < 2; s++)
    for (Accumulator& a : acc_[s]) {
      work.push_back(&a);
      is_key.push_back(s == 0);
    }
  std::atomic<size_t> next{0};
  std::atomic<double> cpu{0.0};
  std::mutex err_mu;
  std::exception_ptr err;
  auto run = [&]() {
    const double start = thread_cpu_seconds();
    AddScratch scratch;
    for (size_t i; (i = next.fetch_add(1)) < work.size();) {
      try {
        add_group(*work[i], is_key[i], c, toks, slot, scratch);
      } catch (...) {
        std::lock_guard<std::mutex> l(err_mu);
        if (!err) err = std::current_exception();
        next = work.size();
      }
    }
    add_seconds(cpu, thread_cpu_seconds() - start);
  };
  const int nt = std::max(1, std::min<int>(int(set_.threads), int(work.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; t++) pool.emplace_back(run);
  run();
  for (auto& t : pool) t.join();
  add_seconds(stage_.add, cpu.load());
  if (err) std::rethrow_exception(err);
  seen_ += toks.size();
}

AttentionWeights attention_weights(double key_energy, double value_energy, double value_mean_square,
                                   uint32_t heads, uint32_t head_dim) {
  AttentionWeights w;
  const double h = std::max<uint32_t>(heads, 1);
  (void)head_dim;  // it cancels: d from the 1/√d of the logits against d in the query scale
  const double vark = key_energy / h, varv = value_energy / h, msv = value_mean_square / h;
  // A stream of zeros has nothing to lose: weight 1 keeps the allocation well defined.
  if (!(msv > 0) || !(vark > 0)) return w;
  w.value = 1.0 / msv;
  w.key = kLogitVariance * varv / (msv * vark);
  if (!(w.key > 0) || !std::isfinite(w.key)) w.key = w.value;
  return w;
}

// One stream group between its PCA and its plan.
struct Calibrator::Fit {
  StreamGroup g;             // mean, eigenvalues, energies (no plan, basis or tables yet)
  std::vector<float> dirs;   // kdirs x p principal directions as floats, row c = component c
  uint32_t kdirs = 0;        // directions available (rank)
  uint32_t ns = 0;           // sample rows
  uint32_t kmax = 0;         // components the plan may use
  double tail = 0;           // energy beyond kmax (per token)
  PlanTable table;
  std::vector<double> curve;  // Global: least error within u units, u = 0..cap
  // Keys with a covariance: per direction c, Σ_h u_chᵀ M_h u_ch over the heads h (M_h: the
  // head's key second moment, the stand-in for its queries'); empty otherwise.
  std::vector<double> head_moment;
};

void Calibrator::fit_pca(const Accumulator& a, Fit& f, bool is_key) const {
  const uint32_t p = a.p;
  const double n = double(seen_);
  StreamGroup& g = f.g;
  g.layer_start = a.layer_start;
  g.layer_count = a.layer_count;
  g.p = p;
  std::vector<double> mean(p);
  std::vector<double> dmean(p);  // mean minus the accumulation shift
  for (uint32_t j = 0; j < p; j++) {
    dmean[j] = a.sum[j] / n;
    mean[j] = double(a.shift[j]) + dmean[j];
  }
  double mean_sq = 0;
  for (uint32_t j = 0; j < p; j++) mean_sq += mean[j] * mean[j];
  g.mean.assign(mean.begin(), mean.end());
  const uint32_t ns = uint32_t(a.sample.size() / p);
  f.ns = ns;

  // evecs: row c = principal direction c (p values); evals: variance along it.
  std::vector<double> evals, evecs;
  if (!a.gram) {
    std::vector<double> C(size_t(p) * p);
    // a.cov holds the upper triangle (see add_group).
    for (uint32_t i = 0; i < p; i++)
      for (uint32_t j = i; j < p; j++) {
        const double v = a.cov[size_t(i) * p + j] / n - dmean[i] * dmean[j];
        C[size_t(i) * p + j] = v;
        C[size_t(j) * p + i] = v;
      }
    // Per-head diagonal blocks of the keys' second moment, before the eigensolver takes C.
    const uint32_t d = base_.head_dim, heads = p / d;
    std::vector<double> blocks;
    if (is_key) {
      blocks.resize(size_t(heads) * d * d);
      for (uint32_t h = 0; h < heads; h++)
        for (uint32_t x = 0; x < d; x++)
          for (uint32_t y = 0; y < d; y++) {
            const uint32_t i = h * d + x, j = h * d + y;
            blocks[(size_t(h) * d + x) * d + y] = C[size_t(i) * p + j];
          }
    }
    const double te = thread_cpu_seconds();
    sym_eig_desc(int(p), C, evals, evecs);
    add_seconds(stage_.eigen, thread_cpu_seconds() - te);
    if (is_key) {
      const uint32_t dirs = uint32_t(evecs.size() / p);
      f.head_moment.assign(dirs, 0.0);
      for (uint32_t c = 0; c < dirs; c++) {
        const double* u = evecs.data() + size_t(c) * p;
        double m = 0;
        for (uint32_t h = 0; h < heads; h++) {
          const double* B = blocks.data() + size_t(h) * d * d;
          const double* uh = u + size_t(h) * d;
          double q = 0, tr2 = 0;
          for (uint32_t x = 0; x < d; x++) {
            double row = 0;
            for (uint32_t y = 0; y < d; y++) {
              row += B[size_t(x) * d + y] * uh[y];
              tr2 += B[size_t(x) * d + y] * B[size_t(x) * d + y];
            }
            q += uh[x] * row;
          }
          // Queries like the head's keys, scaled to the logit variance s²: M_h = α_h Σ_h with
          // α_h = s²·d / tr(Σ_h²) (see attention_weights; s² is applied in the stream weight).
          if (tr2 > 0) m += q * double(d) / tr2;
        }
        f.head_moment[c] = std::max(0.0, m);
      }
    }
  } else {
    // Xs = U S V^T: eigenvectors u of the Gram matrix Xs Xs^T give directions v = Xs^T u / s.
    if (ns < 2) fail("E_CALIBRATION", "too few sample tokens for a wide PCA group");
    std::vector<float> Xs(a.sample);
    for (uint32_t t = 0; t < ns; t++)
      for (uint32_t j = 0; j < p; j++) Xs[size_t(t) * p + j] -= g.mean[j];
    const double tg = thread_cpu_seconds();
    std::vector<float> XsT(size_t(p) * ns), Gf(size_t(ns) * ns);
    for (uint32_t t = 0; t < ns; t++)
      for (uint32_t j = 0; j < p; j++) XsT[size_t(j) * ns + t] = Xs[size_t(t) * p + j];
    gemm_f32(int(ns), int(ns), int(p), Xs.data(), int(p), XsT.data(), int(ns), Gf.data(), int(ns), false);
    std::vector<double> G(Gf.begin(), Gf.end()), gvals, gvecs;
    const double te = thread_cpu_seconds();
    sym_eig_desc(int(ns), G, gvals, gvecs);
    const double te2 = thread_cpu_seconds();
    add_seconds(stage_.eigen, te2 - te);
    const uint32_t rank = std::min<uint32_t>(ns, p);
    evals.assign(p, 0.0);
    evecs.assign(size_t(rank) * p, 0.0);
    std::vector<float> U(size_t(ns) * rank), V(size_t(rank) * p);
    for (uint32_t c = 0; c < rank; c++)
      for (uint32_t t = 0; t < ns; t++) U[size_t(c) * ns + t] = float(gvecs[size_t(c) * ns + t]);
    // V = U^T Xs (rank x p), then normalize each row.
    gemm_f32(int(rank), int(p), int(ns), U.data(), int(ns), Xs.data(), int(p), V.data(), int(p), false);
    for (uint32_t c = 0; c < rank; c++) {
      evals[c] = std::max(0.0, gvals[c]) / ns;
      double norm = 0;
      for (uint32_t j = 0; j < p; j++) norm += double(V[size_t(c) * p + j]) * V[size_t(c) * p + j];
      norm = std::sqrt(norm);
      if (norm <= 0) continue;  // a null direction stays zero and gets no bits (zero energy)
      for (uint32_t j = 0; j < p; j++) evecs[size_t(c) * p + j] = V[size_t(c) * p + j] / norm;
    }
    add_seconds(stage_.gram, (thread_cpu_seconds() - tg) - (te2 - te));
  }
  g.eigen.resize(p);
  g.total_energy = 0;
  for (uint32_t i = 0; i < p; i++) {
    g.eigen[i] = float(std::max(0.0, evals[i]));
    g.total_energy += g.eigen[i];
  }
  g.mean_square = g.total_energy + mean_sq;
  f.kdirs = uint32_t(evecs.size() / p);
  f.dirs.resize(size_t(f.kdirs) * p);
  for (size_t i = 0; i < f.dirs.size(); i++) f.dirs[i] = float(evecs[i]);
}

namespace {
// Centered sample rows (ns x p) and their projections on the first k directions (ns x k).
void project_sample(const std::vector<float>& sample, const StreamGroup& g, const std::vector<float>& dirs,
                    uint32_t k, std::vector<float>& Ds) {
  const uint32_t p = g.p, ns = uint32_t(sample.size() / p);
  std::vector<float> Xs(sample);
  for (uint32_t t = 0; t < ns; t++)
    for (uint32_t j = 0; j < p; j++) Xs[size_t(t) * p + j] -= g.mean[j];
  std::vector<float> Et(size_t(p) * std::max<uint32_t>(k, 1));
  Ds.assign(size_t(ns) * std::max<uint32_t>(k, 1), 0.0f);
  for (uint32_t c = 0; c < k; c++)
    for (uint32_t j = 0; j < p; j++) Et[size_t(j) * k + c] = dirs[size_t(c) * p + j];
  if (k > 0 && ns > 0) gemm_f32(int(ns), int(k), int(p), Xs.data(), int(p), Et.data(), int(k), Ds.data(), int(k), false);
}
}  // namespace

// The plan's table of candidates on the sample's projections onto the first kmax components.
void Calibrator::plan_table_for(const Accumulator& a, Fit& f, uint32_t kmax_limit, PlanCost cost,
                                const std::vector<double>* weight) const {
  const double tp = thread_cpu_seconds();
  f.kmax = std::min(f.kdirs, kmax_limit);
  std::vector<float> Ds;
  project_sample(a.sample, f.g, f.dirs, f.kmax, Ds);
  PlanRequest req;
  req.proj = Ds.data();
  req.n = int(f.ns);
  req.kmax = int(f.kmax);
  req.ld = int(f.kmax);
  req.sizes = set_.sizes;
  req.widths = set_.widths;
  req.cost = cost;
  req.static_groups = cost == PlanCost::Entropy;  // the whole-cache plan: both quantizers
  if (weight && !weight->empty()) req.weight = weight->data();
  f.table = plan_table(req);
  f.tail = 0;
  for (uint32_t c = f.kmax; c < f.g.p; c++) f.tail += f.g.eigen[c];
  add_seconds(stage_.plan, thread_cpu_seconds() - tp);
}

StreamGroup Calibrator::finish_group(const Accumulator& a, Fit& f, const PlanResult& plan) const {
  StreamGroup g = std::move(f.g);
  const uint32_t p = g.p;
  g.plan = plan.groups;
  g.planned_bits = plan.cost_bits;
  g.k = 0;
  for (const PlanGroup& pg : g.plan) g.k = std::max(g.k, pg.start + pg.size);
  g.basis.assign(f.dirs.begin(), f.dirs.begin() + size_t(g.k) * p);

  // Entropy statistics: byte histograms of the sample's quantized rows, per row context.
  const double tt = thread_cpu_seconds();
  std::vector<float> Ds;
  project_sample(a.sample, g, f.dirs, g.k, Ds);
  for (PlanGroup& pg : g.plan) fit_static_levels(Ds.data() + pg.start, g.k, int(f.ns), pg);
  RowLayout rl = make_row_layout(g.plan);
  std::vector<uint64_t> counts(size_t(rl.numContexts()) * 256, 0);
  std::vector<uint8_t> row(rl.rowBytes);
  std::vector<float> rec(std::max<uint32_t>(g.k, 1));
  double err = 0;
  for (uint32_t t = 0; t < f.ns && rl.rowBytes; t++) {
    const float* d = Ds.data() + size_t(t) * g.k;
    quantize_row(rl, d, row.data());
    for (uint32_t b = 0; b < rl.rowBytes; b++) counts[size_t(rl.context[b]) * 256 + row[b]]++;
    dequantize_row(rl, row.data(), rec.data());
    for (uint32_t c = 0; c < g.k; c++) err += (double(d[c]) - rec[c]) * (double(d[c]) - rec[c]);
  }
  // Error of the sample (unweighted): the coded components' on the codec's reconstruction, and
  // the variance of every component beyond them.
  double dropped = 0;
  for (uint32_t c = g.k; c < p; c++) dropped += g.eigen[c];
  g.predicted_err = (f.ns ? err / f.ns : 0) + dropped;
  g.freqs.resize(counts.size());
  for (uint32_t c = 0; c < rl.numContexts(); c++) rans_normalize(&counts[size_t(c) * 256], &g.freqs[size_t(c) * 256]);
  add_seconds(stage_.tables, thread_cpu_seconds() - tt);
  f.dirs.clear();
  f.table = PlanTable();
  return g;
}

namespace {
// Runs fn(i) for i in [0, count) on up to `threads` threads; the first exception is rethrown.
// progress (optional) is told done/count after each item, under a lock.
template <typename Fn>
void run_items(size_t count, int threads, Fn&& fn, const std::function<void(size_t)>& progress) {
  std::atomic<size_t> next{0}, done{0};
  std::mutex err_mu, prog_mu;
  std::exception_ptr err;
  auto work = [&]() {
    for (size_t i; (i = next.fetch_add(1)) < count;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> l(err_mu);
        if (!err) err = std::current_exception();
        next = count;
      }
      const size_t d = ++done;
      if (progress) {
        std::lock_guard<std::mutex> l(prog_mu);
        progress(d);
      }
    }
  };
  const int nt = std::max(1, std::min<int>(threads, int(count)));
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; t++) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (err) std::rethrow_exception(err);
}
}  // namespace

std::vector<uint8_t> Calibrator::finish(const ProgressFn& progress, int threads) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) fail("E_CLOSED", "calibrator already finished");
  if (seen_ < 2)
    fail("E_CALIBRATION", "calibration needs at least 2 tokens beyond the sinks; got " + std::to_string(seen_));
  Profile pr = base_;
  pr.backend_cache = std::make_shared<BackendCache>();  // a new profile: nothing derived yet
  pr.sinks = set_.sinks;
  pr.window = set_.window;
  pr.group_layers = set_.group_layers;
  pr.ratio = set_.ratio;
  pr.seed = set_.seed;
  pr.calib_tokens = seen_;
  pr.allocation = set_.allocation;
  pr.weighting = set_.allocation == Allocation::Global ? set_.weighting : Weighting::Mse;
  const size_t ng = acc_[0].size();
  pr.groups[0].resize(ng);
  pr.groups[1].resize(ng);
  const size_t total = 2 * ng;
  auto acc_of = [&](size_t i) -> const Accumulator& { return acc_[i / ng][i % ng]; };
  // Progress: the PCA and tables of each group, half of the work each.
  const std::function<void(size_t)> prog1 = progress ? std::function<void(size_t)>([&](size_t d) {
    progress(0.5 * double(d) / double(total), "fit");
  }) : nullptr;
  const std::function<void(size_t)> prog2 = progress ? std::function<void(size_t)>([&](size_t d) {
    progress(0.5 + 0.5 * double(d) / double(total), "fit");
  }) : nullptr;
  int min_width = 8;
  for (int w : set_.widths) min_width = std::max(1, std::min(min_width, w));

  // The whole blob of a cache of L tokens: raw sinks and window, header, chunk tables, and the
  // coded rows of the rest. The coded tokens get what the target leaves.
  const uint32_t L = set_.target_tokens
                         ? set_.target_tokens
                         : uint32_t(samples_ ? (sample_tokens_ + samples_ / 2) / samples_ : 0);
  const uint32_t raw_t = std::min(set_.sinks, L) + std::min(set_.window, L - std::min(set_.sinks, L));
  const uint32_t C = L - raw_t;
  double P = 0;
  for (size_t i = 0; i < total; i++) P += acc_of(i).p;
  auto fixed_bits = [&](const std::vector<double>& row_bytes) {
    BlobHeader h = make_header(pr, L, base_.dtype, nullptr, pr.sinks, pr.window);
    h.sections.resize(1 + total);
    std::vector<uint8_t> hdr;
    write_blob_header(h, hdr);
    double bits = 8.0 * (double(hdr.size()) + 4);  // + CRC
    bits += double(raw_t) * P * 8 * dtype_bytes(base_.dtype);
    for (double rb : row_bytes) {  // chunk table and rANS states of each coded section
      const double chunks = std::max(1.0, std::ceil(double(C) * rb / kRansChunkTargetBytes));
      bits += 8.0 * (8 + chunks * (4 + kRansStateBytes));
    }
    return bits;
  };
  const double target_bits = double(L) * P * 16 / set_.ratio;
  auto expected_ratio = [&](const std::vector<double>& planned) {
    std::vector<double> rb;
    double coded = 0;
    for (double b : planned) {
      rb.push_back(b / 8);
      coded += b;
    }
    const double blob = fixed_bits(rb) + double(C) * coded;
    return blob > 0 ? double(L) * P * 16 / blob : 0.0;
  };

  std::vector<Fit> fits(total);
  std::vector<PlanResult> plans(total);
  bool global = set_.allocation == Allocation::Global;
  double budget = 0;  // Global: bits per coded token over all stream groups
  if (global) {
    std::vector<double> share(total);
    for (size_t i = 0; i < total; i++) share[i] = target_bits / std::max<double>(L, 1) * acc_of(i).p / P / 8;
    budget = C > 0 ? (target_bits - fixed_bits(share)) / C : 0;
    // Raw tokens alone over the target: no whole-blob plan exists; the coded tokens get the
    // per-stream budgets instead (expected_ratio says what the blob will be).
    if (!(budget >= 8.0 * total)) global = false;
  }
  if (global) {
    // Each group may take up to 4x its share (never less than 64 bits, never more than ~10 bits
    // a value); the unit is 1/4 bit, coarsened while the DP or the allocation would be too large.
    std::vector<double> cap_bits(total);
    double cap_sum = 0;
    for (size_t i = 0; i < total; i++) {
      const double p = acc_of(i).p;
      cap_bits[i] = std::min(budget, std::min(std::max(4 * budget * p / P, 64.0), 10 * p + 64));
      cap_sum += cap_bits[i];
    }
    double unit = 0.25;
    for (;;) {
      double cells = 0;
      for (size_t i = 0; i < total; i++) {
        const double k = std::min<double>(acc_of(i).p, 2 * cap_bits[i]);
        cells = std::max(cells, (k + 1) * (cap_bits[i] / unit + 1));
      }
      if (cells <= 4e6 && (budget / unit + 1) * (cap_sum / unit + total) <= 3e8) break;
      unit *= 2;
    }
    // The PCA of every group first: the weights of a layer group's keys need its values' moments.
    run_items(total, threads, [&](size_t i) {
      const double tf = thread_cpu_seconds();
      // No per-component key weights (see attention_weights: queries modelled as isotropic).
      fit_pca(acc_of(i), fits[i], false);
      add_seconds(stage_.fit, thread_cpu_seconds() - tf);
    }, nullptr);
    sym_eig_release_scratch();  // the helper threads' went with them; this thread's too
    // Distortion weights per layer group (keys and values of group j cover the same layers).
    std::vector<double> weights(total, 1.0);
    if (pr.weighting == Weighting::Attention)
      for (size_t j = 0; j < ng; j++) {
        const StreamGroup& k = fits[j].g;
        const StreamGroup& v = fits[ng + j].g;
        const uint32_t heads = k.layer_count * base_.kv_heads;
        const AttentionWeights w = attention_weights(k.total_energy, v.total_energy, v.mean_square, heads, base_.head_dim);
        weights[j] = w.key;
        weights[ng + j] = w.value;
      }
    run_items(total, threads, [&](size_t i) {
      const double tf = thread_cpu_seconds();
      plan_table_for(acc_of(i), fits[i], uint32_t(std::min<double>(acc_of(i).p, 2 * cap_bits[i])), PlanCost::Entropy,
                     nullptr);
      const double tp = thread_cpu_seconds();
      plan_from_table(fits[i].table, unit, int(std::floor(cap_bits[i] / unit)), &fits[i].curve);
      add_seconds(stage_.plan, thread_cpu_seconds() - tp);
      add_seconds(stage_.fit, thread_cpu_seconds() - tf);
    }, prog1);
    std::vector<std::vector<double>> curves(total);
    for (size_t i = 0; i < total; i++) curves[i] = std::move(fits[i].curve);
    const double ta = thread_cpu_seconds();
    const BudgetSplit alloc = allocate_units(curves, weights, int(std::floor(budget / unit)));
    add_seconds(stage_.plan, thread_cpu_seconds() - ta);
    run_items(total, threads, [&](size_t i) {
      const double tf = thread_cpu_seconds();
      const double tp = thread_cpu_seconds();
      plans[i] = plan_from_table(fits[i].table, unit, alloc.units[i], nullptr);
      add_seconds(stage_.plan, thread_cpu_seconds() - tp);
      StreamGroup g = finish_group(acc_of(i), fits[i], plans[i]);
      g.weight = weights[i];
      pr.groups[i / ng][i % ng] = std::move(g);
      add_seconds(stage_.fit, thread_cpu_seconds() - tf);
    }, prog2);
    pr.target_tokens = L;
  } else {
    // The per-stream plan: each group's budget is 16·p/ratio bits per coded token, packed costs.
    pr.allocation = Allocation::Stream;
    pr.weighting = Weighting::Mse;
    run_items(total, threads, [&](size_t i) {
      const double tf = thread_cpu_seconds();
      const Accumulator& a = acc_of(i);
      fit_pca(a, fits[i], false);
      const double b = 16.0 * a.p / set_.ratio;
      plan_table_for(a, fits[i], uint32_t(b / min_width), PlanCost::Packed, nullptr);
      const double tp = thread_cpu_seconds();
      const double unit = plan_unit_bits(int(fits[i].kmax), b);
      plans[i] = plan_from_table(fits[i].table, unit, int(std::floor(b / unit)), nullptr);
      add_seconds(stage_.plan, thread_cpu_seconds() - tp);
      pr.groups[i / ng][i % ng] = finish_group(a, fits[i], plans[i]);
      add_seconds(stage_.fit, thread_cpu_seconds() - tf);
    }, progress ? std::function<void(size_t)>([&](size_t d) { progress(double(d) / double(total), "fit"); })
                : std::function<void(size_t)>());
    sym_eig_release_scratch();
    pr.target_tokens = set_.allocation == Allocation::Global ? L : 0;
  }
  std::vector<double> planned;
  for (int s = 0; s < 2; s++)
    for (const StreamGroup& g : pr.groups[s]) planned.push_back(g.planned_bits);
  pr.expected_ratio = L > 0 ? expected_ratio(planned) : 0;
  finished_ = true;
  acc_[0].clear();
  acc_[1].clear();
  return serialize_profile(pr);
}

}  // namespace kvtc
