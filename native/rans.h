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

// What the encoder needs of one symbol, in one 16-byte entry so a step touches one cache line.
// x / freq is computed as (x * rcp) >> shift, exact for every encoder state (all are < 2^31):
// rcp = ceil(2^(31 + l) / freq) with 2^l >= freq is the Granlund-Montgomery multiplier for
// 31-bit dividends, and it fits 32 bits. The new state is then x + q * cmpl + cum, which is
// (q << kRansProbBits) + x % freq + cum without the remainder.
struct RansEncSymbol {
  uint32_t rcp;
  uint32_t x_max;  // renormalize (emit a byte) while x >= x_max = ((kRansL >> kRansProbBits) << 8) * freq
  uint16_t cum;
  uint16_t cmpl;   // kRansProbScale - freq
  uint32_t shift;  // 31 + l
};

// Decoding: slot -> symbol, then one 32-bit load of that symbol's freq << 20 | cum.
constexpr uint32_t kRansDecFreqShift = 20, kRansDecCumMask = (1u << kRansDecFreqShift) - 1;

// 9 KiB per context (the decoder's part, 5 KiB, is what stays hot: a row cycles through all
// of its contexts, so the tables compete for L1).
struct RansTable {
  RansEncSymbol enc[256];
  uint32_t dec[256];
  uint8_t slot_symbol[kRansProbScale];
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

// One encoding step of the symbol s (table t) into state x, emitting renormalization bytes below
// out[at]. The state is < 2^31 and x_max >= 2^19, so at most two bytes leave per step.
KVTC_HD void rans_put_fast(uint32_t& x, const RansEncSymbol& e, uint8_t* out, size_t& at) {
  // Branch-free: both candidate bytes are written, at moves by the count really emitted, and a
  // byte written but not emitted lies below the stream and is overwritten later (by a later
  // byte or the states), so the stream is the same as the byte-at-a-time loop's.
  const uint32_t nb = uint32_t(x >= e.x_max) + uint32_t((x >> 8) >= e.x_max);
  out[at - 1] = uint8_t(x);
  out[at - 2] = uint8_t(x >> 8);
  at -= nb;
  x >>= 8 * nb;
  const uint32_t q = uint32_t((uint64_t(x) * e.rcp) >> e.shift);
  x += q * e.cmpl + e.cum;
}

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
  auto sym = [&](size_t i) -> const RansEncSymbol& {
    const RansEncSymbol& e = tables[context[ci]].enc[data[i]];
    ci = ci == 0 ? period - 1 : ci - 1;
    return e;
  };
  // Near the start of the buffer, byte by byte with a bound check on every byte.
  auto put = [&](uint32_t& xl, size_t i) {
    const RansEncSymbol& e = sym(i);
    while (xl >= e.x_max) {
      if (at == 0) return false;
      out[--at] = uint8_t(xl);
      xl >>= 8;
    }
    const uint32_t q = uint32_t((uint64_t(xl) * e.rcp) >> e.shift);
    xl += q * e.cmpl + e.cum;
    return true;
  };
  const size_t full = n - n % kRansLanes;  // bytes [full, n) first, from the last
  if (n - full > 2 && !put(x[2], full + 2)) return cap + 1;
  if (n - full > 1 && !put(x[1], full + 1)) return cap + 1;
  if (n - full > 0 && !put(x[0], full)) return cap + 1;
  size_t i = full;
  // Four steps emit at most 8 bytes: while that much room is left, no step needs a check.
  for (; i > 0 && at >= 2 * kRansLanes; i -= kRansLanes) {
    rans_put_fast(x[3], sym(i - 1), out, at);
    rans_put_fast(x[2], sym(i - 2), out, at);
    rans_put_fast(x[1], sym(i - 3), out, at);
    rans_put_fast(x[0], sym(i - 4), out, at);
  }
  for (; i > 0; i -= kRansLanes)
    if (!put(x[3], i - 1) || !put(x[2], i - 2) || !put(x[1], i - 3) || !put(x[0], i - 4)) return cap + 1;
  if (at < kRansStateBytes) return cap + 1;
  at -= kRansStateBytes;
  for (int l = 0; l < kRansLanes; l++)
    for (int b = 0; b < 4; b++) out[at + 4 * l + b] = uint8_t(x[l] >> (8 * b));
  return at;
}

enum RansStatus : int { kRansOk = 0, kRansShort = 1, kRansEndsEarly = 2, kRansTrailing = 3, kRansBadFinal = 4 };

// One decoding step of state x with table t; returns the symbol. For kRansL <= x < 2^31 the
// new state is >= 2^11 (freq >= 1, x >> 12 >= 2^11) and again < 2^31, so renormalization takes
// exactly (x < 2^23) + (x < 2^15) bytes: none, one, or two, read without a branch from in[p],
// in[p + 1] (the caller guarantees both exist).
KVTC_HD uint8_t rans_get_fast(uint32_t& x, const RansTable& t, const uint8_t* in, size_t& p) {
  const uint32_t slot = x & (kRansProbScale - 1);
  const uint8_t s = t.slot_symbol[slot];
  const uint32_t d = t.dec[s];
  x = (d >> kRansDecFreqShift) * (x >> kRansProbBits) + slot - (d & kRansDecCumMask);
  const uint32_t nb = uint32_t(x < kRansL) + uint32_t(x < (kRansL >> 8));
  const uint32_t w = uint32_t(in[p]) << 8 | in[p + 1];  // the next two bytes, first one high
  x = (x << (8 * nb)) | (w >> (16 - 8 * nb));
  p += nb;
  return s;
}

// Whether the branch-free steps apply from these initial states: a stream's states start (and
// stay) in [kRansL, 2^31); a corrupt one's may be anything and takes the exact loop instead.
KVTC_HD bool rans_states_normal(const uint32_t x[kRansLanes]) {
  bool ok = true;
  for (int l = 0; l < kRansLanes; l++) ok = ok && x[l] >= kRansL && x[l] < (1u << 31);
  return ok;
}

// The byte-at-a-time step, exact for any state; false when the input runs out.
KVTC_HD bool rans_get_exact(uint32_t& x, const RansTable& t, const uint8_t* in, size_t in_len, size_t& p,
                            uint8_t& sym) {
  const uint32_t slot = x & (kRansProbScale - 1);
  const uint8_t s = t.slot_symbol[slot];
  const uint32_t d = t.dec[s];
  x = (d >> kRansDecFreqShift) * (x >> kRansProbBits) + slot - (d & kRansDecCumMask);
  while (x < kRansL) {
    if (p == in_len) return false;
    x = (x << 8) | in[p++];
  }
  sym = s;
  return true;
}

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
  size_t ci = 0;
  auto table = [&]() -> const RansTable& {
    const RansTable& t = tables[context[ci]];
    if (++ci == period) ci = 0;
    return t;
  };
  auto get = [&](uint32_t& xl, size_t i) { return rans_get_exact(xl, table(), in, in_len, p, out[i]); };
  const size_t full = n - n % kRansLanes;
  size_t i = 0;
  // Four steps read at most 8 bytes: while that many are left, they need no bound checks.
  if (rans_states_normal(x))
    for (; i < full && in_len - p >= 2 * kRansLanes; i += kRansLanes) {
      out[i] = rans_get_fast(x[0], table(), in, p);
      out[i + 1] = rans_get_fast(x[1], table(), in, p);
      out[i + 2] = rans_get_fast(x[2], table(), in, p);
      out[i + 3] = rans_get_fast(x[3], table(), in, p);
    }
  for (; i < full; i += kRansLanes)
    if (!get(x[0], i) || !get(x[1], i + 1) || !get(x[2], i + 2) || !get(x[3], i + 3)) return kRansEndsEarly;
  if (n - full > 0 && !get(x[0], full)) return kRansEndsEarly;
  if (n - full > 1 && !get(x[1], full + 1)) return kRansEndsEarly;
  if (n - full > 2 && !get(x[2], full + 2)) return kRansEndsEarly;
  if (p != in_len) return kRansTrailing;
  for (int l = 0; l < kRansLanes; l++)
    if (x[l] != kRansL) return kRansBadFinal;
  return kRansOk;
}

// rans_decode_span on the CPU, the same results: tabs[j] is the table of byte j of a period
// (period + 3 entries, j = period.. repeating the first ones), so no step looks up a context.
// rans_decode and rans_decode_rows decode with it.
int rans_decode_span_cpu(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const RansTable* const* tabs,
                         size_t period);

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

// Bytes of the chunk table for `count` chunks.
inline size_t rans_chunk_table_bytes(uint32_t count) { return 8 + 4 * size_t(count); }

// Writes the chunk table (chunk_rows, count, lengths[0..count)) at out[0..rans_chunk_table_bytes):
// the one writer of the table, for the CPU coder and the GPU pipeline alike.
void rans_write_chunk_table(uint32_t chunk_rows, const uint32_t* lengths, uint32_t count, uint8_t* out);

// Whether a section keeps its entropy-coded form of coded_bytes (chunk table included) rather
// than its raw_bytes of rows: only when smaller — a blob never stores an expansion.
inline bool rans_keeps(uint64_t coded_bytes, uint64_t raw_bytes) { return coded_bytes < raw_bytes; }

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
