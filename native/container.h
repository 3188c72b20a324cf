// The blob container: one encoded cache. Versioned header (magic, version, profile fingerprint,
// layout, token count, positions — compact when contiguous — escaped tokens, section table),
// the sections, and a CRC-32C over everything before it. Any failed check is E_CORRUPT (or
// E_PROFILE_MISMATCH for a blob of another profile), never garbage.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "half.h"
#include "profile.h"

namespace kvtc {

constexpr uint32_t kBlobMagic = 0x4354564bu;  // "KVTC"
// Version 2 added chunked entropy-coded sections; version 1 blobs (one stream per section) still
// decode.
constexpr uint16_t kBlobVersion = 2;

enum class SectionMode : uint8_t { Stored = 0, Rans = 1, RansChunks = 2 };

inline bool entropy_coded(SectionMode m) { return m != SectionMode::Stored; }

struct SectionInfo {
  SectionMode mode = SectionMode::Stored;
  uint32_t stored_len = 0;  // bytes in the blob
  uint32_t raw_len = 0;     // bytes after entropy decoding
  size_t offset = 0;        // of the payload within the blob (filled by the parser)
};

struct BlobHeader {
  std::array<uint8_t, 16> fingerprint{};
  uint32_t layers = 0, kv_heads = 0, head_dim = 0;
  DType dtype = DType::F32;
  uint32_t tokens = 0, sinks = 0, window = 0;
  bool contiguous = true;       // positions are pos_start + i
  int32_t pos_start = 0;
  std::vector<int32_t> positions;  // only when !contiguous
  std::vector<uint32_t> escapes;   // middle tokens stored raw (non-finite or out of range)
  // Section 0 holds the raw tokens (sinks, window, escapes); then keys groups, then values groups.
  std::vector<SectionInfo> sections;
  size_t total_len = 0;  // whole blob including the checksum
};

// Appends the header for h (sections must be filled) to out.
void write_blob_header(const BlobHeader& h, std::vector<uint8_t>& out);

// Parses the header of blob[0..len); verify_checksum also checks the CRC over the whole blob.
// Throws E_CORRUPT on any inconsistency.
BlobHeader read_blob_header(const uint8_t* blob, size_t len, bool verify_checksum);

// ---- the blob of one cache under a profile: the helpers the CPU codec and the CUDA pipeline share

// Checks a parsed header against the profile: fingerprint (E_PROFILE_MISMATCH), then shape and
// every section size against the token count (E_CORRUPT). Returns the decoded bytes per stream
// ([layers][tokens][kvHeads*headDim] of h.dtype), so callers allocate only validated sizes.
size_t check_blob(const Profile& profile, const BlobHeader& h);

// Escape threshold on ||x|| + ||mean|| of a token's features in one stream group: keeps every
// PCA coefficient, shift and scale within fp16 (rotation does not change the norm).
constexpr double kMaxCoefficient = 30000.0;

// ||mean|| of a stream group, the second term of the escape test (StreamGroup::mean_norm once
// derived).
double mean_norm(const StreamGroup& g);

// The header of a new blob before escapes and sections: fingerprint, layout, sink and window
// counts (clamped to n), positions (compact when contiguous; positions nullptr means 0..n-1).
BlobHeader make_header(const Profile& pr, uint32_t n, DType dtype, const int32_t* positions, uint32_t sinks,
                       uint32_t window);

// Tokens stored raw in section 0, in token order: sinks, window and escapes.
std::vector<uint32_t> raw_tokens(const BlobHeader& h);

// The finished blob: header (sections filled), payloads in section order, CRC-32C.
std::vector<uint8_t> seal_blob(const BlobHeader& h, const std::vector<std::vector<uint8_t>>& payloads);

// Indices of the middle tokens that are transform-coded (not sinks, window or escapes).
std::vector<uint32_t> coded_tokens(uint32_t tokens, uint32_t sinks, uint32_t window,
                                   const std::vector<uint32_t>& escapes);

}  // namespace kvtc
