#include "bitplan.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "rans.h"

namespace kvtc {
namespace {

// Bits the rANS coder spends on the symbols counted in one context (256 counts), coded with the
// normalized table of their own histogram.
double context_bits(const uint64_t* counts) {
  uint16_t freq[256];
  rans_normalize(counts, freq);
  double bits = 0;
  for (int s = 0; s < 256; s++)
    if (counts[s]) bits += double(counts[s]) * (double(kRansProbBits) - std::log2(double(freq[s])));
  return bits;
}

// Bits per token the rANS coder spends on rows of one group: each of its contexts (shift and
// scale bytes, code bytes) coded with the normalized table of its own histogram.
double entropy_cost_bits(const uint8_t* rows, int n, const RowLayout& rl) {
  std::vector<uint64_t> counts(size_t(rl.numContexts()) * 256, 0);
  for (int t = 0; t < n; t++) {
    const uint8_t* r = rows + size_t(t) * rl.rowBytes;
    for (uint32_t b = 0; b < rl.rowBytes; b++) counts[size_t(rl.context[b]) * 256 + r[b]]++;
  }
  double bits = 0;
  for (uint32_t c = 0; c < rl.numContexts(); c++) {
    const uint64_t* cc = &counts[size_t(c) * 256];
    bool any = false;
    for (int s = 0; s < 256 && !any; s++) any = cc[s] != 0;
    if (any) bits += context_bits(cc);
  }
  return n > 0 ? bits / n : 0;
}

// One static candidate on the sample in a single pass: codes as quantize_group_static makes
// them, the (weighted) squared error of the decoder's reconstruction of them summed, and the
// packed code bytes counted (a static group's row is its code bytes, one context). A group of
// at most kMaxLevelBits decodes to its bins' levels (component_levels); its error comes from each
// bin's count, sum and sum of squares: Σ (x − L)² = Σx² − 2·L·Σx + L²·n. The sample is finite
// (calibration rejects NaN and Inf).
struct StaticEval {
  double err = 0;
  uint64_t counts[kContextsPerGroup][256] = {};  // by code_context
};
void eval_static(const float* proj, size_t ld, int n, uint32_t size, uint32_t bits, float shift, float scale,
                 const double* weight, StaticEval& ev) {
  const float inv = 1.0f / scale;
  const float maxq = float((1u << bits) - 1);
  const uint32_t nb = packed_bytes(size, bits);
  const bool leveled = bits <= kMaxLevelBits;
  std::vector<uint8_t> row(nb);
  std::vector<uint32_t> codes(size);
  std::vector<double> w(size, 1.0);
  if (weight) std::copy(weight, weight + size, w.begin());
  // Leveled groups: per (component, code) the count and sum, per component the sum of squares.
  std::vector<double> bin_n(leveled ? size_t(size) << bits : 0), bin_s(bin_n.size()), sq(leveled ? size : 0);
  for (int r = 0; r < n; r++) {
    const float* x = proj + size_t(r) * ld;
    double e0 = 0, e1 = 0;  // two chains: the sums are latency-bound otherwise
    uint32_t j = 0;
    auto code = [&](uint32_t k) {
      // code_of's rint (round half to even) without a libm call: adding and subtracting 1.5·2^23
      // rounds to an integer in the default rounding mode for |v| < 2^22, and larger |v| clamp
      // to the same end code either way.
      const float v = (x[k] - shift) * inv;
      const float q = (v + 12582912.0f) - 12582912.0f;
      const float c = q <= 0.0f ? 0.0f : (q >= maxq ? maxq : q);
      codes[k] = uint32_t(c);
      return c;
    };
    auto one = [&](uint32_t k, double& acc) {
      const float c = code(k);
      const double e = double(x[k]) - double(shift + c * scale);
      acc += w[k] * e * e;
    };
    if (leveled) {
      for (uint32_t k = 0; k < size; k++) {
        const size_t b = (size_t(k) << bits) + uint32_t(code(k));
        const double v = x[k];
        bin_n[b] += 1;
        bin_s[b] += v;
        sq[k] += v * v;
      }
    } else {
      for (; j + 1 < size; j += 2) {
        one(j, e0);
        one(j + 1, e1);
      }
      if (j < size) one(j, e0);
      ev.err += e0 + e1;
    }
    if (bits == 8) {
      for (uint32_t k = 0; k < size; k++) ev.counts[code_context(kGroupStatic, k, true)][codes[k]]++;
      continue;
    }
    pack_codes(size, bits, row.data(), [&](uint32_t k) { return codes[k]; });
    for (uint32_t b = 0; b < nb; b++) ev.counts[code_context(kGroupStatic, b, true)][row[b]]++;
  }
  if (!leveled) return;
  std::vector<float> L(size_t(1) << bits);
  for (uint32_t k = 0; k < size; k++) {
    const size_t b0 = size_t(k) << bits;
    component_levels(&bin_n[b0], &bin_s[b0], sq[k], bits, shift, scale, L.data());
    double e = sq[k];
    for (uint32_t c = 0; c <= uint32_t(maxq); c++) e += double(L[c]) * (double(L[c]) * bin_n[b0 + c] - 2 * bin_s[b0 + c]);
    ev.err += w[k] * std::max(0.0, e);
  }
}

// Steps of the MSE-optimal uniform quantizer of a unit Gaussian, for 2, 4, ..., 256 levels.
constexpr double kGaussStep[8] = {1.5958, 0.9957, 0.5860, 0.3352, 0.1881, 0.1041, 0.0568, 0.0307};

// The static quantizers' step ladder, in units of the component's standard deviation: the
// Gaussian steps above (whole bits, as 2^bits levels would need) and their geometric means
// (half bits), coarse to fine.
constexpr int kLadderSteps = 15;
inline double ladder_step(int li) {
  return li % 2 == 0 ? kGaussStep[li / 2] : std::sqrt(kGaussStep[li / 2] * kGaussStep[li / 2 + 1]);
}

inline int units_of(double cost, double unit) {
  // Packed costs are whole multiples of 8 bits: exact. Entropy costs are fractional and rounded
  // up (never below the budget), so calibration uses a fine unit (1/4 bit) to lose little per group.
  return int(std::ceil(cost / unit - 1e-9));
}

}  // namespace

void component_levels(const double* count, const double* sum, double sq, uint32_t bits, float shift, float scale,
                      float* levels) {
  const uint32_t nl = 1u << bits;
  double c[1u << kMaxLevelBits];
  double cs = 0;  // Σ c(x)·x over the sample: the centroids' covariance with the values
  for (uint32_t q = 0; q < nl; q++) {
    const double mid = double(shift + float(q) * scale);
    c[q] = (sum[q] + kLevelPrior * mid) / (count[q] + kLevelPrior);
    cs += c[q] * sum[q];
  }
  const double gain = cs > 0 && sq > 0 ? sq / cs : 1.0;
  for (uint32_t q = 0; q < nl; q++) levels[q] = float(c[q] * gain);
}

void fit_static_levels(const float* proj, size_t ld, int n, PlanGroup& g) {
  g.levels.clear();
  if (g.mode != kGroupStatic || g.bits > kMaxLevelBits || g.size == 0 || !(g.scale > 0)) return;
  GroupParams q;
  q.shift = g.shift;
  q.scale = g.scale;
  q.inv_scale = 1.0f / g.scale;
  const uint32_t maxq = (1u << g.bits) - 1;
  std::vector<double> bin_n(size_t(g.size) << g.bits, 0.0), bin_s(bin_n.size(), 0.0), sq(g.size, 0.0);
  for (int r = 0; r < n; r++) {
    const float* x = proj + size_t(r) * ld;
    for (uint32_t k = 0; k < g.size; k++) {
      const size_t b = (size_t(k) << g.bits) + code_of(x[k], q, maxq);
      const double v = x[k];
      bin_n[b] += 1;
      bin_s[b] += v;
      sq[k] += v * v;
    }
  }
  g.levels.resize(bin_n.size());
  for (uint32_t k = 0; k < g.size; k++) {
    const size_t b0 = size_t(k) << g.bits;
    component_levels(&bin_n[b0], &bin_s[b0], sq[k], g.bits, g.shift, g.scale, &g.levels[b0]);
  }
}

double static_step(uint32_t bits, double sigma) { return kGaussStep[std::min<uint32_t>(std::max<uint32_t>(bits, 1), 8) - 1] * sigma; }

PlanTable plan_table(const PlanRequest& req) {
  PlanTable t;
  const int K = req.kmax;
  t.kmax = std::max(K, 0);
  t.suffix.assign(size_t(t.kmax) + 1, 0.0);
  t.at.resize(t.kmax);
  if (K <= 0 || req.n <= 0) return t;

  // Energy of each component over the sample: the error of dropping it.
  std::vector<double> energy(K, 0.0);
  for (int r = 0; r < req.n; r++) {
    const float* row = req.proj + size_t(r) * req.ld;
    for (int c = 0; c < K; c++) energy[c] += double(row[c]) * row[c];
  }
  if (req.weight)
    for (int c = 0; c < K; c++) energy[c] *= req.weight[c];
  for (int c = K - 1; c >= 0; c--) t.suffix[c] = t.suffix[c + 1] + energy[c];
  // The raw energies (the static candidates size their step from them).
  if (req.weight)
    for (int c = 0; c < K; c++) energy[c] = req.weight[c] > 0 ? energy[c] / req.weight[c] : 0.0;

  // Largest |x| of each component over the sample (the range a static group must hold).
  std::vector<double> peak(K, 0.0);
  for (int r = 0; r < req.n; r++) {
    const float* row = req.proj + size_t(r) * req.ld;
    for (int c = 0; c < K; c++) peak[c] = std::max(peak[c], std::fabs(double(row[c])));
  }
  std::vector<uint8_t> bytes;
  std::vector<float> rec;
  std::vector<uint32_t> allowed;  // the request's widths in 1..8, ascending, once each
  for (int b : req.widths)
    if (b >= 1 && b <= 8 && std::find(allowed.begin(), allowed.end(), uint32_t(b)) == allowed.end())
      allowed.push_back(uint32_t(b));
  std::sort(allowed.begin(), allowed.end());
  const int narrowest = allowed.empty() ? 9 : int(allowed[0]);
  // Candidate groups per start position: sizes must be aligned to their start.
  for (int i = 0; i < K; i++) {
    std::vector<uint32_t> seen;
    for (int s : req.sizes) {
      if (s <= 0 || i % s != 0) continue;
      const uint32_t eff = uint32_t(std::min(s, K - i));
      if (std::find(seen.begin(), seen.end(), eff) != seen.end()) continue;
      seen.push_back(eff);
      t.at[i].push_back({eff, 0, kGroupMinMax, 0.0f, 0.0f, 0.0, t.suffix[i] - t.suffix[i + eff]});
      for (int b : req.widths) {
        if (b < 1 || b > 8) continue;
        // A min/max group of one component is its shift (min = max): every width reconstructs it
        // alike, so only the narrowest is a candidate (the others cost more for the same error).
        if (eff == 1 && b != narrowest) continue;
        double err = 0;
        double cost = group_cost_bits(eff, uint32_t(b));
        if (!req.weight)
          for (int r = 0; r < req.n; r++) err += group_sq_error(req.proj + size_t(r) * req.ld + i, eff, uint32_t(b));
        if (req.cost == PlanCost::Entropy || req.weight) {
          const RowLayout rl = make_row_layout({PlanGroup{0, eff, uint8_t(b)}});
          bytes.resize(size_t(req.n) * rl.rowBytes);
          quantize_rows(rl, req.proj + i, size_t(req.n), size_t(req.ld), bytes.data());
          if (req.cost == PlanCost::Entropy) cost = entropy_cost_bits(bytes.data(), req.n, rl);
          if (req.weight) {
            rec.resize(size_t(req.n) * eff);
            dequantize_rows(rl, bytes.data(), size_t(req.n), rec.data(), eff);
            for (int r = 0; r < req.n; r++) {
              const float* x = req.proj + size_t(r) * req.ld + i;
              const float* y = rec.data() + size_t(r) * eff;
              for (uint32_t j = 0; j < eff; j++) {
                const double e = double(x[j]) - double(y[j]);
                err += req.weight[i + j] * e * e;
              }
            }
          }
        }
        t.at[i].push_back({eff, uint8_t(b), kGroupMinMax, 0.0f, 0.0f, cost, err});
      }
      if (!req.static_groups) continue;
      // Static candidates: one step for the group, sized for its widest component (the first:
      // components come in descending variance). Under entropy coding the step sets the rate and
      // the width only has to hold the sample's range (a clipped code costs error, a wider one
      // almost no bits), so each step of a ladder is offered at the narrowest allowed width that
      // covers the component's sample range, with zero a level (midtread: small values cost
      // least). Beside them, the fixed-rate designs of the narrowest widths (midrise, the Gaussian
      // MSE-optimal step, clipped), which can do better at a bit or two per component.
      const double sigma = std::sqrt(std::max(0.0, energy[i]) / req.n);
      if (!(sigma > 0)) continue;
      auto try_static = [&](double step, uint32_t w, double mid) {
        const float scale = float(step);
        const float shift = float(-mid * step);
        if (!(scale > 0) || !std::isfinite(shift)) return;
        StaticEval ev;
        eval_static(req.proj + i, size_t(req.ld), req.n, eff, w, shift, scale, req.weight ? req.weight + i : nullptr, ev);
        const double err = ev.err;
        double cost = double(group_cost_bits(eff, w, kGroupStatic));
        if (req.cost == PlanCost::Entropy) {
          cost = 0;
          for (int c = 0; c < kContextsPerGroup; c++) {
            bool any = false;
            for (int sym = 0; sym < 256 && !any; sym++) any = ev.counts[c][sym] != 0;
            if (any) cost += context_bits(ev.counts[c]);
          }
          cost = req.n > 0 ? cost / req.n : 0.0;
        }
        t.at[i].push_back({eff, uint8_t(w), kGroupStatic, shift, scale, cost, err});
      };
      // Half-bit steps for small groups (cheap to try, and where the plan needs fine choices);
      // whole-bit steps for the larger ones, whose candidates cost the most calibration time.
      // The range to hold: the largest |x| of any of the group's components (a later component
      // of a heavy-tailed group can reach further than the first), on the shorter side of zero.
      double reach = 0;
      for (uint32_t j = 0; j < eff; j++) reach = std::max(reach, peak[i + j]);
      for (int li = 0; li < kLadderSteps; li += eff <= 16 ? 1 : 2) {
        const double step = ladder_step(li) * sigma;
        uint32_t w = 0;
        for (uint32_t b : allowed)  // ascending
          if (w == 0 || double((1u << (w - 1)) - 1) * step < reach) w = b;
        if (w == 0) continue;
        try_static(step, w, w >= 2 ? std::floor(0.5 * double((1u << w) - 1)) : 0.5);
      }
      for (uint32_t b : allowed)
        if (b <= 2) try_static(static_step(b, sigma), b, 0.5 * double((1u << b) - 1));
    }
  }
  return t;
}

PlanResult plan_from_table(const PlanTable& t, double unit, int U, std::vector<double>* curve) {
  PlanResult res;
  const int K = t.kmax;
  const double total = t.suffix.empty() ? 0.0 : t.suffix[0];
  if (curve) curve->assign(size_t(std::max(U, 0)) + 1, total);
  res.error = total;
  if (K <= 0 || U <= 0) return res;

  const double INF = std::numeric_limits<double>::infinity();
  const size_t W = size_t(U) + 1;
  std::vector<double> dp(size_t(K + 1) * W, INF);
  std::vector<uint8_t> choice(size_t(K + 1) * W, 0xff);  // candidate index at the start position
  std::vector<int32_t> from_pos(size_t(K + 1) * W, -1);  // start position of the last group
  dp[0] = 0;
  for (int i = 0; i < K; i++) {
    const double* from = &dp[size_t(i) * W];
    for (size_t ci = 0; ci < t.at[i].size(); ci++) {
      const PlanCandidate& c = t.at[i][ci];
      const int cu = c.bits ? units_of(c.cost, unit) : 0;
      if (cu > U) continue;
      double* to = &dp[size_t(i + c.size) * W];
      uint8_t* ch = &choice[size_t(i + c.size) * W];
      for (int u = 0; u + cu <= U; u++) {
        if (from[u] == INF) continue;
        const double v = from[u] + c.err;
        if (v < to[u + cu]) {
          to[u + cu] = v;
          ch[u + cu] = uint8_t(ci);
          from_pos[size_t(i + c.size) * W + u + cu] = i;
        }
      }
    }
  }
  // Any position may end the plan: everything after it is dropped.
  double best = INF;
  int bi = 0, bu = 0;
  std::vector<double> at_u(curve ? W : 0, INF);
  for (int i = 0; i <= K; i++)
    for (int u = 0; u <= U; u++) {
      const double v = dp[size_t(i) * W + u] + t.suffix[i];
      if (v < best) {
        best = v;
        bi = i;
        bu = u;
      }
      if (curve && v < at_u[u]) at_u[u] = v;
    }
  if (curve) {
    double run = INF;
    for (size_t u = 0; u < W; u++) (*curve)[u] = run = std::min(run, at_u[u]);
  }
  // Walk back through the choices.
  std::vector<PlanGroup> rev;
  int i = bi, u = bu;
  while (i > 0) {
    const size_t cell = size_t(i) * W + u;
    const PlanCandidate& c = t.at[from_pos[cell]][choice[cell]];
    if (c.bits > 0) {
      rev.push_back({uint32_t(from_pos[cell]), c.size, c.bits, c.mode, c.shift, c.scale});
      res.cost_bits += c.cost;
    }
    i = from_pos[cell];
    u -= c.bits ? units_of(c.cost, unit) : 0;
  }
  res.groups.assign(rev.rbegin(), rev.rend());
  res.error = best;
  for (const PlanGroup& g : res.groups) res.bits_per_token += group_cost_bits(g.size, g.bits, g.mode);
  return res;
}

double plan_unit_bits(int kmax, double budget_bits) {
  // Costs are multiples of 8 bits; coarsen the unit only if the table would be huge.
  const double max_cells = 16.0 * 1024 * 1024;
  uint32_t unit = 8;
  while (double(kmax + 1) * (budget_bits / unit + 1) > max_cells) unit *= 2;
  return unit;
}

PlanResult plan_bits(const PlanRequest& req) {
  if (req.kmax <= 0 || req.n <= 0) return {};
  const double unit = plan_unit_bits(req.kmax, req.budget_bits);
  const int U = int(std::floor(req.budget_bits / unit));
  if (U <= 0) return {};
  PlanResult res = plan_from_table(plan_table(req), unit, U, nullptr);
  for (PlanGroup& g : res.groups) fit_static_levels(req.proj + g.start, size_t(req.ld), req.n, g);
  return res;
}

BudgetSplit allocate_units(const std::vector<std::vector<double>>& curves, const std::vector<double>& weights,
                          int total) {
  BudgetSplit a;
  const size_t S = curves.size();
  a.units.assign(S, 0);
  if (S == 0) return a;
  total = std::max(total, 0);
  const size_t W = size_t(total) + 1;
  // F[x]: least weighted error of the groups so far within x units (non-increasing in x).
  std::vector<double> F(W, 0.0), G(W);
  std::vector<int32_t> pick(S * W, 0);
  for (size_t s = 0; s < S; s++) {
    const std::vector<double>& e = curves[s];
    const double w = weights[s];
    const int cap = int(e.size()) - 1;
    if (cap < 0) continue;  // a group that can take nothing: pick stays 0
    for (size_t x = 0; x < W; x++) {
      double best = std::numeric_limits<double>::infinity();
      int bu = 0;
      const int top = std::min<int>(cap, int(x));
      for (int u = 0; u <= top; u++) {
        const double v = F[x - u] + w * e[u];
        if (v <= best) {  // ties: more units to this group
          best = v;
          bu = u;
        }
      }
      G[x] = best;
      pick[s * W + x] = bu;
    }
    F.swap(G);
  }
  a.objective = F[total];
  size_t x = size_t(total);
  for (size_t s = S; s-- > 0;) {
    a.units[s] = pick[s * W + x];
    x -= size_t(a.units[s]);
  }
  return a;
}

}  // namespace kvtc
