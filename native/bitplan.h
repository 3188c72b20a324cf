// The bit plan: which principal components get how many bits. Dynamic programming over
// contiguous component groups (the KVTC paper's allocation): each group takes one size from
// `sizes` and one width from `widths` (0 = dropped), pays its cost per token, and the plan
// minimizes the squared error on calibration projections within a per-token bit budget.
//
// Two cost models: Packed (the paper's: 8·ceil(size·bits/8) code bits + 32 bits of fp16 shift and
// scale) and Entropy (the bits the rANS coder will spend on the group: the calibration sample's
// quantized bytes of that group coded with the table rans_normalize makes of their own
// histogram — exactly what the profile's tables will charge on the same sample).
//
// The whole-cache allocation (allocate_units) splits one budget over many stream groups: each
// group's rate–distortion curve (least error within u budget units, from the same DP) is weighted
// and a multiple-choice knapsack over the curves finds the split of least total weighted error.
// With one stream group and weight 1 it picks the whole budget, so it reduces to plan_bits.
#pragma once
#include <cstdint>
#include <vector>

#include "quant.h"

namespace kvtc {

enum class PlanCost : uint8_t { Packed = 0, Entropy = 1 };

struct PlanRequest {
  const float* proj = nullptr;   // n x kmax calibration projections (row-major, leading dim ld); borrowed
  int n = 0;                     // calibration tokens
  int kmax = 0;                  // components the plan may use (projections are given for these)
  int ld = 0;
  double budget_bits = 0;        // per token
  std::vector<int> sizes{1, 16, 64, 256, 1024};
  std::vector<int> widths{2, 4, 8};
  PlanCost cost = PlanCost::Packed;
  // kmax relative weights of each component's squared error (nullptr: all 1); borrowed. The
  // errors of weighted candidates are measured on the codec's own reconstruction.
  const double* weight = nullptr;
  // Also offer static groups (no per-token shift/scale; see quant.h) at each size and width.
  bool static_groups = false;
};

struct PlanResult {
  std::vector<PlanGroup> groups;  // coded groups only, in component order
  double error = 0;               // squared error over the sample of the kmax components
  uint32_t bits_per_token = 0;    // pre-entropy (packed), shift/scale included
  double cost_bits = 0;           // per token under the request's cost model
};

// One candidate group of the DP: components [start, start+size) at `bits` (0 = dropped).
struct PlanCandidate {
  uint32_t size = 0;   // effective size (clipped at kmax)
  uint8_t bits = 0;
  uint8_t mode = kGroupMinMax;
  float shift = 0, scale = 0;  // static candidates
  double cost = 0;     // bits per token under the cost model
  double err = 0;      // squared error summed over the sample
};

// Everything the DP needs of one stream group's sample, computed once (the quantization of
// every candidate is the expensive part); the projections are not kept.
struct PlanTable {
  int kmax = 0;
  std::vector<std::vector<PlanCandidate>> at;  // candidates by start component
  std::vector<double> suffix;                  // kmax+1: energy of components [c, kmax)
};

PlanTable plan_table(const PlanRequest& req);

// The DP over the table with costs in units of unit_bits (rounded up), within `units` units.
// Returns the plan of least error; curve (optional) receives units+1 entries: the least error
// within u units for u = 0..units (non-increasing).
PlanResult plan_from_table(const PlanTable& t, double unit_bits, int units, std::vector<double>* curve);

// The unit plan_bits uses for a budget: 8 bits, doubled while the table would exceed 16M cells.
double plan_unit_bits(int kmax, double budget_bits);

// The step of a static group of `bits` for values of standard deviation sigma: the uniform
// quantizer of least mean squared error for a Gaussian with 2^bits levels (Max, 1960).
double static_step(uint32_t bits, double sigma);

// Reconstruction levels of static groups (see PlanGroup::levels), per component from the sample
// values in each code's bin: the bin's mean (shrunk toward its midpoint as if kLevelPrior more
// values sat there, so a bin the sample never reaches decodes to its midpoint and one it reaches a
// few times stays near it), all of the component's levels then scaled by one factor that makes
// the reconstruction's gain 1 — Σ x̂·x = Σ x² over the sample. Of the reconstructions of the same
// codes with gain 1, that is the one of least squared error. Why not the bin means themselves,
// which have the least squared error of all: they shrink every component toward zero by
// 1 − D/σ², a bias attention does not average away (softmax flattens under shrunken keys, the
// output of shrunken values shrinks toward its mean), where the gain-1 error is uncorrelated with
// the value, as the attention weights model it (calibrate.h). On stories260K (fidelity bench,
// held-out prompts) bin means on the values lowered relMSE V by 2–12% and raised next-token KL
// by 4–27% at ratios 8–32 (on both streams: +13–27% at 16–32); gain-1 levels lowered it by
// 1–11% at ratios 4–6 and 12–32. The plan's static candidates are scored with these levels (their
// squared error), so the allocation follows.
constexpr double kLevelPrior = 2.0;

// The 2^bits levels of one component of a static group of `bits` <= kMaxLevelBits: count[c] and
// sum[c] of the sample values that code to c, sq the sum of squares of all of them; levels
// receives 2^bits floats.
void component_levels(const double* count, const double* sum, double sq, uint32_t bits, float shift, float scale,
                      float* levels);

// Fills g.levels from the sample when g is a static group of at most kMaxLevelBits (clears them
// otherwise). proj: n rows of ld floats, the group's first component at column 0; borrowed.
void fit_static_levels(const float* proj, size_t ld, int n, PlanGroup& g);

// The per-stream plan: plan_table + plan_from_table at plan_unit_bits, levels fitted.
PlanResult plan_bits(const PlanRequest& req);

// Splits total_units among stream groups: curves[s][u] is group s's least error within u units
// (non-increasing in u; its length - 1 is the most units it may take); minimizes
// Σ weights[s]·curves[s][units[s]] with Σ units[s] <= total_units. Ties go to more units.
struct BudgetSplit {
  std::vector<int> units;
  double objective = 0;
};
BudgetSplit allocate_units(const std::vector<std::vector<double>>& curves, const std::vector<double>& weights,
                          int total_units);

}  // namespace kvtc
