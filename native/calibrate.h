// Calibration: learns a Profile from sample caches. Samples stream in (add), each stream group
// keeps an f64 covariance accumulator plus a reservoir sample of feature rows; finish() runs the
// eigensolver, the bit-plan DP and the entropy statistics for every stream group.
//
// Under Allocation::Global (the default) finish() plans the whole cache at once: the budget is
// the whole blob's at the asked ratio for a cache of target_tokens (raw sinks and window, header
// and chunk tables taken off first), every stream group's rate–distortion curve is computed with
// entropy-coded costs, and one weighted allocation (allocate_units) splits the budget.
#pragma once
#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "codec.h"
#include "bitplan.h"
#include "profile.h"

namespace kvtc {

struct CalibrateSettings {
  uint32_t sinks = 4, window = 128;
  uint32_t group_layers = 1;          // layers per PCA group
  double ratio = 16;                  // target compression vs fp16 of the coded tokens
  uint64_t seed = 0;                  // reservoir sampling
  uint32_t sample_tokens = 4096;      // rows kept per stream group for the DP and the tables
  uint64_t max_tokens = 0;            // stop accumulating after this many tokens (0 = all)
  uint32_t max_features = 2048;       // wider PCA groups use the sample's Gram matrix, not a covariance
  std::vector<int> sizes{1, 16, 64, 256, 1024};
  std::vector<int> widths{1, 2, 3, 4, 5, 6, 8};
  uint32_t threads = 1;               // worker threads for add() (finish() takes its own count)
  Allocation allocation = Allocation::Global;
  Weighting weighting = Weighting::Attention;  // Global only
  uint32_t target_tokens = 0;         // cache length the ratio is aimed at (0: the mean sample length)
};

// Distortion weights of one PCA group of layers, per unit of squared error of its keys and of its
// values, estimated from the caches alone. First order, per head of dimension d, for a query q
// attending with weights a_j over tokens j (output o = Σ a_j v_j):
//   a value error δv_j moves o by Σ a_j δv_j:                 E|Δo|² = Σ a_j² · |δv|²
//   a key error δk_j moves logit j by q·δk_j/√d, and o by Σ a_j Δlogit_j (v_j − o):
//                                                             E|Δo|² ≈ Σ a_j² · δkᵀ E[qqᵀ] δk / d · E|v − v̄|²
// (errors independent of q and of each other). The attention factor Σ a_j² is common to both and
// cancels. Queries are not in a cache, so E[qqᵀ] is modelled as isotropic, at the scale that
// makes the logits q·k/√d spread with variance s² = kLogitVariance over the head's keys:
// E[qqᵀ] = s²·d / tr(Σ_h) · I (a constant shift of all keys never matters: softmax). Each layer's
// output error is taken relative to its output scale E|v|², so that no layer counts more for
// larger activations. Per head this gives the stream weights
//   w_V = 1 / E|v|²,   w_K = s² · E|v − v̄|² / (E|v|² · E|k − k̄|²)
// Inputs are per token over the group's heads: key_energy = E Σ|k − k̄|², value_energy =
// E Σ|v − v̄|², value_mean_square = E Σ|v|²; heads = layers in the group × kvHeads.
//
// An earlier estimator modelled queries like the keys (E[qqᵀ] ∝ Σ_h), which weighs key error
// along low-variance key directions down by their variance. With the ladder of static
// quantizers the plan then starved those directions, and keys alone made most of the
// next-token KL (14x the values' at ratio 2, 3.5x at 5, on stories260K training prompts 0–15
// calibrating and 16–23 measuring); isotropic queries balance the two, and on those prompts the
// KL fell 1.1–6x at ratios 2–6 and 16 (and rose 6% at 8).
//
// s² = 10 (logits spread by ~3 nats) was chosen on stories260K training prompts (a sweep over
// 0.3..30 calibrating on prompts 0–15 and measuring next-token KL on prompts 16–23), never on the
// held-out prompts of the fidelity bench; a sweep over 5..20 with the isotropic model on the same
// split found 5 and 10 alike (geometric-mean KL over ratios 2–16 within 3%).
constexpr double kLogitVariance = 10.0;

struct AttentionWeights {
  double key = 1, value = 1;
};
AttentionWeights attention_weights(double key_mean_square, double value_energy, double value_mean_square,
                                   uint32_t heads, uint32_t head_dim);

// Where calibration spent its time: CPU seconds summed over the worker threads, per stage.
struct CalibrateStageSeconds {
  double add = 0;     // add(): feature gathering, moments, covariance GEMMs, reservoir
  double fit = 0;     // finish(): all of the per-group work (the stages below and the rest)
  double gram = 0;    // finish(), wide groups: the sample's Gram matrix and the directions from it
  double eigen = 0;   // finish(): the eigensolver
  double plan = 0;    // finish(): sample projections and the bit-plan DP
  double tables = 0;  // finish(): quantized-row histograms and rANS tables
};

// fraction in [0,1]; stage names what is running.
using ProgressFn = std::function<void(double fraction, const std::string& stage)>;

class Calibrator {
 public:
  // layout: a Profile with layers/kv_heads/head_dim/dtype/rope filled (the rest is ignored).
  Calibrator(const Profile& layout, const CalibrateSettings& settings);

  // Accumulates the tokens [sinks, tokens) of one cache. Thread-safe.
  void add(const CacheView& cache);

  // Builds the profile; threads: worker threads for the per-group work.
  std::vector<uint8_t> finish(const ProgressFn& progress, int threads);

  uint64_t tokens_seen() const { return seen_; }

  // Stage timings so far (for benchmarks; they never influence the profile).
  CalibrateStageSeconds stage_seconds() const {
    return {stage_.add.load(), stage_.fit.load(), stage_.gram.load(), stage_.eigen.load(), stage_.plan.load(),
            stage_.tables.load()};
  }

 private:
  struct Accumulator {
    uint32_t layer_start = 0, layer_count = 0, p = 0;
    bool gram = false;             // wide group: PCA of the reservoir sample via its Gram matrix
    std::vector<float> shift;      // p: the first batch's mean, subtracted before accumulating
    std::vector<double> sum, cov;  // of (x - shift): p, and p x p (upper triangle; empty for gram groups)
    std::vector<float> sample;     // reservoir rows x p
  };
  struct AddScratch {  // per-thread buffers of add_group
    std::vector<float> X, XC, XCT, Cb, cs;
    std::vector<int32_t> pos;
  };
  // toks: token indices to accumulate; slot: reservoir row for each (-1 = not kept).
  void add_group(Accumulator& acc, bool is_key, const CacheView& cache, const std::vector<uint32_t>& toks,
                 const std::vector<int64_t>& slot, AddScratch& scratch) const;
  struct Fit;  // one stream group between the PCA and the plan
  void fit_pca(const Accumulator& acc, Fit& f, bool is_key) const;
  void plan_table_for(const Accumulator& acc, Fit& f, uint32_t kmax_limit, PlanCost cost,
                      const std::vector<double>* weight) const;
  StreamGroup finish_group(const Accumulator& acc, Fit& f, const PlanResult& plan) const;

  Profile base_;
  CalibrateSettings set_;
  std::vector<Accumulator> acc_[2];
  uint32_t reservoir_rows_ = 0;
  uint64_t seen_ = 0;     // tokens accumulated
  uint64_t sample_tokens_ = 0, samples_ = 0;  // lengths of the caches added (for target_tokens)
  uint64_t rng_state_;
  std::mutex mu_;
  mutable struct {
    std::atomic<double> add{0}, fit{0}, gram{0}, eigen{0}, plan{0}, tables{0};
  } stage_;
  bool finished_ = false;
};

}  // namespace kvtc
