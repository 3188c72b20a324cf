// The blob container: one encoded cache. Versioned header (magic, version, profile fingerprint,
// layout, token count, positions — compact when contiguous — escaped tokens, section table),
// the sections, and a CRC-32C over everything before it. Any failed check is E_CORRUPT (or
// E_PROFILE_MISMATCH for a blob of another profile), never garbage.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "half.h"

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

}  // namespace kvtc
