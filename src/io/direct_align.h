// The O_DIRECT length rule: a transfer through an O_DIRECT descriptor covers a whole number of
// kDirectAlign blocks (pororoca/storage.h), so a short tail is read or written rounded up and the
// extra bytes are ignored (read) or cut off afterwards with ftruncate (write).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pororoca/storage.h"

namespace pororoca::io {

// `len` rounded up to the next multiple of kDirectAlign (len itself when it is one). `len` is at
// most a chunk, so the result fits in 32 bits.
constexpr uint32_t RoundUpToDirectAlign(size_t len) {
  return static_cast<uint32_t>((len + kDirectAlign - 1) / kDirectAlign * kDirectAlign);
}

}  // namespace pororoca::io
