// A CodecProfile: everything calibration learned about one model's KV caches — per PCA group of
// layers and per stream (keys, values): the mean, the orthonormal basis of the kept principal
// components, the eigenvalues, the bit plan and the entropy tables. Immutable once built; shared
// between threads through shared_ptr<const Profile>.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "gemm.h"
#include "gemm_int8.h"
#include "half.h"
#include "quant.h"
#include "rans.h"
#include "rope.h"

namespace kvtc {

// Version 2 added the whole-cache allocation's record: per profile the allocation and weighting
// modes, the cache length the ratio was aimed at and the blob ratio expected there; per stream
// group its distortion weight and planned bits, per plan group its quantizer (min/max or static,
// with the static shift and scale). Version 1 profiles still load (the per-stream plan, weight 1,
// min/max groups). Version 3 added the reconstruction levels of static groups (see
// PlanGroup::levels); version 2 profiles load with none, and decode as before.
constexpr uint32_t kProfileVersion = 3;

// How calibration split the bit budget: equal per-stream budgets over the coded tokens (the
// paper's plan, version 1), or one budget for the whole blob over every stream group.
enum class Allocation : uint8_t { Stream = 0, Global = 1 };
// What the whole-cache allocation minimizes: plain squared error, or squared error weighted by
// its effect on attention (see attention_weights in calibrate.h).
enum class Weighting : uint8_t { Mse = 0, Attention = 1 };

struct StreamGroup {
  uint32_t layer_start = 0, layer_count = 0;
  uint32_t p = 0;  // features per token: layer_count * kvHeads * headDim
  uint32_t k = 0;  // components kept (end of the last coded plan group)
  double total_energy = 0;    // sum of eigenvalues: per-token variance of the features
  double mean_square = 0;     // E||x||^2 over calibration tokens (mean included)
  double predicted_err = 0;   // per-token squared error of the plan on the calibration sample
  double weight = 1;          // distortion weight of a unit of squared error (version 2; 1 before)
  double planned_bits = 0;    // bits per token the plan expects to cost (entropy-coded under Global)
  std::vector<float> eigen;   // p eigenvalues, descending
  std::vector<float> mean;    // p
  std::vector<float> basis;   // k x p, row c = principal component c
  std::vector<PlanGroup> plan;
  std::vector<uint16_t> freqs;  // numContexts x 256 normalized rANS frequencies
  bool static_byte_contexts = true;  // static groups' code bytes in their own contexts (version 3; see quant.h)
  // Derived at load time, not serialized:
  PackedB encode_b;  // basisᵀ (p x k) packed for the encoder's D = X·basisᵀ
  PackedB decode_b;  // basis (k x p) packed for the decoder's X = D·basis
  double mean_norm = 0;  // ||mean||, the constant term of the escape test
  Int8Basis decode_i8;   // the basis as int8, only when the profile decodes on the int8 path (int8_decode_for)
  RowLayout row;
  std::vector<RansTable> tables;
  // Fills the derived fields (the int8 basis too when `int8`); throws E_PROFILE on inconsistent data.
  void derive(bool int8);
};

// State a backend derives from a profile once and releases with it (the CUDA backend's device
// copy of the constants).
struct BackendCache {
  std::mutex m;
  std::shared_ptr<const void> gpu;
};

struct Profile {
  uint32_t layers = 0, kv_heads = 0, head_dim = 0;
  DType dtype = DType::F32;  // dtype of the calibration samples (informational)
  RopeParams rope;
  double rope_theta = 0;  // 0 when explicit frequencies were given
  uint32_t sinks = 0, window = 0, group_layers = 0;
  double ratio = 0;
  uint64_t seed = 0, calib_tokens = 0;
  Allocation allocation = Allocation::Stream;
  Weighting weighting = Weighting::Mse;
  uint32_t target_tokens = 0;   // cache length the ratio was aimed at (0: coded tokens only)
  double expected_ratio = 0;    // whole-blob ratio vs fp16 expected at target_tokens (0: unknown)
  std::vector<StreamGroup> groups[2];  // [0] keys, [1] values
  std::array<uint8_t, 16> fingerprint{};  // set by the loader (sha-256 prefix of the bytes)
  std::shared_ptr<BackendCache> backend_cache = std::make_shared<BackendCache>();

  uint32_t row_values() const { return kv_heads * head_dim; }
};

// Serializes a profile (versioned, CRC-32C at the end).
std::vector<uint8_t> serialize_profile(const Profile& p);

// Parses and validates; throws E_PROFILE for anything malformed. Derived fields are filled.
std::shared_ptr<Profile> parse_profile(const uint8_t* data, size_t len);

}  // namespace kvtc
