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
  // Tokens kept lossless at the start and at the end; -1: the profile's. A chunk cut from a longer
  // session overrides them (only the session's first tokens are sinks, only its last the window).
  int64_t sinks = -1, window = -1;
};

// The sink and window counts an encode uses: the options' overrides, else the profile's.
inline uint32_t sinks_of(const Profile& pr, const EncodeOptions& o) { return o.sinks < 0 ? pr.sinks : uint32_t(o.sinks); }
inline uint32_t window_of(const Profile& pr, const EncodeOptions& o) { return o.window < 0 ? pr.window : uint32_t(o.window); }

// Most threads one encode or decode call may use.
constexpr int kMaxThreads = 64;

// Encodes; throws E_LAYOUT when the cache does not fit the profile's shape.
std::vector<uint8_t> encode_cache(const Profile& profile, const CacheView& cache, const EncodeOptions& opts);

// Where a decode writes: token rows [offset, offset + h.tokens) of a caller's cache of `tokens`
// tokens (the chunks of one session decode side by side into one output). tokens 0: h.tokens.
struct OutputSlice {
  uint32_t offset = 0, tokens = 0;
};

// Decodes a blob whose header h was read (with its checksum verified) by read_blob_header.
// keys/values: [layers][out.tokens][kvHeads*headDim] of h.dtype, allocated by the caller;
// positions: out.tokens entries. threads: 1..kMaxThreads, for this call (the output does not
// depend on it). Throws E_PROFILE_MISMATCH for a blob of another profile and E_CORRUPT for
// inconsistent content.
void decode_blob(const Profile& profile, const uint8_t* blob, const BlobHeader& h, void* keys, void* values,
                 int32_t* positions, int threads = 1, OutputSlice out = {});

// The same with each layer's rows in their own block: key_layers/value_layers hold one pointer
// per layer to [out.tokens][kvHeads*headDim] of h.dtype (a caller's per-layer arrays, which need
// not be one buffer).
void decode_blob_layers(const Profile& profile, const uint8_t* blob, const BlobHeader& h,
                        const std::vector<uint8_t*>& key_layers, const std::vector<uint8_t*>& value_layers,
                        int32_t* positions, int threads = 1, OutputSlice out = {});

// Builds the feature rows X[n][g.p] of tokens toks[0..n) for one stream group: the group's layers
// side by side, keys with RoPE removed (pos: the tokens' positions), g.mean subtracted.
// cs is scratch space.
void gather_features(const Profile& pr, const StreamGroup& g, bool is_key, const std::vector<const void*>& layers,
                     DType dtype, const uint32_t* toks, const int32_t* pos, uint32_t n, float* X,
                     std::vector<float>& cs);

}  // namespace kvtc
