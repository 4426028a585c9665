#include "proto/wire.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "base/coding.h"
#include "base/hex.h"
#include "proto/codec.h"

namespace pororoca::proto {
namespace {

constexpr size_t kMaxEntriesPerBatch = 1 << 20;

std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Codes from newer peers that we do not know become kInternal.
Code CodeFromWire(uint8_t c) {
  return c <= static_cast<uint8_t>(Code::kUnauthenticated) ? static_cast<Code>(c) : Code::kInternal;
}

}  // namespace

std::vector<std::byte> EncodeControlFrame(MsgType type, std::span<const std::byte> body) {
  std::vector<std::byte> out(5 + body.size());
  EncodeFixed32(out.data(), static_cast<uint32_t>(body.size() + 1));
  out[4] = std::byte(static_cast<uint8_t>(type));
  if (!body.empty()) std::memcpy(out.data() + 5, body.data(), body.size());
  return out;
}

std::vector<std::byte> EncodeJsonFrame(MsgType type, const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return EncodeControlFrame(type, AsBytes(s));
}

Result<nlohmann::json> DecodeJsonBody(const ControlFrame& f) {
  auto j = nlohmann::json::parse(reinterpret_cast<const char*>(f.body.data()),
                                 reinterpret_cast<const char*>(f.body.data()) + f.body.size(), nullptr,
                                 /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Protocol("control message " + std::to_string(int(f.type)) + " is not a JSON object");
  }
  return j;
}

Status ValidateRelativePath(std::string_view path) {
  if (path.empty()) return Status::OK();
  if (path.size() > kMaxPathBytes) return Status::InvalidArgument("path longer than 4096 bytes");
  if (path.front() == '/') return Status::InvalidArgument("path is absolute: " + std::string(path));
  if (path.find('\0') != std::string_view::npos) return Status::InvalidArgument("path contains NUL");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view comp = path.substr(start, end - start);
    if (comp.empty() || comp == "." || comp == "..") {
      return Status::InvalidArgument("path has an empty, '.' or '..' component: " + std::string(path));
    }
    if (comp.size() > 255) return Status::InvalidArgument("path component longer than 255 bytes");
    start = end + 1;
  }
  return Status::OK();
}

std::vector<std::byte> EncodeFiles(const std::vector<FileEntry>& entries) {
  Encoder e;
  e.Var(entries.size());
  for (const auto& f : entries) {
    e.Var(f.id);
    e.U8(static_cast<uint8_t>(f.type));
    e.Bytes(f.path);
    e.Var(f.size);
    e.Var(f.mode);
    e.I64(f.mtime_ns);
    if (f.type == EntryType::kSymlink || f.type == EntryType::kHardLink) e.Bytes(f.link_target);
  }
  return e.Take();
}

Result<std::vector<FileEntry>> DecodeFiles(std::span<const std::byte> body) {
  Decoder d(body);
  uint64_t n = d.Var();
  if (n > kMaxEntriesPerBatch || n > body.size()) return Status::Protocol("FILES batch count out of range");
  std::vector<FileEntry> out;
  out.reserve(n);
  for (uint64_t i = 0; i < n && d.ok(); ++i) {
    FileEntry f;
    f.id = d.Var();
    uint8_t t = d.U8();
    if (t > 3) return Status::Protocol("FILES entry has unknown type " + std::to_string(t));
    f.type = static_cast<EntryType>(t);
    f.path = d.Bytes(kMaxPathBytes);
    f.size = d.Var();
    f.mode = static_cast<uint32_t>(d.Var() & 07777);
    f.mtime_ns = d.I64();
    if (f.type == EntryType::kSymlink || f.type == EntryType::kHardLink)
      f.link_target = d.Bytes(kMaxPathBytes);
    if (!d.ok()) break;
    Status s = ValidateRelativePath(f.path);
    if (!s.ok()) return Status::Protocol("FILES entry: " + std::string(s.message()));
    if (f.type == EntryType::kHardLink) {
      // Another entry of the same transfer: a clean relative path, not the root, not itself.
      s = ValidateRelativePath(f.link_target);
      if (!s.ok() || f.link_target.empty() || f.link_target == f.path || f.path.empty()) {
        return Status::Protocol("FILES hard link entry names a bad target: " +
                                (s.ok() ? std::string("the root or itself") : std::string(s.message())));
      }
    }
    out.push_back(std::move(f));
  }
  PORO_RETURN_IF_ERROR(d.Finish("FILES"));
  return out;
}

std::vector<std::byte> EncodePlan(const std::vector<PlanEntry>& entries) {
  Encoder e;
  e.Var(entries.size());
  for (const auto& p : entries) {
    e.Var(p.id);
    e.U8(static_cast<uint8_t>(p.action));
    if (p.action == PlanAction::kFail) {
      e.U8(static_cast<uint8_t>(p.code));
      e.Bytes(p.message);
    } else if (p.action == PlanAction::kResume) {
      e.Var(p.have.size());
      for (const auto& [idx, dig] : p.have) {
        e.Var(idx);
        e.Digest(dig);
      }
    }
  }
  return e.Take();
}

Result<std::vector<PlanEntry>> DecodePlan(std::span<const std::byte> body) {
  Decoder d(body);
  uint64_t n = d.Var();
  if (n > kMaxEntriesPerBatch || n > body.size()) return Status::Protocol("PLAN batch count out of range");
  std::vector<PlanEntry> out;
  out.reserve(n);
  for (uint64_t i = 0; i < n && d.ok(); ++i) {
    PlanEntry p;
    p.id = d.Var();
    uint8_t a = d.U8();
    if (a > 4) return Status::Protocol("PLAN entry has unknown action " + std::to_string(a));
    p.action = static_cast<PlanAction>(a);
    if (p.action == PlanAction::kFail) {
      p.code = CodeFromWire(d.U8());
      if (p.code == Code::kOk) p.code = Code::kInternal;
      p.message = d.Bytes(8192);
    } else if (p.action == PlanAction::kResume) {
      uint64_t k = d.Var();
      if (k > d.remaining() / 17) return Status::Protocol("PLAN resume list longer than its message");
      p.have.reserve(k);
      for (uint64_t j = 0; j < k && d.ok(); ++j) {
        uint64_t idx = d.Var();
        p.have.emplace_back(idx, d.Digest());
      }
    }
    if (!d.ok()) break;
    out.push_back(std::move(p));
  }
  PORO_RETURN_IF_ERROR(d.Finish("PLAN"));
  return out;
}

std::vector<std::byte> EncodeFileEnds(const std::vector<FileEnd>& v) {
  Encoder e;
  e.Var(v.size());
  for (const auto& f : v) {
    e.Var(f.id);
    e.Var(f.chunks);
    e.Digest(f.digest);
    e.U8(static_cast<uint8_t>(f.code));
    e.Bytes(f.message);
    e.Var(f.sent);
  }
  return e.Take();
}

Result<std::vector<FileEnd>> DecodeFileEnds(std::span<const std::byte> body) {
  Decoder d(body);
  uint64_t n = d.Var();
  if (n > body.size()) return Status::Protocol("FILE_END count out of range");
  std::vector<FileEnd> out;
  for (uint64_t i = 0; i < n && d.ok(); ++i) {
    FileEnd f;
    f.id = d.Var();
    f.chunks = d.Var();
    f.digest = d.Digest();
    f.code = CodeFromWire(d.U8());
    f.message = d.Bytes(8192);
    f.sent = d.Var();
    if (f.sent > f.chunks) return Status::Protocol("FILE_END counts more chunks sent than the file has");
    if (d.ok()) out.push_back(std::move(f));
  }
  PORO_RETURN_IF_ERROR(d.Finish("FILE_END"));
  return out;
}

std::vector<std::byte> EncodeFileDones(const std::vector<FileDone>& v) {
  Encoder e;
  e.Var(v.size());
  for (const auto& f : v) {
    e.Var(f.id);
    e.U8(static_cast<uint8_t>(f.code));
    e.Bytes(f.message);
    e.U8(f.retryable ? 1 : 0);
  }
  return e.Take();
}

Result<std::vector<FileDone>> DecodeFileDones(std::span<const std::byte> body) {
  Decoder d(body);
  uint64_t n = d.Var();
  if (n > body.size()) return Status::Protocol("FILE_DONE count out of range");
  std::vector<FileDone> out;
  for (uint64_t i = 0; i < n && d.ok(); ++i) {
    FileDone f;
    f.id = d.Var();
    f.code = CodeFromWire(d.U8());
    f.message = d.Bytes(8192);
    uint8_t retryable = d.U8();
    if (retryable > 1) return Status::Protocol("FILE_DONE retryable flag out of range");
    f.retryable = retryable == 1;
    if (d.ok()) out.push_back(std::move(f));
  }
  PORO_RETURN_IF_ERROR(d.Finish("FILE_DONE"));
  return out;
}

std::vector<std::byte> EncodeBadChunk(const BadChunk& b) {
  Encoder e;
  e.Var(b.id);
  e.Var(b.index);
  e.Var(b.offset);
  e.Var(b.length);
  e.Var(b.stream);
  e.U8(b.flags);
  return e.Take();
}

Result<BadChunk> DecodeBadChunk(std::span<const std::byte> body) {
  Decoder d(body);
  BadChunk b;
  b.id = d.Var();
  b.index = d.Var();
  b.offset = d.Var();
  uint64_t length = d.Var();
  uint64_t stream = d.Var();
  b.flags = d.U8();
  PORO_RETURN_IF_ERROR(d.Finish("BAD_CHUNK"));
  if (length == 0 || length > UINT32_MAX) return Status::Protocol("BAD_CHUNK length out of range");
  if (stream > UINT16_MAX) return Status::Protocol("BAD_CHUNK stream out of range");
  if ((b.flags & ~kBadChunkPieces) != 0) return Status::Protocol("BAD_CHUNK has unknown flags");
  b.length = static_cast<uint32_t>(length);
  b.stream = static_cast<uint16_t>(stream);
  return b;
}

Digest128 PieceDigest(std::span<const std::byte> data, uint64_t file_id, uint64_t offset) {
  Digest128 d = Xxh3_128(data);
  d.hi ^= offset;
  d.lo ^= file_id;
  return d;
}

void EncodeChunkHeader(const ChunkHeader& h, std::span<std::byte, kChunkHeaderSize> out) {
  std::byte* p = out.data();
  p[0] = std::byte(kProtocolVersion);
  p[1] = std::byte(static_cast<uint8_t>(h.kind));
  p[2] = p[3] = std::byte(0);
  EncodeFixed64(p + 4, h.file_id);
  EncodeFixed64(p + 12, h.index);
  EncodeFixed64(p + 20, h.offset);
  EncodeFixed32(p + 28, h.length);
  EncodeFixed64(p + 32, h.digest.hi);
  EncodeFixed64(p + 40, h.digest.lo);
}

Result<ChunkHeader> DecodeChunkHeader(std::span<const std::byte> in) {
  if (in.size() != kChunkHeaderSize) {
    return Status::Protocol("chunk header has " + std::to_string(in.size()) + " bytes, expected 48");
  }
  const std::byte* p = in.data();
  if (std::to_integer<uint8_t>(p[0]) != kProtocolVersion) {
    return Status::Protocol("chunk header version " + std::to_string(std::to_integer<int>(p[0])) +
                            " is not supported");
  }
  uint8_t kind = std::to_integer<uint8_t>(p[1]);
  if (kind < 1 || kind > 4) return Status::Protocol("chunk header has unknown kind " + std::to_string(kind));
  ChunkHeader h;
  h.kind = static_cast<ChunkKind>(kind);
  h.file_id = DecodeFixed64(p + 4);
  h.index = DecodeFixed64(p + 12);
  h.offset = DecodeFixed64(p + 20);
  h.length = DecodeFixed32(p + 28);
  h.digest.hi = DecodeFixed64(p + 32);
  h.digest.lo = DecodeFixed64(p + 40);
  return h;
}

namespace {

// HMAC-SHA256(K, label || session || stream:u16 || nonce)
Mac SessionMac(std::span<const std::byte> key, std::string_view label, const SessionId& session,
               uint16_t stream, const Nonce& nonce) {
  std::vector<std::byte> msg;
  msg.reserve(label.size() + 16 + 2 + 16);
  auto lb = AsBytes(label);
  msg.insert(msg.end(), lb.begin(), lb.end());
  msg.insert(msg.end(), session.begin(), session.end());
  std::byte s[2];
  EncodeFixed16(s, stream);
  msg.insert(msg.end(), s, s + 2);
  msg.insert(msg.end(), nonce.begin(), nonce.end());
  Mac mac{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
       reinterpret_cast<unsigned char*>(mac.data()), &len);
  return mac;
}

}  // namespace

Mac BindMac(std::span<const std::byte> key, bool reply, const SessionId& session, uint16_t stream,
            const Nonce& nonce) {
  return SessionMac(key, reply ? "pororoca-bind-ok" : "pororoca-bind", session, stream, nonce);
}

uint64_t DataTag(std::span<const std::byte> key, const SessionId& session, uint16_t stream) {
  const Mac m = SessionMac(key, "pororoca-tag", session, stream, Nonce{});
  return DecodeFixed64(m.data()) & ~uint64_t{1};
}

std::array<std::byte, kBindSize> EncodeBind(const BindRequest& b) {
  std::array<std::byte, kBindSize> out{};
  std::memcpy(out.data(), "PORD", 4);
  EncodeFixed16(out.data() + 4, b.version);
  EncodeFixed16(out.data() + 6, b.stream);
  std::memcpy(out.data() + 8, b.session.data(), 16);
  std::memcpy(out.data() + 24, b.nonce.data(), 16);
  std::memcpy(out.data() + 40, b.mac.data(), 32);
  // bytes 72..85 reserved (zero)
  return out;
}

Result<BindRequest> DecodeBind(std::span<const std::byte> in) {
  if (in.size() != kBindSize || std::memcmp(in.data(), "PORD", 4) != 0) {
    return Status::Protocol("data connection did not start with a bind request");
  }
  BindRequest b;
  b.version = DecodeFixed16(in.data() + 4);
  if (b.version != kProtocolVersion) {
    return Status::Protocol("bind request has protocol version " + std::to_string(b.version));
  }
  b.stream = DecodeFixed16(in.data() + 6);
  std::memcpy(b.session.data(), in.data() + 8, 16);
  std::memcpy(b.nonce.data(), in.data() + 24, 16);
  std::memcpy(b.mac.data(), in.data() + 40, 32);
  return b;
}

std::array<std::byte, kBindReplySize> EncodeBindReply(uint8_t status, const Mac& mac) {
  std::array<std::byte, kBindReplySize> out{};
  std::memcpy(out.data(), "PORA", 4);
  out[4] = std::byte(status);
  std::memcpy(out.data() + 8, mac.data(), 32);
  return out;
}

Result<std::pair<uint8_t, Mac>> DecodeBindReply(std::span<const std::byte> in) {
  if (in.size() != kBindReplySize || std::memcmp(in.data(), "PORA", 4) != 0) {
    return Status::Protocol("malformed bind reply");
  }
  Mac mac{};
  std::memcpy(mac.data(), in.data() + 8, 32);
  return std::make_pair(std::to_integer<uint8_t>(in[4]), mac);
}

bool MacEqual(const Mac& a, const Mac& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

std::string HexEncode(std::span<const std::byte> b) { return HexLower(b); }

Result<std::vector<std::byte>> HexDecode(std::string_view s) {
  if (s.size() % 2) return Status::InvalidArgument("odd-length hex string");
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<std::byte> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("bad hex digit");
    out[i] = std::byte((hi << 4) | lo);
  }
  return out;
}

}  // namespace pororoca::proto
