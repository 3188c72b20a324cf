#include "rans.h"

#include <algorithm>
#include <cstring>

#include "errors.h"

namespace kvtc {
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
    const uint32_t f = freq[s];
    if (f == 0) fail("E_PROFILE", "entropy table has a zero frequency");
    if (cum + f > kRansProbScale) fail("E_PROFILE", "entropy table frequencies exceed the probability scale");
    uint32_t l = 0;
    while ((1u << l) < f) l++;
    RansEncSymbol& e = t.enc[s];
    e.shift = 31 + l;
    e.rcp = uint32_t(((uint64_t(1) << e.shift) + f - 1) / f);
    e.x_max = ((kRansL >> kRansProbBits) << 8) * f;
    e.cum = uint16_t(cum);
    e.cmpl = uint16_t(kRansProbScale - f);
    t.dec[s] = f << kRansDecFreqShift | cum;
    std::memset(t.slot_symbol + cum, s, f);
    cum += f;
  }
  if (cum != kRansProbScale) fail("E_PROFILE", "entropy table frequencies do not sum to the probability scale");
}

namespace {

// rans_get_fast in fewer instructions where the CPU has LZCNT: the new state x is in
// [2^11, 2^31) (see rans_get_fast), so it has 1 to 20 leading zeros and (lz - 1) / 8 is the
// number of bytes to read; the two bytes come in one load. The same states and bytes.
__attribute__((always_inline)) inline uint8_t get_fast_lz(uint32_t& x, const RansTable& t, const uint8_t* in,
                                                           size_t& p) {
  const uint32_t slot = x & (kRansProbScale - 1);
  const uint8_t s = t.slot_symbol[slot];
  const uint32_t d = t.dec[s];
  x = (d >> kRansDecFreqShift) * (x >> kRansProbBits) + slot - (d & kRansDecCumMask);
  const uint32_t nb = uint32_t(__builtin_clz(x) - 1) >> 3;
  uint16_t w16;
  std::memcpy(&w16, in + p, 2);
  const uint32_t w = __builtin_bswap16(w16);  // first byte high
  x = (x << (8 * nb)) | (w >> (16 - 8 * nb));
  p += nb;
  return s;
}

struct StepPlain {
  static uint8_t get(uint32_t& x, const RansTable& t, const uint8_t* in, size_t& p) { return rans_get_fast(x, t, in, p); }
};
struct StepLz {
  __attribute__((always_inline)) static uint8_t get(uint32_t& x, const RansTable& t, const uint8_t* in, size_t& p) {
    return get_fast_lz(x, t, in, p);
  }
};

// The CPU decoder: rans_decode_span's steps, with the table of every byte of a period looked up
// once into `tabs` (period + 3 entries, so a group of four bytes reads them without wrapping).
template <typename Step>
__attribute__((always_inline)) inline int decode_span_cpu(const uint8_t* in, size_t in_len, uint8_t* out, size_t n,
                                                          const RansTable* const* tabs, size_t period) {
  if (in_len < kRansStateBytes) return kRansShort;
  uint32_t x[kRansLanes];
  for (int l = 0; l < kRansLanes; l++)
    x[l] = uint32_t(in[4 * l]) | uint32_t(in[4 * l + 1]) << 8 | uint32_t(in[4 * l + 2]) << 16 |
           uint32_t(in[4 * l + 3]) << 24;
  uint32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
  size_t p = kRansStateBytes, ci = 0, i = 0;
  const size_t full = n - n % kRansLanes;
  if (rans_states_normal(x))
    for (; i < full && in_len - p >= 2 * kRansLanes; i += kRansLanes) {
      const RansTable* const* t = tabs + ci;
      out[i] = Step::get(x0, *t[0], in, p);
      out[i + 1] = Step::get(x1, *t[1], in, p);
      out[i + 2] = Step::get(x2, *t[2], in, p);
      out[i + 3] = Step::get(x3, *t[3], in, p);
      ci += kRansLanes;
      while (ci >= period) ci -= period;
    }
  x[0] = x0, x[1] = x1, x[2] = x2, x[3] = x3;
  auto get = [&](uint32_t& xl, size_t j) {
    const RansTable& t = *tabs[ci];
    if (++ci == period) ci = 0;
    return rans_get_exact(xl, t, in, in_len, p, out[j]);
  };
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

#if defined(__x86_64__)
// BMI2's flag-free variable shifts shorten the renormalization step, LZCNT its byte count.
__attribute__((target("bmi2,lzcnt"))) int decode_span_bmi2(const uint8_t* in, size_t in_len, uint8_t* out, size_t n,
                                                           const RansTable* const* tabs, size_t period) {
  return decode_span_cpu<StepLz>(in, in_len, out, n, tabs, period);
}
#endif

// The table of each byte of one period of contexts.
std::vector<const RansTable*> period_tables(const uint16_t* context, size_t period, const RansTable* tables) {
  std::vector<const RansTable*> tabs(period + kRansLanes - 1);
  for (size_t j = 0; j < tabs.size(); j++) tabs[j] = &tables[context[j % period]];
  return tabs;
}

}  // namespace

int rans_decode_span_cpu(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const RansTable* const* tabs,
                         size_t period) {
#if defined(__x86_64__)
  static const bool bmi2 = __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("lzcnt");
  if (bmi2) return decode_span_bmi2(in, in_len, out, n, tabs, period);
#endif
  return decode_span_cpu<StepPlain>(in, in_len, out, n, tabs, period);
}

std::vector<uint8_t> rans_encode(const uint8_t* data, size_t n, const uint16_t* context, size_t period,
                                 const RansTable* tables) {
  std::vector<uint8_t> buf(rans_span_bound(n));
  const size_t at = rans_encode_span(data, n, context, period, tables, buf.data(), buf.size());
  if (at > buf.size()) fail("E_INTERNAL", "entropy coder exceeded its worst-case bound");
  buf.erase(buf.begin(), buf.begin() + ptrdiff_t(at));
  return buf;
}

void rans_check_status(int status) {
  switch (status) {
    case kRansOk: return;
    case kRansShort: fail("E_CORRUPT", "corrupt data: entropy-coded stream shorter than its states");
    case kRansEndsEarly: fail("E_CORRUPT", "corrupt data: entropy-coded section ends early");
    case kRansTrailing: fail("E_CORRUPT", "corrupt data: entropy-coded section has trailing bytes");
    default: fail("E_CORRUPT", "corrupt data: entropy-coded section final state");
  }
}

void rans_decode(const uint8_t* in, size_t in_len, uint8_t* out, size_t n, const uint16_t* context, size_t period,
                 const RansTable* tables) {
  const std::vector<const RansTable*> tabs = period_tables(context, period, tables);
  rans_check_status(rans_decode_span_cpu(in, in_len, out, n, tabs.data(), period));
}

std::vector<uint8_t> rans_encode_rows(const uint8_t* rows, uint32_t nrows, uint32_t row_bytes, uint32_t chunk_rows,
                                      const uint16_t* context, const RansTable* tables) {
  const uint32_t count = (nrows + chunk_rows - 1) / chunk_rows;
  std::vector<uint8_t> out(rans_chunk_table_bytes(count));
  std::vector<uint32_t> lengths(count);
  std::vector<uint8_t> buf(rans_span_bound(size_t(chunk_rows) * row_bytes));
  for (uint32_t c = 0; c < count; c++) {
    const uint32_t r0 = c * chunk_rows, nr = std::min(chunk_rows, nrows - r0);
    const size_t at = rans_encode_span(rows + size_t(r0) * row_bytes, size_t(nr) * row_bytes, context, row_bytes,
                                       tables, buf.data(), buf.size());
    if (at > buf.size()) fail("E_INTERNAL", "entropy coder exceeded its worst-case bound");
    lengths[c] = uint32_t(buf.size() - at);
    out.insert(out.end(), buf.begin() + ptrdiff_t(at), buf.end());
  }
  rans_write_chunk_table(chunk_rows, lengths.data(), count, out.data());
  return out;
}

void rans_write_chunk_table(uint32_t chunk_rows, const uint32_t* lengths, uint32_t count, uint8_t* out) {
  std::memcpy(out, &chunk_rows, 4);
  std::memcpy(out + 4, &count, 4);
  if (count > 0) std::memcpy(out + 8, lengths, 4 * size_t(count));
}

RansChunks rans_parse_chunks(const uint8_t* in, size_t in_len, uint32_t nrows) {
  require_corrupt(in_len >= 8, "entropy-coded section shorter than its chunk table");
  RansChunks ch;
  uint32_t count;
  std::memcpy(&ch.chunk_rows, in, 4);
  std::memcpy(&count, in + 4, 4);
  require_corrupt(ch.chunk_rows > 0 && count == (uint64_t(nrows) + ch.chunk_rows - 1) / ch.chunk_rows,
                  "entropy-coded section chunk count");
  require_corrupt(8 + 4 * uint64_t(count) <= in_len, "entropy-coded section chunk table");
  ch.offset.resize(size_t(count) + 1);
  size_t at = 8 + 4 * size_t(count);
  for (uint32_t c = 0; c < count; c++) {
    uint32_t len;
    std::memcpy(&len, in + 8 + 4 * size_t(c), 4);
    ch.offset[c] = at;
    require_corrupt(len <= in_len - at, "entropy-coded chunk length");
    at += len;
  }
  ch.offset[count] = at;
  require_corrupt(at == in_len, "entropy-coded section has trailing bytes");
  return ch;
}

void rans_decode_rows(const uint8_t* in, size_t in_len, uint8_t* out, uint32_t nrows, uint32_t row_bytes,
                      const uint16_t* context, const RansTable* tables) {
  const RansChunks ch = rans_parse_chunks(in, in_len, nrows);
  const std::vector<const RansTable*> tabs = period_tables(context, row_bytes, tables);
  for (size_t c = 0; c + 1 < ch.offset.size(); c++) {
    const uint32_t r0 = uint32_t(c) * ch.chunk_rows, nr = std::min(ch.chunk_rows, nrows - r0);
    rans_check_status(rans_decode_span_cpu(in + ch.offset[c], ch.offset[c + 1] - ch.offset[c],
                                           out + size_t(r0) * row_bytes, size_t(nr) * row_bytes, tabs.data(), row_bytes));
  }
}

}  // namespace kvtc
