// The bit plan: which principal components get how many bits. Dynamic programming over
// contiguous component groups (the KVTC paper's allocation): each group takes one size from
// `sizes` and one width from `widths` (0 = dropped), pays group_cost_bits() per token, and the
// plan minimizes the squared error on calibration projections within a per-token bit budget.
#pragma once
#include <cstdint>
#include <vector>

#include "quant.h"

namespace kvtc {

struct PlanRequest {
  const float* proj = nullptr;   // n x kmax calibration projections (row-major, leading dim ld)
  int n = 0;                     // calibration tokens
  int kmax = 0;                  // components the plan may use (projections are given for these)
  int ld = 0;
  double budget_bits = 0;        // per token
  std::vector<int> sizes{1, 16, 64, 256, 1024};
  std::vector<int> widths{2, 4, 8};
};

struct PlanResult {
  std::vector<PlanGroup> groups;  // coded groups only, in component order
  double error = 0;               // squared error over the sample of the kmax components
  uint32_t bits_per_token = 0;    // pre-entropy, shift/scale included
};

PlanResult plan_bits(const PlanRequest& req);

}  // namespace kvtc
