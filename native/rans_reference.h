// The entropy coder as it was first written: byte-at-a-time renormalization loops, a division
// per encoded byte and a slot -> symbol -> (freq, cum) lookup per decoded one. Kept as the oracle
// the tests hold the fast span coders (rans.h) to, byte for byte and status for status, and as
// the baseline of bench/kernels.bench.ts. Not used by the codec.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "rans.h"

namespace kvtc {

struct RansRefTable {
  uint16_t freq[256];
  uint16_t cum[256];
  uint8_t slot_symbol[kRansProbScale];
};

// freq: 256 normalized frequencies (validated by rans_build_table beforehand).
inline void rans_ref_build(const uint16_t freq[256], RansRefTable& t) {
  uint32_t cum = 0;
  for (int s = 0; s < 256; s++) {
    t.freq[s] = freq[s];
    t.cum[s] = uint16_t(cum);
    cum += freq[s];
  }
  for (int s = 0; s < 256; s++) std::memset(t.slot_symbol + t.cum[s], s, t.freq[s]);
}

// Same contract as rans_encode_span.
inline size_t rans_ref_encode_span(const uint8_t* data, size_t n, const uint16_t* context, size_t period,
                                   const RansRefTable* tables, uint8_t* out, size_t cap) {
  size_t at = cap;
  uint32_t x[kRansLanes];
  for (int l = 0; l < kRansLanes; l++) x[l] = kRansL;
  size_t ci = n == 0 ? 0 : (n - 1) % period;
  auto put = [&](uint32_t& xl, size_t i) {
    const RansRefTable& t = tables[context[ci]];
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
  const size_t full = n - n % kRansLanes;
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

// Same contract as rans_decode_span.
inline int rans_ref_decode_span(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const uint16_t* context,
                                size_t period, const RansRefTable* tables) {
  if (in_len < kRansStateBytes) return kRansShort;
  uint32_t x[kRansLanes];
  for (int l = 0; l < kRansLanes; l++)
    x[l] = uint32_t(in[4 * l]) | uint32_t(in[4 * l + 1]) << 8 | uint32_t(in[4 * l + 2]) << 16 |
           uint32_t(in[4 * l + 3]) << 24;
  size_t p = kRansStateBytes;
  constexpr uint32_t mask = kRansProbScale - 1;
  size_t ci = 0;
  auto get = [&](uint32_t& xl, size_t i) {
    const RansRefTable& t = tables[context[ci]];
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

}  // namespace kvtc
