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

StreamGroup Calibrator::fit_group(const Accumulator& a, bool /*is_key*/) const {
  const uint32_t p = a.p;
  const double n = double(seen_);
  StreamGroup g;
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
  std::vector<float> Xs(a.sample);
  for (uint32_t t = 0; t < ns; t++)
    for (uint32_t j = 0; j < p; j++) Xs[size_t(t) * p + j] -= g.mean[j];

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
    const double te = thread_cpu_seconds();
    sym_eig_desc(int(p), C, evals, evecs);
    add_seconds(stage_.eigen, thread_cpu_seconds() - te);
  } else {
    // Xs = U S V^T: eigenvectors u of the Gram matrix Xs Xs^T give directions v = Xs^T u / s.
    if (ns < 2) fail("E_CALIBRATION", "too few sample tokens for a wide PCA group");
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
  const uint32_t directions = uint32_t(evecs.size() / p);

  // Projections of the reservoir sample on the components the budget could possibly use
  // (every coded component costs at least 2 bits).
  const double tp = thread_cpu_seconds();
  const double budget = 16.0 * p / set_.ratio;
  const uint32_t kmax = std::min<uint32_t>(directions, uint32_t(budget / 2));
  std::vector<float> Et(size_t(p) * std::max<uint32_t>(kmax, 1)), Ds(size_t(ns) * std::max<uint32_t>(kmax, 1));
  for (uint32_t c = 0; c < kmax; c++)
    for (uint32_t j = 0; j < p; j++) Et[size_t(j) * kmax + c] = float(evecs[size_t(c) * p + j]);
  if (kmax > 0) gemm_f32(int(ns), int(kmax), int(p), Xs.data(), int(p), Et.data(), int(kmax), Ds.data(), int(kmax), false);

  PlanRequest req;
  req.proj = Ds.data();
  req.n = int(ns);
  req.kmax = int(kmax);
  req.ld = int(kmax);
  req.budget_bits = budget;
  req.sizes = set_.sizes;
  req.widths = set_.widths;
  PlanResult plan = plan_bits(req);
  add_seconds(stage_.plan, thread_cpu_seconds() - tp);
  g.plan = plan.groups;
  g.k = 0;
  for (const PlanGroup& pg : g.plan) g.k = std::max(g.k, pg.start + pg.size);
  // Error of the sample: the plan's error on the kmax components plus the energy beyond them.
  double tail = 0;
  for (uint32_t c = kmax; c < p; c++) tail += g.eigen[c];
  g.predicted_err = (ns ? plan.error / ns : 0) + tail;
  g.basis.resize(size_t(g.k) * p);
  for (uint32_t c = 0; c < g.k; c++)
    for (uint32_t j = 0; j < p; j++) g.basis[size_t(c) * p + j] = float(evecs[size_t(c) * p + j]);

  // Entropy statistics: byte histograms of the sample's quantized rows, per row context.
  const double tt = thread_cpu_seconds();
  RowLayout rl = make_row_layout(g.plan);
  std::vector<uint64_t> counts(size_t(rl.numContexts()) * 256, 0);
  std::vector<uint8_t> row(rl.rowBytes);
  for (uint32_t t = 0; t < ns && rl.rowBytes; t++) {
    quantize_row(rl, Ds.data() + size_t(t) * kmax, row.data());
    for (uint32_t b = 0; b < rl.rowBytes; b++) counts[size_t(rl.context[b]) * 256 + row[b]]++;
  }
  g.freqs.resize(counts.size());
  for (uint32_t c = 0; c < rl.numContexts(); c++) rans_normalize(&counts[size_t(c) * 256], &g.freqs[size_t(c) * 256]);
  add_seconds(stage_.tables, thread_cpu_seconds() - tt);
  return g;
}

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
  const size_t ng = acc_[0].size();
  pr.groups[0].resize(ng);
  pr.groups[1].resize(ng);
  const size_t total = 2 * ng;
  std::atomic<size_t> next{0}, done{0};
  std::mutex err_mu, prog_mu;
  std::exception_ptr err;
  auto work = [&]() {
    for (size_t i; (i = next.fetch_add(1)) < total;) {
      try {
        const int s = int(i / ng);
        const double tf = thread_cpu_seconds();
        pr.groups[s][i % ng] = fit_group(acc_[s][i % ng], s == 0);
        add_seconds(stage_.fit, thread_cpu_seconds() - tf);
      } catch (...) {
        std::lock_guard<std::mutex> l(err_mu);
        if (!err) err = std::current_exception();
        next = total;
      }
      const size_t d = ++done;
      if (progress) {
        std::lock_guard<std::mutex> l(prog_mu);
        progress(double(d) / double(total), "fit");
      }
    }
  };
  const int nt = std::max(1, std::min<int>(threads, int(total)));
  std::vector<std::thread> pool;
  for (int t = 1; t < nt; t++) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (err) std::rethrow_exception(err);
  finished_ = true;
  acc_[0].clear();
  acc_[1].clear();
  return serialize_profile(pr);
}

}  // namespace kvtc
