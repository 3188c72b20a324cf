// A byte-oriented rANS entropy coder with static, context-selected frequency tables (the tables
// come from calibration and live in the profile, like JPEG's Huffman tables, so blobs carry none).
// Four interleaved states let the decoder's dependency chains overlap. 32-bit states, 12-bit
// probabilities, renormalization one byte at a time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvtc {

constexpr uint32_t kRansProbBits = 12;
constexpr uint32_t kRansProbScale = 1u << kRansProbBits;
constexpr int kRansLanes = 4;

struct RansTable {
  uint16_t freq[256];
  uint16_t cum[256];
  uint8_t slot_symbol[kRansProbScale];  // decoding: slot -> symbol
};

// Turns symbol counts into frequencies summing to kRansProbScale; every symbol gets at least 1
// so any byte stays encodable. Deterministic (largest-remainder rounding, ties by symbol).
void rans_normalize(const uint64_t counts[256], uint16_t freq_out[256]);

// Builds the coding table from normalized frequencies; throws E_PROFILE if they do not sum to
// kRansProbScale or a symbol has frequency 0.
void rans_build_table(const uint16_t freq[256], RansTable& table);

// Encodes data[0..n): byte i is coded with tables[context[i % period]]. Returns the coded bytes.
std::vector<uint8_t> rans_encode(const uint8_t* data, size_t n, const uint16_t* context, size_t period,
                                 const RansTable* tables);

// Decodes exactly n bytes into out from in[0..in_len). Throws E_CORRUPT if the input runs out,
// has bytes left over, or the final states are not the encoder's initial ones.
void rans_decode(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const uint16_t* context, size_t period,
                 const RansTable* tables);

}  // namespace kvtc
