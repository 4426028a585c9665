#include "proto/wire.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "proto/codec.h"

namespace pororoca::proto {
namespace {

TEST_SUITE("proto.wire") {
  TEST_CASE("FILES batches round-trip odd names, symlinks and large values") {
    std::vector<FileEntry> in = {
        {1, EntryType::kFile, "dir with space/ü-ñ\nnewline.bin", (1ull << 40) + 7, 0644, -5, ""},
        {2, EntryType::kDir, "", 0, 0755, 1700000000123456789, ""},
        {3, EntryType::kSymlink, "a/link", 0, 0777, 0, "../target"},
    };
    auto out = DecodeFiles(EncodeFiles(in));
    REQUIRE(out.has_value());
    REQUIRE(out->size() == 3);
    CHECK((*out)[0].path == in[0].path);
    CHECK((*out)[0].size == in[0].size);
    CHECK((*out)[0].mtime_ns == -5);
    CHECK((*out)[1].type == EntryType::kDir);
    CHECK((*out)[1].mtime_ns == in[1].mtime_ns);
    CHECK((*out)[2].link_target == "../target");
  }

  TEST_CASE(
      "FILES hard link entries round-trip, a target that escapes, is empty or is the entry itself is "
      "refused") {
    auto out = DecodeFiles(EncodeFiles({{4, EntryType::kHardLink, "sub/c", 10, 0644, 7, "a"}}));
    REQUIRE(out.has_value());
    REQUIRE(out->size() == 1);
    CHECK((*out)[0].type == EntryType::kHardLink);
    CHECK((*out)[0].link_target == "a");
    CHECK((*out)[0].size == 10);
    for (const char* bad : {"../a", "/a", "", "sub/c"}) {
      CAPTURE(bad);
      auto r = DecodeFiles(EncodeFiles({{4, EntryType::kHardLink, "sub/c", 10, 0644, 7, bad}}));
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kProtocol);
    }
    CHECK_FALSE(DecodeFiles(EncodeFiles({{4, EntryType(4), "x", 0, 0644, 0, ""}})).has_value());
  }

  TEST_CASE("FILES entries that escape the root are a protocol error") {
    for (const char* bad : {"../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a"}) {
      CAPTURE(bad);
      auto r = DecodeFiles(EncodeFiles({{1, EntryType::kFile, bad, 1, 0644, 0, ""}}));
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kProtocol);
    }
  }

  TEST_CASE("every truncation of a FILES or PLAN body is rejected without over-read") {
    auto files = EncodeFiles({{7, EntryType::kSymlink, "x/y", 3, 0600, 9, "t"}});
    for (size_t n = 0; n < files.size(); ++n) {
      CHECK_FALSE(DecodeFiles(std::span(files).first(n)).has_value());
    }
    PlanEntry p;
    p.id = 4;
    p.action = PlanAction::kResume;
    p.have = {{0, Digest128{1, 2}}, {5, Digest128{3, 4}}};
    auto plan = EncodePlan({p, PlanEntry{5, PlanAction::kFail, Code::kPermissionDenied, "no", {}}});
    for (size_t n = 0; n < plan.size(); ++n) {
      CHECK_FALSE(DecodePlan(std::span(plan).first(n)).has_value());
    }
    auto full = DecodePlan(plan);
    REQUIRE(full.has_value());
    CHECK((*full)[0].have[1].first == 5);
    CHECK((*full)[0].have[1].second == Digest128{3, 4});
    CHECK((*full)[1].code == Code::kPermissionDenied);
    CHECK((*full)[1].message == "no");
  }

  TEST_CASE(
      "BAD_CHUNK and FILE_DONE round-trip, a BAD_CHUNK with no length, a wide stream or unknown flags is "
      "refused") {
    BadChunk b{3, 9, (9ull << 22) + (1u << 18), 1u << 18, 7, kBadChunkPieces};
    auto body = EncodeBadChunk(b);
    auto r = DecodeBadChunk(body);
    REQUIRE(r.has_value());
    CHECK(r->id == 3);
    CHECK(r->index == 9);
    CHECK(r->offset == b.offset);
    CHECK(r->length == b.length);
    CHECK(r->stream == 7);
    CHECK(int(r->flags) == int(kBadChunkPieces));
    for (size_t n = 0; n < body.size(); ++n)
      CHECK_FALSE(DecodeBadChunk(std::span(body).first(n)).has_value());
    CHECK_FALSE(DecodeBadChunk(EncodeBadChunk(BadChunk{3, 9, 0, 0, 0, 0})).has_value());
    CHECK_FALSE(DecodeBadChunk(EncodeBadChunk(BadChunk{3, 9, 0, 1, 0, 2})).has_value());
    Encoder e;  // stream 65536
    e.Var(3);
    e.Var(9);
    e.Var(0);
    e.Var(1);
    e.Var(65536);
    e.U8(0);
    CHECK_FALSE(DecodeBadChunk(e.Take()).has_value());

    auto dones = EncodeFileDones({FileDone{5, Code::kDataLoss, "chunk 2 failed verification 17 times", true},
                                  FileDone{6, Code::kOk, "", false}});
    auto d = DecodeFileDones(dones);
    REQUIRE(d.has_value());
    REQUIRE(d->size() == 2);
    CHECK((*d)[0].retryable);
    CHECK_FALSE((*d)[1].retryable);
    dones[dones.size() - 1] = std::byte(2);  // the last flag: neither 0 nor 1
    CHECK_FALSE(DecodeFileDones(dones).has_value());
  }

  TEST_CASE("a piece's digest depends on its bytes, its file and its offset") {
    const std::string a(1000, 'a');
    const auto bytes = std::as_bytes(std::span(a));
    const Digest128 d = PieceDigest(bytes, 1, 0);
    CHECK(d == PieceDigest(bytes, 1, 0));
    CHECK_FALSE(d == PieceDigest(bytes, 2, 0));
    CHECK_FALSE(d == PieceDigest(bytes, 1, 1u << 18));
    CHECK_FALSE(d == PieceDigest(bytes.first(999), 1, 0));
  }

  TEST_CASE("chunk headers round-trip and bad versions or kinds are refused") {
    ChunkHeader h{ChunkKind::kData, 42, 7, 7ull << 22, 4u << 20, Digest128{0xaa, 0xbb}};
    std::array<std::byte, kChunkHeaderSize> buf;
    EncodeChunkHeader(h, buf);
    auto r = DecodeChunkHeader(buf);
    REQUIRE(r.has_value());
    CHECK(r->file_id == 42);
    CHECK(r->offset == 7ull << 22);
    CHECK(r->digest == Digest128{0xaa, 0xbb});
    buf[0] = std::byte(9);
    CHECK(DecodeChunkHeader(buf).error().code() == Code::kProtocol);
    buf[0] = std::byte(1);
    buf[1] = std::byte(0);
    CHECK_FALSE(DecodeChunkHeader(buf).has_value());
    buf[1] = std::byte(5);
    CHECK_FALSE(DecodeChunkHeader(buf).has_value());
    buf[0] = std::byte(kProtocolVersion);
    buf[1] = std::byte(static_cast<uint8_t>(ChunkKind::kPiece));
    CHECK(DecodeChunkHeader(buf).has_value());
    CHECK_FALSE(DecodeChunkHeader(std::span(buf).first(10)).has_value());
  }

  TEST_CASE("bind MAC depends on key, stream and direction") {
    std::vector<std::byte> k1(32, std::byte(1)), k2(32, std::byte(2));
    SessionId s{};
    Nonce n{};
    n[0] = std::byte(9);
    Mac a = BindMac(k1, false, s, 0, n);
    CHECK(MacEqual(a, BindMac(k1, false, s, 0, n)));
    CHECK_FALSE(MacEqual(a, BindMac(k2, false, s, 0, n)));
    CHECK_FALSE(MacEqual(a, BindMac(k1, false, s, 1, n)));
    CHECK_FALSE(MacEqual(a, BindMac(k1, true, s, 0, n)));
    BindRequest b{kProtocolVersion, 3, s, n, a};
    auto enc = EncodeBind(b);
    auto dec = DecodeBind(enc);
    REQUIRE(dec.has_value());
    CHECK(dec->stream == 3);
    CHECK(MacEqual(dec->mac, a));
    enc[0] = std::byte('X');
    CHECK_FALSE(DecodeBind(enc).has_value());
  }

  TEST_CASE("varints reject overlong encodings") {
    std::vector<std::byte> v(11, std::byte(0xff));
    Decoder d(v);
    d.Var();
    CHECK_FALSE(d.ok());
    CHECK(d.Finish("x").code() == Code::kProtocol);
  }

  TEST_CASE("JSON control bodies must be objects") {
    ControlFrame f{MsgType::kHello, {}};
    std::string s = "[1,2]";
    for (char c : s) f.body.push_back(std::byte(c));
    CHECK_FALSE(DecodeJsonBody(f).has_value());
    auto frame = EncodeJsonFrame(MsgType::kHello, nlohmann::json{{"proto", 1}});
    ControlFrame g{MsgType::kHello, std::vector<std::byte>(frame.begin() + 5, frame.end())};
    auto j = DecodeJsonBody(g);
    REQUIRE(j.has_value());
    CHECK((*j)["proto"] == 1);
  }
}

}  // namespace
}  // namespace pororoca::proto
