// The CPU transform codec: encode a cache into a blob and decode it back, against a profile.
// Tokens [0, sinks) and [tokens - window, tokens) are stored losslessly; the middle tokens are
// RoPE-stripped (keys), centered, projected onto the profile's principal components, quantized
// per the bit plan and entropy coded. Middle tokens with non-finite values, or too large for the
// fp16 quantization parameters, are escaped: stored raw and listed in the header (never lost,
// never silently clipped).
#pragma once
#include <cstdint>
#include <vector>

#include "container.h"
#include "profile.h"

namespace kvtc {

// A caller's cache, borrowed for the duration of a call. Per layer, token-major arrays
// [tokens][kvHeads][headDim] of dtype.
struct CacheView {
  uint32_t tokens = 0;
  DType dtype = DType::F32;
  std::vector<const void*> keys, values;  // one pointer per layer
  const int32_t* positions = nullptr;     // nullptr: 0..tokens-1
};

struct EncodeOptions {
  bool entropy = true;  // false: coded sections hold the packed quantized rows as they are
  int threads = 1;      // threads for this one call (stream groups are independent); 1..kMaxThreads
};

// Most threads one encode or decode call may use.
constexpr int kMaxThreads = 64;

// Encodes; throws E_LAYOUT when the cache does not fit the profile's shape.
std::vector<uint8_t> encode_cache(const Profile& profile, const CacheView& cache, const EncodeOptions& opts);

// Checks a parsed header against the profile: fingerprint (E_PROFILE_MISMATCH), then shape and
// every section size against the token count (E_CORRUPT). Returns the decoded bytes per stream
// ([layers][tokens][kvHeads*headDim] of h.dtype), so callers allocate only validated sizes.
size_t check_blob(const Profile& profile, const BlobHeader& h);

// Decodes a blob whose header h was read (with its checksum verified) by read_blob_header.
// keys/values: [layers][tokens][kvHeads*headDim] of h.dtype, allocated by the caller;
// positions: h.tokens entries. threads: 1..kMaxThreads, for this call (the output does not
// depend on it). Throws E_PROFILE_MISMATCH for a blob of another profile and E_CORRUPT for
// inconsistent content.
void decode_blob(const Profile& profile, const uint8_t* blob, const BlobHeader& h, void* keys, void* values,
                 int32_t* positions, int threads = 1);

// Builds the feature rows X[n][g.p] of tokens toks[0..n) for one stream group: the group's layers
// side by side, keys with RoPE removed (pos: the tokens' positions), g.mean subtracted.
// cs is scratch space.
void gather_features(const Profile& pr, const StreamGroup& g, bool is_key, const std::vector<const void*>& layers,
                     DType dtype, const uint32_t* toks, const int32_t* pos, uint32_t n, float* X,
                     std::vector<float>& cs);

// Escape threshold on ||x|| + ||mean|| of a token's features in one stream group: keeps every
// PCA coefficient, shift and scale within fp16 (rotation does not change the norm).
constexpr double kMaxCoefficient = 30000.0;

// ||mean|| of a stream group, the second term of the escape test (StreamGroup::mean_norm once
// derived).
double mean_norm(const StreamGroup& g);

// The header of a new blob before escapes and sections: fingerprint, layout, sink and window
// counts, positions (compact when contiguous; positions nullptr means 0..n-1).
BlobHeader make_header(const Profile& pr, uint32_t n, DType dtype, const int32_t* positions);

// Tokens stored raw in section 0, in token order: sinks, window and escapes.
std::vector<uint32_t> raw_tokens(const BlobHeader& h);

// The finished blob: header (sections filled), payloads in section order, CRC-32C.
std::vector<uint8_t> seal_blob(const BlobHeader& h, const std::vector<std::vector<uint8_t>>& payloads);

// Indices of the middle tokens that are transform-coded (not sinks, window or escapes).
std::vector<uint32_t> coded_tokens(uint32_t tokens, uint32_t sinks, uint32_t window,
                                   const std::vector<uint32_t>& escapes);

}  // namespace kvtc
