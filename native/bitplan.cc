#include "bitplan.h"

#include <algorithm>
#include <cmath>
#include <limits>


namespace kvtc {
namespace {

struct Candidate {
  uint32_t size;   // effective size (clipped at kmax)
  uint8_t bits;    // 0 = dropped
  uint32_t units;  // cost in budget units
  double err;
};

}  // namespace

PlanResult plan_bits(const PlanRequest& req) {
  const int K = req.kmax;
  PlanResult res;
  if (K <= 0 || req.n <= 0) return res;

  // Energy of each component over the sample: the error of dropping it.
  std::vector<double> energy(K, 0.0);
  for (int t = 0; t < req.n; t++) {
    const float* row = req.proj + size_t(t) * req.ld;
    for (int c = 0; c < K; c++) energy[c] += double(row[c]) * row[c];
  }
  std::vector<double> suffix(K + 1, 0.0);
  for (int c = K - 1; c >= 0; c--) suffix[c] = suffix[c + 1] + energy[c];

  // Costs are multiples of 8 bits; coarsen the unit only if the table would be huge.
  const double max_cells = 16.0 * 1024 * 1024;
  uint32_t unit = 8;
  while (double(K + 1) * (req.budget_bits / unit + 1) > max_cells) unit *= 2;
  const int U = int(std::floor(req.budget_bits / unit));
  if (U <= 0) return res;

  // Candidate groups per start position: sizes must be aligned to their start.
  std::vector<std::vector<Candidate>> cand(K);
  std::vector<float> tmp;
  for (int i = 0; i < K; i++) {
    std::vector<uint32_t> seen;
    for (int s : req.sizes) {
      if (s <= 0 || i % s != 0) continue;
      const uint32_t eff = uint32_t(std::min(s, K - i));
      if (std::find(seen.begin(), seen.end(), eff) != seen.end()) continue;
      seen.push_back(eff);
      double drop = suffix[i] - suffix[i + eff];
      cand[i].push_back({eff, 0, 0, drop});
      for (int b : req.widths) {
        const uint32_t cost = group_cost_bits(eff, uint32_t(b));
        const uint32_t units = (cost + unit - 1) / unit;
        if (int(units) > U) continue;
        double err = 0;
        for (int t = 0; t < req.n; t++) err += group_sq_error(req.proj + size_t(t) * req.ld + i, eff, uint32_t(b));
        cand[i].push_back({eff, uint8_t(b), units, err});
      }
    }
  }

  const double INF = std::numeric_limits<double>::infinity();
  const size_t W = size_t(U) + 1;
  std::vector<double> dp(size_t(K + 1) * W, INF);
  std::vector<uint8_t> choice(size_t(K + 1) * W, 0xff);  // candidate index at the start position
  std::vector<int32_t> from_pos(size_t(K + 1) * W, -1);  // start position of the last group
  dp[0] = 0;
  for (int i = 0; i < K; i++) {
    const double* from = &dp[size_t(i) * W];
    for (size_t ci = 0; ci < cand[i].size(); ci++) {
      const Candidate& c = cand[i][ci];
      double* to = &dp[size_t(i + c.size) * W];
      uint8_t* ch = &choice[size_t(i + c.size) * W];
      for (int u = 0; u + int(c.units) <= U; u++) {
        if (from[u] == INF) continue;
        const double v = from[u] + c.err;
        if (v < to[u + c.units]) {
          to[u + c.units] = v;
          ch[u + c.units] = uint8_t(ci);
          from_pos[size_t(i + c.size) * W + u + c.units] = i;
        }
      }
    }
  }
  // Any position may end the plan: everything after it is dropped.
  double best = INF;
  int bi = 0, bu = 0;
  for (int i = 0; i <= K; i++)
    for (int u = 0; u <= U; u++) {
      const double v = dp[size_t(i) * W + u] + suffix[i];
      if (v < best) {
        best = v;
        bi = i;
        bu = u;
      }
    }
  // Walk back through the choices.
  std::vector<PlanGroup> rev;
  int i = bi, u = bu;
  while (i > 0) {
    const size_t cell = size_t(i) * W + u;
    const Candidate& c = cand[from_pos[cell]][choice[cell]];
    if (c.bits > 0) rev.push_back({uint32_t(from_pos[cell]), c.size, c.bits});
    i = from_pos[cell];
    u -= int(c.units);
  }
  res.groups.assign(rev.rbegin(), rev.rend());
  res.error = best;
  for (const PlanGroup& g : res.groups) res.bits_per_token += group_cost_bits(g.size, g.bits);
  return res;
}

}  // namespace kvtc
