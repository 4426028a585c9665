// Bounds-checked binary encoding for protocol messages: fixed-width little-endian integers, LEB128
// varints and length-prefixed byte strings. Decoder never reads past its input; every failure is
// sticky and reported once as kProtocol, so hostile input cannot crash or over-read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pororoca/checksum.h"
#include "pororoca/status.h"

namespace pororoca::proto {

class Encoder {
 public:
  void U8(uint8_t v) { out_.push_back(std::byte(v)); }
  void U16(uint16_t v);
  void U32(uint32_t v);
  void U64(uint64_t v);
  void Var(uint64_t v);
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Bytes(std::string_view s);  // varint length + bytes
  void Raw(std::span<const std::byte> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Digest(const Digest128& d) {
    U64(d.hi);
    U64(d.lo);
  }
  std::vector<std::byte>& buffer() { return out_; }
  std::vector<std::byte> Take() { return std::move(out_); }
  size_t size() const { return out_.size(); }

 private:
  std::vector<std::byte> out_;
};

class Decoder {
 public:
  explicit Decoder(std::span<const std::byte> in) : in_(in) {}
  uint8_t U8();
  uint16_t U16();
  uint32_t U32();
  uint64_t U64();
  uint64_t Var();
  int64_t I64() { return static_cast<int64_t>(U64()); }
  // Reads a varint-prefixed string of at most max_len bytes.
  std::string Bytes(size_t max_len = 1 << 20);
  Digest128 Digest() {
    Digest128 d;
    d.hi = U64();
    d.lo = U64();
    return d;
  }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }
  // kProtocol naming `what` and the offset of the first failure; OK if every read succeeded.
  Status Finish(std::string_view what) const;

 private:
  bool Need(size_t n);
  std::span<const std::byte> in_;
  size_t pos_ = 0;
  bool ok_ = true;
  size_t fail_pos_ = 0;
};

}  // namespace pororoca::proto
