#include "calibrate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

#include "errors.h"
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

constexpr uint32_t kAddBatch = 128;

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
      if (a.p > set_.max_features)
        fail("E_OPTIONS", "a PCA group of " + std::to_string(a.layer_count) + " layers has " + std::to_string(a.p) +
                              " features, above the covariance limit of " + std::to_string(set_.max_features) +
                              "; use fewer layers per PCA group");
      a.sum.assign(a.p, 0.0);
      a.cov.assign(size_t(a.p) * a.p, 0.0);
      max_p = std::max(max_p, a.p);
      acc_[s].push_back(std::move(a));
    }
  // Keep the reservoir to ~16M floats per stream group whatever the shape.
  reservoir_rows_ = std::max<uint32_t>(64, std::min<uint32_t>(set_.sample_tokens, (16u << 20) / max_p));
  for (int s = 0; s < 2; s++)
    for (Accumulator& a : acc_[s]) a.sample.reserve(size_t(reservoir_rows_) * a.p);
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
  // Non-finite tokens would poison the covariance: calibration needs clean samples.
  std::vector<float> X;
  std::vector<double> XD, XT;
  std::vector<float> cs;
  std::vector<int32_t> pos(kAddBatch);
  for (int s = 0; s < 2; s++) {
    for (Accumulator& a : acc_[s]) {
      StreamGroup g;
      g.layer_start = a.layer_start;
      g.layer_count = a.layer_count;
      g.p = a.p;
      g.mean.assign(a.p, 0.0f);  // gather_features subtracts the mean; raw features here
      X.resize(size_t(kAddBatch) * a.p);
      XD.resize(size_t(kAddBatch) * a.p);
      XT.resize(size_t(kAddBatch) * a.p);
      for (size_t b0 = 0; b0 < toks.size(); b0 += kAddBatch) {
        const uint32_t nb = uint32_t(std::min<size_t>(kAddBatch, toks.size() - b0));
        for (uint32_t i = 0; i < nb; i++) pos[i] = c.positions ? c.positions[toks[b0 + i]] : int32_t(toks[b0 + i]);
        gather_features(base_, g, s == 0, s == 0 ? c.keys : c.values, c.dtype, &toks[b0], pos.data(), nb,
                               X.data(), cs);
        for (size_t i = 0; i < size_t(nb) * a.p; i++)
          if (!std::isfinite(X[i]))
            fail("E_LAYOUT", "calibration sample holds NaN or Inf (token " + std::to_string(toks[b0 + i / a.p]) + ")");
        for (uint32_t i = 0; i < nb; i++)
          for (uint32_t j = 0; j < a.p; j++) {
            const double v = X[size_t(i) * a.p + j];
            XD[size_t(i) * a.p + j] = v;
            XT[size_t(j) * nb + i] = v;
            a.sum[j] += v;
          }
        gemm_f64(int(a.p), int(a.p), int(nb), XT.data(), int(nb), XD.data(), int(a.p), a.cov.data(), int(a.p), true);
        for (uint32_t i = 0; i < nb; i++) {
          const int64_t sl = slot[b0 + i];
          if (sl < 0) continue;
          const float* row = X.data() + size_t(i) * a.p;
          if (size_t(sl) * a.p == a.sample.size())
            a.sample.insert(a.sample.end(), row, row + a.p);
          else
            std::copy(row, row + a.p, a.sample.begin() + size_t(sl) * a.p);
        }
      }
    }
  }
  seen_ += toks.size();
}

StreamGroup Calibrator::fit_group(const Accumulator& a, bool /*is_key*/) const {
  const uint32_t p = a.p;
  const double n = double(seen_);
  StreamGroup g;
  g.layer_start = a.layer_start;
  g.layer_count = a.layer_count;
  g.p = p;
  std::vector<double> mean(p), C(size_t(p) * p);
  for (uint32_t j = 0; j < p; j++) mean[j] = a.sum[j] / n;
  double mean_sq = 0;
  for (uint32_t j = 0; j < p; j++) mean_sq += mean[j] * mean[j];
  for (uint32_t i = 0; i < p; i++)
    for (uint32_t j = 0; j < p; j++) C[size_t(i) * p + j] = a.cov[size_t(i) * p + j] / n - mean[i] * mean[j];
  std::vector<double> evals, evecs;
  sym_eig_desc(int(p), C, evals, evecs);
  g.eigen.resize(p);
  g.total_energy = 0;
  for (uint32_t i = 0; i < p; i++) {
    g.eigen[i] = float(std::max(0.0, evals[i]));
    g.total_energy += g.eigen[i];
  }
  g.mean.assign(mean.begin(), mean.end());
  g.mean_square = g.total_energy + mean_sq;

  // Projections of the reservoir sample on the components the budget could possibly use
  // (every coded component costs at least 2 bits).
  const double budget = 16.0 * p / set_.ratio;
  const uint32_t kmax = std::min<uint32_t>(p, uint32_t(budget / 2));
  const uint32_t ns = uint32_t(a.sample.size() / p);
  std::vector<float> Xs(a.sample), Et(size_t(p) * std::max<uint32_t>(kmax, 1)), Ds(size_t(ns) * std::max<uint32_t>(kmax, 1));
  for (uint32_t t = 0; t < ns; t++)
    for (uint32_t j = 0; j < p; j++) Xs[size_t(t) * p + j] -= g.mean[j];
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
  RowLayout rl = make_row_layout(g.plan);
  std::vector<uint64_t> counts(size_t(rl.numContexts()) * 256, 0);
  std::vector<uint8_t> row(rl.rowBytes);
  for (uint32_t t = 0; t < ns && rl.rowBytes; t++) {
    quantize_row(rl, Ds.data() + size_t(t) * kmax, row.data());
    for (uint32_t b = 0; b < rl.rowBytes; b++) counts[size_t(rl.context[b]) * 256 + row[b]]++;
  }
  g.freqs.resize(counts.size());
  for (uint32_t c = 0; c < rl.numContexts(); c++) rans_normalize(&counts[size_t(c) * 256], &g.freqs[size_t(c) * 256]);
  return g;
}

std::vector<uint8_t> Calibrator::finish(const ProgressFn& progress, int threads) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) fail("E_CLOSED", "calibrator already finished");
  if (seen_ < 2)
    fail("E_CALIBRATION", "calibration needs at least 2 tokens beyond the sinks; got " + std::to_string(seen_));
  Profile pr = base_;
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
        pr.groups[s][i % ng] = fit_group(acc_[s][i % ng], s == 0);
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
