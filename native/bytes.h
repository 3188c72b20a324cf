// Little-endian byte writer and bounds-checked reader shared by the profile and blob formats.
// The reader throws KvtcException with the caller's code (E_CORRUPT for blobs, E_PROFILE for
// profiles) instead of reading past the end.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"

namespace kvtc {

class ByteWriter {
 public:
  std::vector<uint8_t> buf;
  template <typename T>
  void put(T v) {
    const size_t at = buf.size();
    buf.resize(at + sizeof(T));
    std::memcpy(buf.data() + at, &v, sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    const size_t at = buf.size();
    buf.resize(at + n);
    if (n) std::memcpy(buf.data() + at, p, n);
  }
  template <typename T>
  void array(const std::vector<T>& v) { bytes(v.data(), v.size() * sizeof(T)); }
  void align(size_t a) { buf.resize((buf.size() + a - 1) / a * a, 0); }
};

class ByteReader {
 public:
  ByteReader(const uint8_t* p, size_t n, const char* code) : p_(p), n_(n), code_(code) {}
  template <typename T>
  T get(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }
  const uint8_t* take(size_t n, const char* what) {
    if (n > n_ - pos_) fail(code_, std::string("truncated data: ") + what);
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  template <typename T>
  void array(std::vector<T>& out, size_t count, const char* what) {
    if (count > (n_ - pos_) / sizeof(T)) fail(code_, std::string("truncated data: ") + what);
    out.resize(count);
    if (count) std::memcpy(out.data(), take(count * sizeof(T), what), count * sizeof(T));
  }
  void align(size_t a) {
    const size_t to = (pos_ + a - 1) / a * a;
    if (to > n_) fail(code_, "truncated data: padding");
    pos_ = to;
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }
  const char* code() const { return code_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const char* code_;
};

}  // namespace kvtc
