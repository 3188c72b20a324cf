// Calibration: learns a Profile from sample caches. Samples stream in (add), each stream group
// keeps an f64 covariance accumulator plus a reservoir sample of feature rows; finish() runs the
// eigensolver, the bit-plan DP and the entropy statistics for every stream group.
#pragma once
#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "codec.h"
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
  std::vector<int> widths{2, 4, 8};
  uint32_t threads = 1;               // worker threads for add() (finish() takes its own count)
};

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
  StreamGroup fit_group(const Accumulator& acc, bool is_key) const;

  Profile base_;
  CalibrateSettings set_;
  std::vector<Accumulator> acc_[2];
  uint32_t reservoir_rows_ = 0;
  uint64_t seen_ = 0;     // tokens accumulated
  uint64_t rng_state_;
  std::mutex mu_;
  mutable struct {
    std::atomic<double> add{0}, fit{0}, gram{0}, eigen{0}, plan{0}, tables{0};
  } stage_;
  bool finished_ = false;
};

}  // namespace kvtc
