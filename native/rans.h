// A byte-oriented rANS entropy coder with static, context-selected frequency tables (the tables
// come from calibration and live in the profile, like JPEG's Huffman tables, so blobs carry none).
// Four interleaved states let the decoder's dependency chains overlap. 32-bit states, 12-bit
// probabilities, renormalization one byte at a time.
//
// A coded section is cut into chunks of whole rows, each an independent stream, so a GPU (one
// thread per chunk) or several CPU threads can code a section in parallel. The span coders below
// are the one definition of a stream that the CPU codec and the CUDA kernels share.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "hd.h"

namespace kvtc {

constexpr uint32_t kRansProbBits = 12;
constexpr uint32_t kRansProbScale = 1u << kRansProbBits;
constexpr int kRansLanes = 4;
constexpr uint32_t kRansL = 1u << 23;  // lower bound of the normalized state interval
constexpr size_t kRansStateBytes = 4 * kRansLanes;
// Target raw bytes per chunk: small enough for tens of thousands of GPU threads on a long
// context, large enough that the 16 state bytes and 4 length bytes per chunk cost under 1%.
constexpr uint32_t kRansChunkTargetBytes = 4096;

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

// Worst case of one coded stream: a byte never costs more than 2 bytes, plus the states.
KVTC_HD size_t rans_span_bound(size_t n) { return 2 * n + kRansStateBytes; }

// Byte i of a stream is coded by lane i % 4. The loops below take the lanes four at a time with
// constant indices (and the last n % 4 bytes one by one, also by constant index), so on a GPU
// the four states stay in registers: x[i & 3] would put them in local memory.
static_assert(kRansLanes == 4, "the span coders are unrolled for four lanes");

// Encodes data[0..n) (byte i with tables[context[i % period]]) into the tail of out[0..cap):
// the stream is [4 states, little-endian, lane 0 first][renormalization bytes] and ends at
// out + cap. Returns the stream's start offset in out, or cap + 1 when cap is too small.
KVTC_HD size_t rans_encode_span(const uint8_t* data, size_t n, const uint16_t* context, size_t period,
                                const RansTable* tables, uint8_t* out, size_t cap) {
  size_t at = cap;
  uint32_t x[kRansLanes];
  for (int l = 0; l < kRansLanes; l++) x[l] = kRansL;
  // Symbols are coded last to first so the decoder runs first to last.
  size_t ci = n == 0 ? 0 : (n - 1) % period;
  auto put = [&](uint32_t& xl, size_t i) {
    const RansTable& t = tables[context[ci]];
    ci = ci == 0 ? period - 1 : ci - 1;
    const uint8_t s = data[i];
    const uint32_t f = t.freq[s];
    const uint32_t x_max = ((kRansL >> kRansProbBits) << 8) * f;
    while (xl >= x_max) {
      if (at == 0) return false;
      out[--at] = uint8_t(xl);
      xl >>= 8;
    }
    xl = ((xl / f) << kRansProbBits) + (xl % f) + t.cum[s];
    return true;
  };
  const size_t full = n - n % kRansLanes;  // bytes [full, n) first, from the last
  if (n - full > 2 && !put(x[2], full + 2)) return cap + 1;
  if (n - full > 1 && !put(x[1], full + 1)) return cap + 1;
  if (n - full > 0 && !put(x[0], full)) return cap + 1;
  for (size_t i = full; i > 0; i -= kRansLanes)
    if (!put(x[3], i - 1) || !put(x[2], i - 2) || !put(x[1], i - 3) || !put(x[0], i - 4)) return cap + 1;
  if (at < kRansStateBytes) return cap + 1;
  at -= kRansStateBytes;
  for (int l = 0; l < kRansLanes; l++)
    for (int b = 0; b < 4; b++) out[at + 4 * l + b] = uint8_t(x[l] >> (8 * b));
  return at;
}

enum RansStatus : int { kRansOk = 0, kRansShort = 1, kRansEndsEarly = 2, kRansTrailing = 3, kRansBadFinal = 4 };

// Decodes exactly n bytes of one stream in[0..in_len) into out. Returns a RansStatus: anything
// but kRansOk means the stream is corrupt.
KVTC_HD int rans_decode_span(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const uint16_t* context,
                             size_t period, const RansTable* tables) {
  if (in_len < kRansStateBytes) return kRansShort;
  uint32_t x[kRansLanes];
  for (int l = 0; l < kRansLanes; l++)
    x[l] = uint32_t(in[4 * l]) | uint32_t(in[4 * l + 1]) << 8 | uint32_t(in[4 * l + 2]) << 16 |
           uint32_t(in[4 * l + 3]) << 24;
  size_t p = kRansStateBytes;
  constexpr uint32_t mask = kRansProbScale - 1;
  size_t ci = 0;
  auto get = [&](uint32_t& xl, size_t i) {
    const RansTable& t = tables[context[ci]];
    if (++ci == period) ci = 0;
    const uint32_t slot = xl & mask;
    const uint8_t s = t.slot_symbol[slot];
    xl = uint32_t(t.freq[s]) * (xl >> kRansProbBits) + slot - t.cum[s];
    while (xl < kRansL) {
      if (p == in_len) return false;
      xl = (xl << 8) | in[p++];
    }
    out[i] = s;
    return true;
  };
  const size_t full = n - n % kRansLanes;
  for (size_t i = 0; i < full; i += kRansLanes)
    if (!get(x[0], i) || !get(x[1], i + 1) || !get(x[2], i + 2) || !get(x[3], i + 3)) return kRansEndsEarly;
  if (n - full > 0 && !get(x[0], full)) return kRansEndsEarly;
  if (n - full > 1 && !get(x[1], full + 1)) return kRansEndsEarly;
  if (n - full > 2 && !get(x[2], full + 2)) return kRansEndsEarly;
  if (p != in_len) return kRansTrailing;
  for (int l = 0; l < kRansLanes; l++)
    if (x[l] != kRansL) return kRansBadFinal;
  return kRansOk;
}

// The chunk table of a chunked section: [u32 chunkRows][u32 chunkCount][u32 length per chunk]
// followed by the streams.
struct RansChunks {
  uint32_t chunk_rows = 0;
  std::vector<size_t> offset;  // chunkCount + 1 stream boundaries, relative to the section
};

// Rows per chunk for rows of row_bytes.
inline uint32_t rans_chunk_rows(uint32_t row_bytes) {
  return row_bytes >= kRansChunkTargetBytes ? 1 : kRansChunkTargetBytes / row_bytes;
}

// Entropy-codes nrows rows of row_bytes (byte j of a row with tables[context[j]]) as a chunked
// section of chunk_rows rows per chunk.
std::vector<uint8_t> rans_encode_rows(const uint8_t* rows, uint32_t nrows, uint32_t row_bytes, uint32_t chunk_rows,
                                      const uint16_t* context, const RansTable* tables);

// Parses and validates the chunk table of a chunked section of nrows rows; throws E_CORRUPT.
RansChunks rans_parse_chunks(const uint8_t* in, size_t in_len, uint32_t nrows);

// Decodes a chunked section into nrows * row_bytes bytes at out; throws E_CORRUPT.
void rans_decode_rows(const uint8_t* in, size_t in_len, uint8_t* out, uint32_t nrows, uint32_t row_bytes,
                      const uint16_t* context, const RansTable* tables);

// Throws E_CORRUPT with the reason for a RansStatus other than kRansOk.
void rans_check_status(int status);

// Encodes data[0..n) as one stream: byte i is coded with tables[context[i % period]]. Returns the coded bytes.
std::vector<uint8_t> rans_encode(const uint8_t* data, size_t n, const uint16_t* context, size_t period,
                                 const RansTable* tables);

// Decodes one stream of exactly n bytes into out from in[0..in_len). Throws E_CORRUPT if the input runs out,
// has bytes left over, or the final states are not the encoder's initial ones.
void rans_decode(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const uint16_t* context, size_t period,
                 const RansTable* tables);

}  // namespace kvtc
