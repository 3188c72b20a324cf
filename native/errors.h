// Every native failure is a KvtcError in JavaScript: C++ code throws KvtcException with one of
// the codes below and the N-API layer converts it (never abort(), never a bare std::exception
// reaching JavaScript).
#pragma once
#include <stdexcept>
#include <string>

namespace kvtc {

// The codes a KvtcError can carry: the mirror of KVTC_ERROR_CODES in src/errors.ts, which says
// what each means and which code a mistake gets (test/unit/error-codes.test.ts checks that the two
// lists agree and that every code native/ and cuda/ raise is in them).
constexpr const char* kErrorCodes[] = {
    "E_OPTIONS", "E_LAYOUT", "E_PROFILE", "E_PROFILE_MISMATCH", "E_CORRUPT", "E_CAPACITY",
    "E_CLOSED",  "E_BACKEND", "E_CALIBRATION", "E_IO", "E_LOCKED", "E_INTERNAL",
};

struct KvtcException : std::runtime_error {
  std::string code;  // one of kErrorCodes
  KvtcException(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

[[noreturn]] inline void fail(const char* code, const std::string& msg) { throw KvtcException(code, msg); }

// Corrupt-input checks are everywhere in the parsers; keep them one line each.
inline void require_corrupt(bool ok, const char* what) {
  if (!ok) fail("E_CORRUPT", std::string("corrupt data: ") + what);
}

}  // namespace kvtc
