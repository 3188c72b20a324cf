// CRC-32C (Castagnoli), the checksum over every blob and profile. Uses the SSE4.2 instruction
// when the CPU has it (checked at run time) and a table otherwise; both give the same value.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kvtc {

// crc: the running value (0 to start); returns the updated CRC of data[0..len).
uint32_t crc32c(uint32_t crc, const void* data, size_t len);

}  // namespace kvtc
