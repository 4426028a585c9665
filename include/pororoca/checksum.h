// Checksums: XXH3-128 digests of chunks and files.
//
// A chunk digest is XXH3-128 over the chunk's bytes. A file digest is XXH3-128 over the ordered
// sequence of its chunk digests, each in canonical (big-endian) 16-byte form, so a receiver can
// compute it from the chunk digests it verified without a second read pass. An empty file has the
// digest of the empty sequence. Values are plain data; FileDigester is not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "pororoca/status.h"

namespace pororoca {

struct Digest128 {
  uint64_t hi = 0;
  uint64_t lo = 0;
  bool operator==(const Digest128&) const = default;
  // 32 lowercase hex digits, hi first (the same text `xxhsum -H2` prints for a single buffer).
  std::string ToHex() const;
  static Result<Digest128> FromHex(std::string_view hex);
};

Digest128 Xxh3_128(std::span<const std::byte> data);

// Streaming XXH3-128: Update() over pieces gives the same digest as Xxh3_128 over their concatenation.
class Hasher128 {
 public:
  Hasher128();
  ~Hasher128();
  Hasher128(const Hasher128&) = delete;
  Hasher128& operator=(const Hasher128&) = delete;
  void Reset();
  void Update(std::span<const std::byte> data);
  Digest128 Finish() const;

 private:
  void* state_;
};

// Accumulates ordered chunk digests into a file digest.
class FileDigester {
 public:
  FileDigester();
  ~FileDigester();
  FileDigester(const FileDigester&) = delete;
  FileDigester& operator=(const FileDigester&) = delete;
  void AddChunk(const Digest128& chunk_digest);
  Digest128 Finish() const;

 private:
  void* state_;  // XXH3_state_t, kept opaque so xxhash.h stays out of the public headers
};

}  // namespace pororoca
