#include "proto/codec.h"

#include "base/coding.h"

namespace pororoca::proto {

void Encoder::U16(uint16_t v) {
  std::byte b[2];
  EncodeFixed16(b, v);
  out_.insert(out_.end(), b, b + 2);
}
void Encoder::U32(uint32_t v) {
  std::byte b[4];
  EncodeFixed32(b, v);
  out_.insert(out_.end(), b, b + 4);
}
void Encoder::U64(uint64_t v) {
  std::byte b[8];
  EncodeFixed64(b, v);
  out_.insert(out_.end(), b, b + 8);
}
void Encoder::Var(uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(std::byte((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out_.push_back(std::byte(v));
}
void Encoder::Bytes(std::string_view s) {
  Var(s.size());
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out_.insert(out_.end(), p, p + s.size());
}

bool Decoder::Need(size_t n) {
  if (!ok_) return false;
  if (in_.size() - pos_ < n) {
    ok_ = false;
    fail_pos_ = pos_;
    return false;
  }
  return true;
}

uint8_t Decoder::U8() {
  if (!Need(1)) return 0;
  return std::to_integer<uint8_t>(in_[pos_++]);
}
uint16_t Decoder::U16() {
  if (!Need(2)) return 0;
  uint16_t v = DecodeFixed16(in_.data() + pos_);
  pos_ += 2;
  return v;
}
uint32_t Decoder::U32() {
  if (!Need(4)) return 0;
  uint32_t v = DecodeFixed32(in_.data() + pos_);
  pos_ += 4;
  return v;
}
uint64_t Decoder::U64() {
  if (!Need(8)) return 0;
  uint64_t v = DecodeFixed64(in_.data() + pos_);
  pos_ += 8;
  return v;
}
uint64_t Decoder::Var() {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (!Need(1)) return 0;
    uint8_t b = std::to_integer<uint8_t>(in_[pos_++]);
    if (shift == 63 && b > 1) break;  // would overflow 64 bits
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  ok_ = false;
  fail_pos_ = pos_;
  return 0;
}
std::string Decoder::Bytes(size_t max_len) {
  uint64_t n = Var();
  if (!ok_) return {};
  if (n > max_len) {
    ok_ = false;
    fail_pos_ = pos_;
    return {};
  }
  if (!Need(n)) return {};
  std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
  pos_ += n;
  return s;
}

Status Decoder::Finish(std::string_view what) const {
  if (!ok_) {
    return Status::Protocol(std::string("malformed ") + std::string(what) + " at byte " +
                            std::to_string(fail_pos_));
  }
  if (pos_ != in_.size()) {
    return Status::Protocol(std::string("malformed ") + std::string(what) + ": " +
                            std::to_string(in_.size() - pos_) + " trailing bytes");
  }
  return Status::OK();
}

}  // namespace pororoca::proto
