// Calibration: learns a Profile from sample caches. Samples stream in (add), each stream group
// keeps an f64 covariance accumulator plus a reservoir sample of feature rows; finish() runs the
// eigensolver, the bit-plan DP and the entropy statistics for every stream group.
#pragma once
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

 private:
  struct Accumulator {
    uint32_t layer_start = 0, layer_count = 0, p = 0;
    bool gram = false;             // wide group: PCA of the reservoir sample via its Gram matrix
    std::vector<float> shift;      // p: the first batch's mean, subtracted before accumulating
    std::vector<double> sum, cov;  // of (x - shift): p, and p x p (full; empty for gram groups)
    std::vector<float> sample;     // reservoir rows x p
  };
  StreamGroup fit_group(const Accumulator& acc, bool is_key) const;

  Profile base_;
  CalibrateSettings set_;
  std::vector<Accumulator> acc_[2];
  uint32_t reservoir_rows_ = 0;
  uint64_t seen_ = 0;     // tokens accumulated
  uint64_t rng_state_;
  std::mutex mu_;
  bool finished_ = false;
};

}  // namespace kvtc
