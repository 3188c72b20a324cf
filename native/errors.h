// Every native failure is a KvtcError in JavaScript: C++ code throws KvtcException with one of
// the codes below and the N-API layer converts it (never abort(), never a bare std::exception
// reaching JavaScript).
#pragma once
#include <stdexcept>
#include <string>

namespace kvtc {

struct KvtcException : std::runtime_error {
  std::string code;  // "E_LAYOUT", "E_CORRUPT", ... (same strings as src/errors.ts)
  KvtcException(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

[[noreturn]] inline void fail(const char* code, const std::string& msg) { throw KvtcException(code, msg); }

// Corrupt-input checks are everywhere in the parsers; keep them one line each.
inline void require_corrupt(bool ok, const char* what) {
  if (!ok) fail("E_CORRUPT", std::string("corrupt data: ") + what);
}

}  // namespace kvtc
