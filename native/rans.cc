#include "rans.h"

#include <algorithm>
#include <cstring>

#include "errors.h"

namespace kvtc {
namespace {
constexpr uint32_t kRansL = 1u << 23;  // lower bound of the normalized state interval
}

void rans_normalize(const uint64_t counts[256], uint16_t freq_out[256]) {
  uint64_t total = 0;
  for (int s = 0; s < 256; s++) total += counts[s];
  if (total == 0) {
    for (int s = 0; s < 256; s++) freq_out[s] = kRansProbScale / 256;
    return;
  }
  const uint64_t spare = kRansProbScale - 256;  // what is left after the floor of 1 each
  uint32_t sum = 0;
  uint64_t rem[256];
  for (int s = 0; s < 256; s++) {
    const unsigned __int128 scaled = (unsigned __int128)counts[s] * spare;
    freq_out[s] = uint16_t(1 + uint64_t(scaled / total));
    rem[s] = uint64_t(scaled % total);
    sum += freq_out[s];
  }
  int order[256];
  for (int s = 0; s < 256; s++) order[s] = s;
  std::stable_sort(order, order + 256, [&](int a, int b) { return rem[a] > rem[b]; });
  for (int i = 0; sum < kRansProbScale; i = (i + 1) % 256) {
    freq_out[order[i]]++;
    sum++;
  }
}

void rans_build_table(const uint16_t freq[256], RansTable& t) {
  uint32_t cum = 0;
  for (int s = 0; s < 256; s++) {
    if (freq[s] == 0) fail("E_PROFILE", "entropy table has a zero frequency");
    t.freq[s] = freq[s];
    t.cum[s] = uint16_t(cum);
    cum += freq[s];
    if (cum > kRansProbScale) fail("E_PROFILE", "entropy table frequencies exceed the probability scale");
  }
  if (cum != kRansProbScale) fail("E_PROFILE", "entropy table frequencies do not sum to the probability scale");
  for (int s = 0; s < 256; s++) std::memset(t.slot_symbol + t.cum[s], s, t.freq[s]);
}

std::vector<uint8_t> rans_encode(const uint8_t* data, size_t n, const uint16_t* context, size_t period,
                                 const RansTable* tables) {
  // Worst case: every symbol at frequency 1 costs 12 bits; plus the flushed states.
  std::vector<uint8_t> buf(n * 2 + 16);
  uint8_t* end = buf.data() + buf.size();
  uint8_t* ptr = end;
  uint32_t x[kRansLanes];
  for (int l = 0; l < kRansLanes; l++) x[l] = kRansL;
  // Symbols are coded last to first so the decoder runs first to last.
  size_t ci = n == 0 ? 0 : (n - 1) % period;
  for (size_t i = n; i-- > 0;) {
    const RansTable& t = tables[context[ci]];
    ci = ci == 0 ? period - 1 : ci - 1;
    const uint8_t s = data[i];
    const uint32_t f = t.freq[s];
    uint32_t& xl = x[i & (kRansLanes - 1)];
    const uint32_t x_max = ((kRansL >> kRansProbBits) << 8) * f;
    while (xl >= x_max) {
      *--ptr = uint8_t(xl);
      xl >>= 8;
    }
    xl = ((xl / f) << kRansProbBits) + (xl % f) + t.cum[s];
  }
  // The states go first (lane 0 first), little-endian, so the decoder starts by reading them.
  std::vector<uint8_t> out(4 * kRansLanes + size_t(end - ptr));
  for (int l = 0; l < kRansLanes; l++)
    for (int b = 0; b < 4; b++) out[4 * l + b] = uint8_t(x[l] >> (8 * b));
  std::copy(ptr, end, out.begin() + 4 * kRansLanes);
  return out;
}

void rans_decode(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const uint16_t* context, size_t period,
                 const RansTable* tables) {
  require_corrupt(in_len >= 4 * kRansLanes, "entropy-coded section shorter than its states");
  uint32_t x[kRansLanes];
  for (int l = 0; l < kRansLanes; l++) std::memcpy(&x[l], in + 4 * l, 4);
  const uint8_t* p = in + 4 * kRansLanes;
  const uint8_t* end = in + in_len;
  constexpr uint32_t mask = kRansProbScale - 1;
  size_t ci = 0;
  for (size_t i = 0; i < n; i++) {
    const RansTable& t = tables[context[ci]];
    if (++ci == period) ci = 0;
    uint32_t& xl = x[i & (kRansLanes - 1)];
    const uint32_t slot = xl & mask;
    const uint8_t s = t.slot_symbol[slot];
    xl = uint32_t(t.freq[s]) * (xl >> kRansProbBits) + slot - t.cum[s];
    while (xl < kRansL) {
      if (p == end) fail("E_CORRUPT", "corrupt data: entropy-coded section ends early");
      xl = (xl << 8) | *p++;
    }
    out[i] = s;
  }
  require_corrupt(p == end, "entropy-coded section has trailing bytes");
  for (int l = 0; l < kRansLanes; l++) require_corrupt(x[l] == kRansL, "entropy-coded section final state");
}

}  // namespace kvtc
