// The libFuzzer targets of tests/fuzz, replayed in the normal test suite. CMakeLists.txt compiles
// each target into this binary under its own name (targets.h); each case below feeds one target a
// fixed corpus: valid inputs built with the project's encoders, each checked here to be accepted by
// the decoder the target hands it to, and a fixed number of deterministic mutations of every one
// (bit flips, truncations, inserted and overwritten bytes). The targets check their invariants with
// REQUIRE_INVARIANT (tests/fuzz/fuzz_check.h), never compiled out, so a broken one aborts this binary.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/file_util.h"
#include "crypto/chunk_seal.h"
#include "crypto/encoding.h"
#include "federation/authority.h"
#include "federation/manifest.h"
#include "fuzz/token_fuzz.h"
#include "policy/policy.h"
#include "proto/codec.h"
#include "proto/messages.h"
#include "proto/wire.h"
#include "support/temp_dir.h"
#include "token/token.h"
#include "unit/federation/requests.h"
#include "unit/fuzz_replay/targets.h"

namespace pororoca {
namespace {

using json = nlohmann::json;
using Input = std::vector<uint8_t>;
using Target = int (*)(const uint8_t* data, size_t size);

// The selector byte some targets read first, then the rest of the input.
Input Selected(uint8_t selector, std::string_view rest) {
  Input in(1 + rest.size());
  in[0] = selector;
  std::copy(rest.begin(), rest.end(), in.begin() + 1);
  return in;
}

Input Selected(uint8_t selector, std::span<const std::byte> rest) {
  return Selected(selector, std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size()));
}

Input Bytes(std::string_view text) { return Input(text.begin(), text.end()); }

// One to three edits of `in`; every choice comes from `rng`.
Input Mutate(Input in, std::mt19937_64& rng) {
  static constexpr std::array<uint8_t, 16> kInteresting = {0x00, 0x01, 0x7f, 0x80, 0xff, '"', '\\', '/',
                                                           '.',  '\n', '{',  '}',  '[',  ',', ':',  '0'};
  auto below = [&rng](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  auto any_byte = [&] {
    return rng() % 2 ? kInteresting[below(kInteresting.size())] : static_cast<uint8_t>(rng());
  };
  for (size_t edits = 1 + below(3); edits > 0; --edits) {
    switch (below(4)) {
      case 0:  // flip a bit
        if (!in.empty()) in[below(in.size())] ^= static_cast<uint8_t>(1u << below(8));
        break;
      case 1:  // truncate
        in.resize(below(in.size() + 1));
        break;
      case 2:  // insert a byte
        in.insert(in.begin() + static_cast<std::ptrdiff_t>(below(in.size() + 1)), any_byte());
        break;
      default:  // overwrite a byte
        if (!in.empty()) in[below(in.size())] = any_byte();
        break;
    }
  }
  return in;
}

// Feeds `target` every seed and `per_seed` mutations of each, the same ones on every run.
void Replay(Target target, const std::vector<Input>& seeds, size_t per_seed) {
  std::mt19937_64 rng(20261123);
  size_t runs = 0;
  for (const Input& seed : seeds) {
    target(seed.data(), seed.size());
    ++runs;
    for (size_t i = 0; i < per_seed; ++i) {
      const Input m = Mutate(seed, rng);
      target(m.data(), m.size());
      ++runs;
    }
  }
  MESSAGE(runs << " inputs");
}

// ---- frame_fuzz: the first byte picks the decoder (the switch in frame_fuzz.cc) ----------------

// Adds selector + body to `seeds` after checking that `decode` (the decoder the selector picks)
// accepts body.
template <class Decode>
void AddFrame(std::vector<Input>& seeds, uint8_t selector, std::span<const std::byte> body, Decode decode) {
  CAPTURE(selector);
  CHECK(decode(body).ok());
  seeds.push_back(Selected(selector, body));
}

std::vector<Input> FrameSeeds() {
  std::vector<Input> seeds;
  // 0 (mod 12): a JSON control body, read as the message type of the selector byte.
  // The body is what follows the frame's length (u32) and type (u8).
  for (const auto& msg : {std::pair{proto::MsgType::kCancel, json{{"reason", "user asked"}}},
                          std::pair{proto::MsgType(0), json{{"code", 3}, {"message", "no\nway"}}}}) {
    const proto::MsgType type = msg.first;
    const auto frame = proto::EncodeJsonFrame(type, msg.second);
    AddFrame(seeds, static_cast<uint8_t>(type), std::span(frame).subspan(5),
             [type](std::span<const std::byte> b) {
               return proto::DecodeJsonBody(proto::ControlFrame{type, {b.begin(), b.end()}});
             });
  }
  // 1: FILES.
  const std::vector<proto::FileEntry> files = {
      {1, proto::EntryType::kFile, "dir with space/ü-ñ\nnewline.bin", (1ull << 40) + 7, 0644, -5, ""},
      {2, proto::EntryType::kDir, "", 0, 0755, 1700000000123456789, ""},
      {3, proto::EntryType::kSymlink, "a/link", 0, 0777, 0, "../target"},
  };
  AddFrame(seeds, 1, proto::EncodeFiles(files), proto::DecodeFiles);
  AddFrame(seeds, 1, proto::EncodeFiles({files[0]}), proto::DecodeFiles);
  // 2: PLAN.
  proto::PlanEntry resume{4, proto::PlanAction::kResume, Code::kOk, "", {{0, {1, 2}}, {5, {3, 4}}}};
  proto::PlanEntry fail{5, proto::PlanAction::kFail, Code::kPermissionDenied, "no", {}};
  proto::PlanEntry skip{6, proto::PlanAction::kSkip, Code::kOk, "", {}};
  AddFrame(seeds, 2, proto::EncodePlan({resume, fail, skip}), proto::DecodePlan);
  // 3: FILE_END.
  AddFrame(seeds, 3,
           proto::EncodeFileEnds(
               {{7, 3, {0xaa, 0xbb}, Code::kOk, "", 3}, {8, 2, {}, Code::kDataLoss, "source truncated", 1}}),
           proto::DecodeFileEnds);
  // 4: FILE_DONE.
  AddFrame(seeds, 4,
           proto::EncodeFileDones({{7, Code::kOk, "", false},
                                   {8, Code::kResourceExhausted, "disk full", false},
                                   {9, Code::kDataLoss, "chunk 0 failed verification 17 times", true}}),
           proto::DecodeFileDones);
  // 5: BAD_CHUNK.
  AddFrame(seeds, 5, proto::EncodeBadChunk({9, 12, 12u << 20, 1u << 20, 3, proto::kBadChunkPieces}),
           proto::DecodeBadChunk);
  // 6: chunk headers of every kind.
  for (const proto::ChunkHeader& h :
       {proto::ChunkHeader{proto::ChunkKind::kData, 42, 7, 7ull << 22, 4u << 20, {1, 2}},
        proto::ChunkHeader{proto::ChunkKind::kHole, 42, 8, 8ull << 22, 4u << 20, {3, 4}},
        proto::ChunkHeader{proto::ChunkKind::kEos, 0, 0, 0, 0, {}}}) {
    std::array<std::byte, proto::kChunkHeaderSize> out{};
    proto::EncodeChunkHeader(h, out);
    AddFrame(seeds, 6, out, proto::DecodeChunkHeader);
  }
  // 7, 8: bind request and reply.
  const std::vector<std::byte> key(32, std::byte{7});
  proto::SessionId session{};
  proto::Nonce nonce{};
  session[0] = std::byte{1};
  nonce[15] = std::byte{2};
  const proto::Mac mac = proto::BindMac(key, false, session, 3, nonce);
  AddFrame(seeds, 7, proto::EncodeBind({proto::kProtocolVersion, 3, session, nonce, mac}), proto::DecodeBind);
  AddFrame(seeds, 8, proto::EncodeBindReply(0, proto::BindMac(key, true, session, 3, nonce)),
           proto::DecodeBindReply);
  AddFrame(seeds, 8, proto::EncodeBindReply(1, mac), proto::DecodeBindReply);
  // 9, 10: hex and relative paths, as text.
  auto text = [](std::span<const std::byte> b) {
    return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
  };
  const std::string hex = proto::HexEncode(std::span(key).first(8));
  AddFrame(seeds, 9, std::as_bytes(std::span(hex)), [&](auto b) { return proto::HexDecode(text(b)); });
  for (std::string_view path : {"a/b/c.txt", "dir with space/ü", ""}) {
    AddFrame(seeds, 10, std::as_bytes(std::span(path)),
             [&](auto b) { return proto::ValidateRelativePath(text(b)); });
  }
  // 11: a program of primitive reads. Its first byte is both the number of reads less one (mod 16)
  // and the first read; the reads (mod 8) are U64, Var, Bytes, U32, then their input follows.
  proto::Encoder e;
  for (const uint8_t read : {3, 4, 5, 2}) e.U8(read);
  e.U64(0x0102030405060708);
  e.Var(300);
  e.Bytes("bytes");
  e.U32(7);
  AddFrame(seeds, 11, e.buffer(), [](std::span<const std::byte> b) {
    proto::Decoder d(b.subspan(4));
    d.U64();
    d.Var();
    d.Bytes(64);
    d.U32();
    return d.Finish("program");
  });
  return seeds;
}

// ---- token_fuzz: 0 + a token, 1 + "header\npayload" it signs itself, 2 + "path\nscope..." ------

namespace tf = fuzz::token_fuzz;

const crypto::PKey& TokenKey() {
  static const crypto::PKey key = tf::NewIssuerKey();
  return key;
}

std::vector<Input> TokenSeeds() {
  REQUIRE(static_cast<bool>(TokenKey()));
  const token::IssuerKeyLookup lookup = [](std::string_view iss) -> const crypto::PKey* {
    return iss == tf::kIssuer ? &TokenKey() : nullptr;
  };
  token::Claims full;
  full.issuer = tf::kIssuer;
  full.subject = "alice";
  full.audience = tf::kAudience;
  full.id = "job-42";
  full.issued_at = tf::kNow - 60;
  full.not_before = tf::kNow - 60;
  full.expires = tf::kNow + 3600;
  full.scopes = {"storage.read:/data", "storage.create:/data/in", "storage.modify:/data/x"};
  token::Claims bare;
  bare.issuer = tf::kIssuer;
  bare.audience = tf::kAudience;
  bare.expires = tf::kNow + 1;
  bare.scopes = {"storage.modify:/"};

  std::vector<Input> seeds;
  for (const token::Claims& c : {full, bare}) {
    auto jwt = token::IssueToken(c, TokenKey());
    REQUIRE(jwt.ok());
    CHECK(token::VerifyToken(*jwt, lookup, tf::kAudience, tf::kNow).ok());
    seeds.push_back(Selected(0, *jwt));
    // The same header and payload, which the target signs with the same key into the same token.
    const size_t dot1 = jwt->find('.');
    const size_t dot2 = jwt->find('.', dot1 + 1);
    auto header = crypto::Base64UrlDecode(std::string_view(*jwt).substr(0, dot1));
    auto payload = crypto::Base64UrlDecode(std::string_view(*jwt).substr(dot1 + 1, dot2 - dot1 - 1));
    REQUIRE(header.ok());
    REQUIRE(payload.ok());
    seeds.push_back(Selected(1, *header + "\n" + *payload));
    seeds.push_back(Selected(1, *payload));  // under the target's default header
  }
  for (const std::string_view path : {"/data/x", "/data/in/file"}) {
    token::Claims scoped;
    scoped.scopes = full.scopes;
    CHECK(token::CheckScope(scoped, token::Action::kCreate, path).ok());
    std::string text(path);
    for (const std::string& scope : full.scopes) text += "\n" + scope;
    seeds.push_back(Selected(2, text));
  }
  return seeds;
}

// ---- manifest_fuzz: a manifest body, and a whole envelope (refused: the target has its own key) --

std::vector<Input> ManifestSeeds() {
  // A workspace with two institutions, an active and a suspended endpoint, an issuer and two rules.
  test::TempDir tmp;
  const std::string dir = tmp.path() + "/auth";
  REQUIRE(federation::InitAuthority(dir, "fuzz-fed", 2).ok());
  REQUIRE(federation::AddInstitution(dir, "lncc", "Laboratorio Nacional").ok());
  REQUIRE(federation::AddInstitution(dir, "cloud", "GPU cloud").ok());
  REQUIRE(federation::AddEndpoint(dir, federation::Req("dtn-a", "lncc", "127.0.0.1:7001")).has_value());
  REQUIRE(federation::AddEndpoint(dir, federation::Req("dtn-b", "cloud", "127.0.0.1:7002")).has_value());
  REQUIRE(federation::SetEndpointStatus(dir, "dtn-b", federation::EndpointStatus::kSuspended).ok());
  REQUIRE(federation::AddIssuer(dir, "https://tokens.lncc", "lncc", std::nullopt).has_value());
  REQUIRE(federation::AddRule(dir, json{{"id", "lncc-to-cloud"},
                                        {"effect", "allow"},
                                        {"source", {"lncc"}},
                                        {"destination", {"cloud"}},
                                        {"rate_limit", "1Gbit/s"}})
              .ok());
  REQUIRE(federation::AddRule(dir, json{{"id", "no-pulls"}, {"effect", "deny"}, {"direction", "pull"}}).ok());
  auto signed_manifest = federation::Sign(dir);
  REQUIRE(signed_manifest.has_value());
  auto envelope = ReadSmallFile(federation::ManifestFile(dir));
  REQUIRE(envelope.has_value());
  auto authority = crypto::LoadPublicKeyPem(federation::AuthorityPublicKeyFile(dir));
  REQUIRE(authority.has_value());
  CHECK(federation::VerifyManifest(*envelope, *authority, "seed").has_value());

  std::vector<Input> seeds;
  const json& body = (*signed_manifest)->body();
  for (const std::string& text : {body.dump(), body.dump(1)}) {
    CHECK(federation::Manifest::FromBody(json::parse(text), "seed").has_value());
    seeds.push_back(Bytes(text));
  }
  seeds.push_back(Bytes(*envelope));
  return seeds;
}

// ---- message_fuzz: the first byte (mod 9) picks the JSON control message (message_fuzz.cc) -------

std::vector<Input> MessageSeeds() {
  std::vector<Input> seeds;
  auto add = [&seeds](uint8_t selector, const std::vector<std::byte>& body, const Status& decoded) {
    CAPTURE(selector);
    CHECK_MESSAGE(decoded.ok(), decoded.ToString());
    seeds.push_back(Selected(selector, body));
  };
  const std::string tid = "00112233445566778899aabbccddeeff";
  proto::Hello hello{1, "dtn-a", "pororoca 0.9 \"dev\"", std::nullopt, {"ucx", "tcp"}, std::nullopt};
  add(0, proto::EncodeHello(hello), proto::DecodeHello(proto::EncodeHello(hello)).status());
  hello.session = proto::SessionId{};
  (*hello.session)[3] = std::byte{0xab};
  add(0, proto::EncodeHello(hello), proto::DecodeHello(proto::EncodeHello(hello)).status());
  proto::Open open;
  open.transfer_id = tid;
  open.direction = proto::Direction::kPush;
  open.path = "/in/ü dir/";
  open.trailing_slash = true;
  open.streams = 8;
  open.options = proto::OpenOptions{1u << 20, true, proto::Existing::kOverwrite};
  open.local_path = "/src/tree";
  open.token = "a.b.c";
  open.src = proto::Source{"tree", true};
  open.classification = "internal";
  add(1, proto::EncodeOpen(open), proto::DecodeOpen(proto::EncodeOpen(open)).status());
  open.direction = proto::Direction::kPull;
  open.token.reset();
  open.src.reset();
  open.classification.reset();
  add(1, proto::EncodeOpen(open), proto::DecodeOpen(proto::EncodeOpen(open)).status());
  const proto::OpenOk push_ok{tid, "rule-1", "dtn-b:/in/tree", std::nullopt, std::nullopt};
  add(2, proto::EncodeOpenOk(push_ok),
      proto::DecodeOpenOk(proto::EncodeOpenOk(push_ok), proto::Direction::kPush).status());
  const proto::OpenOk pull_ok{tid, "", std::nullopt, proto::Source{"a.bin", false}, "public"};
  add(3, proto::EncodeOpenOk(pull_ok),
      proto::DecodeOpenOk(proto::EncodeOpenOk(pull_ok), proto::Direction::kPull).status());
  const proto::ErrorMsg error{Code::kPermissionDenied, "policy says no\n", false};
  add(4, proto::EncodeErrorMsg(error), proto::DecodeErrorMsg(proto::EncodeErrorMsg(error)).status());
  add(5, proto::EncodeEnd({42}), proto::DecodeEnd(proto::EncodeEnd({42})).status());
  const proto::Summary summary{3, 1 << 20, 1, 10, 1, 2, 4096, {{"t/b", "not linked"}}};
  add(6, proto::EncodeSummary(summary), proto::DecodeSummary(proto::EncodeSummary(summary)).status());
  add(7, proto::EncodeCancel({"operator"}), proto::DecodeCancel(proto::EncodeCancel({"operator"})).status());
  add(8, proto::EncodeKeepalive({}), proto::DecodeKeepalive(proto::EncodeKeepalive({})).status());
  add(8, {std::byte{'{'}, std::byte{'}'}},
      proto::DecodeKeepalive(std::vector{std::byte{'{'}, std::byte{'}'}}).status());
  return seeds;
}

// ---- policy_fuzz: policy rules as JSON, and rates -------------------------------------------

std::vector<Input> PolicySeeds() {
  const json rules = json::array({
      {{"id", "lncc-to-gpucloud"},
       {"comment", "datasets out, results back"},
       {"effect", "allow"},
       {"source", {"lncc"}},
       {"destination", {"gpucloud"}},
       {"direction", "push"},
       {"source_paths", {"/datasets"}},
       {"destination_paths", {"/scratch"}},
       {"classifications", {"public", "internal"}},
       {"time_window",
        {{"days", {"mon", "tue", "wed", "thu", "fri"}},
         {"start", "08:00"},
         {"end", "18:00"},
         {"utc_offset", "-03:00"}}},
       {"rate_limit", "2Gbit/s"},
       {"max_concurrent", 4}},
      {{"id", "nothing-restricted"},
       {"effect", "deny"},
       {"source", "*"},
       {"classifications", {"restricted"}}},
      {{"id", "pulls"}, {"effect", "allow"}, {"direction", "pull"}, {"rate_limit", 1000000}},
  });
  std::vector<Input> seeds;
  for (const json& r : {rules, json::array({{{"id", "all"}, {"effect", "allow"}}}), json::array()}) {
    CHECK(policy::Policy::Parse(r).ok());
    seeds.push_back(Bytes(r.dump()));
  }
  for (const std::string_view rate : {"2Gbit/s", "500MiB/s", "1000"}) {
    CHECK(policy::ParseRate(rate).ok());
    seeds.push_back(Bytes(rate));
  }
  return seeds;
}

// ---- seal_fuzz: selector, channel u32le, seq u64le, aad and secret lengths, then the body -------

// The target's input for one message (seal_fuzz.cc): selector 0 or 1 opens the body (tag, aad,
// secret, payload) at integrity or private; 2 or 3 seals it (aad, secret, payload; no tag) and
// opens it again.
Input SealInput(uint8_t selector, uint32_t channel, uint64_t seq, std::span<const std::byte> tag,
                std::span<const std::byte> aad, std::span<const std::byte> secret,
                std::span<const std::byte> payload) {
  Input in{selector};
  for (int i = 0; i < 4; ++i) in.push_back(static_cast<uint8_t>(channel >> (8 * i)));
  for (int i = 0; i < 8; ++i) in.push_back(static_cast<uint8_t>(seq >> (8 * i)));
  in.push_back(static_cast<uint8_t>(aad.size()));
  in.push_back(static_cast<uint8_t>(secret.size()));
  for (std::span<const std::byte> part : {tag, aad, secret, payload}) {
    for (const std::byte b : part) in.push_back(std::to_integer<uint8_t>(b));
  }
  return in;
}

std::vector<Input> SealSeeds() {
  // The seeds are sealed under a key of their own, not the target's: each is checked to open under
  // it here, and the target must refuse it (and every mutation of it) under its own.
  std::vector<std::byte> key(crypto::ChunkSeal::kKeySize);
  for (size_t i = 0; i < key.size(); ++i) key[i] = std::byte(i);
  std::array<std::byte, proto::kChunkHeaderSize> header{};
  proto::EncodeChunkHeader({proto::ChunkKind::kData, 42, 7, 7ull << 22, 300, {1, 2}}, header);

  std::vector<Input> seeds;
  for (const Protection level : {Protection::kIntegrity, Protection::kPrivate}) {
    CAPTURE(ProtectionName(level));
    auto seal = crypto::ChunkSeal::Create(level, key);
    REQUIRE(seal.ok());
    const uint8_t selector = level == Protection::kPrivate ? 1 : 0;
    for (const size_t size : {size_t{0}, size_t{17}, size_t{300}}) {
      const uint64_t seq = 1000 + size;
      const std::vector<std::byte> aad(header.begin(), header.end());
      std::vector<std::byte> secret(16);
      std::vector<std::byte> payload(size);
      for (size_t i = 0; i < secret.size(); ++i) secret[i] = std::byte(0xd0 + i);
      for (size_t i = 0; i < payload.size(); ++i) payload[i] = std::byte((i * 7) & 0xff);
      // 2, 3: the plaintext message, which the target seals and opens itself.
      seeds.push_back(SealInput(selector + 2, 5, seq, {}, aad, secret, payload));
      // 0, 1: the same message sealed here.
      std::array<std::byte, crypto::ChunkSeal::kTagSize> tag{};
      std::vector<std::byte> sealed_secret = secret;
      std::vector<std::byte> sealed_payload = payload;
      REQUIRE(seal->Seal(5, seq, aad, sealed_secret, sealed_payload, tag).ok());
      seeds.push_back(SealInput(selector, 5, seq, tag, aad, sealed_secret, sealed_payload));
      std::vector<std::byte> opened_secret = sealed_secret;
      std::vector<std::byte> opened_payload = sealed_payload;
      CHECK(seal->Open(5, seq, aad, opened_secret, opened_payload, tag).ok());
      CHECK(opened_secret == secret);
      CHECK(opened_payload == payload);
    }
  }
  // Every part empty (a tag of zeros at 1), and an input shorter than the fixed fields.
  seeds.push_back(SealInput(1, 0, 0, {}, {}, {}, {}));
  seeds.push_back(SealInput(3, 0, 0, {}, {}, {}, {}));
  seeds.push_back(Input{2, 9});
  return seeds;
}

TEST_SUITE("fuzz_replay") {
  TEST_CASE("frame_fuzz keeps its invariants on encoded messages of every decoder and on their mutations") {
    Replay(frame_fuzz_TestOneInput, FrameSeeds(), 150);
  }

  TEST_CASE("token_fuzz keeps its invariants on tokens that verify and scope lists and on their mutations") {
    Replay(token_fuzz_TestOneInput, TokenSeeds(), 250);
  }

  TEST_CASE("manifest_fuzz keeps its invariants on a signed manifest and on its mutations") {
    Replay(manifest_fuzz_TestOneInput, ManifestSeeds(), 700);
  }

  TEST_CASE("message_fuzz keeps its invariants on every encoded control message and on their mutations") {
    Replay(message_fuzz_TestOneInput, MessageSeeds(), 400);
  }

  TEST_CASE("policy_fuzz keeps its invariants on policies and rates that parse and on their mutations") {
    Replay(policy_fuzz_TestOneInput, PolicySeeds(), 350);
  }

  TEST_CASE(
      "seal_fuzz keeps its invariants on sealed and plaintext messages at both levels and on their "
      "mutations") {
    Replay(seal_fuzz_TestOneInput, SealSeeds(), 190);
  }
}

}  // namespace
}  // namespace pororoca
