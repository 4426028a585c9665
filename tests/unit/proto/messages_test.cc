#include "proto/messages.h"

#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace pororoca::proto {
namespace {

using json = nlohmann::json;

constexpr char kTid[] = "0123456789abcdef0123456789ABCDEF";

std::vector<std::byte> Bytes(std::string_view s) {
  std::vector<std::byte> out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::string Text(const std::vector<std::byte>& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

json Parse(const std::vector<std::byte>& b) { return json::parse(Text(b)); }

std::vector<std::byte> Dump(const json& j) { return Bytes(j.dump()); }

// A decoder of one message as a function of its body, reporting only the status.
using Decoder = std::function<Status(std::span<const std::byte>)>;

template <class F>
Decoder StatusOf(F decode) {
  return [decode](std::span<const std::byte> b) { return decode(b).status(); };
}

// Decoding `j` fails with kProtocol, the message starting "<field>: " and containing `what`.
void CheckFieldError(const Decoder& decode, const json& j, std::string_view field, std::string_view what) {
  CAPTURE(j.dump());
  Status s = decode(Dump(j));
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == Code::kProtocol);
  const std::string msg(s.message());
  CAPTURE(msg);
  CHECK(msg.rfind(std::string(field) + ": ", 0) == 0);
  CHECK(msg.find(what) != std::string::npos);
}

// What one field of a message may be replaced with to make the message invalid.
struct FieldCase {
  std::string pointer;           // JSON pointer to the field, e.g. "/options/chunk_size"
  std::string name;              // the name the error must give, e.g. "OPEN.options.chunk_size"
  bool required = true;          // missing is an error (else the message still decodes)
  std::vector<json> wrong_type;  // values of the wrong JSON type: "expected ..."
  std::vector<json> bad_value;   // the right JSON type, a value the protocol refuses
  std::string bad_what;          // what the error says about a bad value
};

// Every case of every field of one message, starting from the valid object `valid`.
void CheckFields(const Decoder& decode, const json& valid, const std::vector<FieldCase>& cases) {
  REQUIRE(decode(Dump(valid)).ok());
  for (const FieldCase& c : cases) {
    CAPTURE(c.pointer);
    const json::json_pointer ptr(c.pointer);
    REQUIRE(valid.contains(ptr));
    json missing = valid;
    missing.at(ptr.parent_pointer()).erase(ptr.back());
    if (c.required) {
      CheckFieldError(decode, missing, c.name, "missing");
    } else {
      CHECK(decode(Dump(missing)).ok());
    }
    for (const json& v : c.wrong_type) {
      json j = valid;
      j[ptr] = v;
      CheckFieldError(decode, j, c.name, "expected");
    }
    for (const json& v : c.bad_value) {
      json j = valid;
      j[ptr] = v;
      CheckFieldError(decode, j, c.name, c.bad_what);
    }
  }
}

// Bodies that are not a JSON object, or not JSON, are refused naming the message.
void CheckNotObject(const Decoder& decode, std::string_view msg) {
  for (std::string_view body : {"[]", "1", "\"text\"", "null", "true", "[{\"proto\": 1}]"}) {
    CAPTURE(body);
    Status s = decode(Bytes(body));
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Code::kProtocol);
    CHECK(s.message() == std::string(msg) + ": body is not a JSON object");
  }
  for (std::string_view body : {"", "{", "{\"a\":}", "{} {}", "\xff", "{\"a\": \"\xc3\"}", "{'a': 1}"}) {
    CAPTURE(body);
    Status s = decode(Bytes(body));
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Code::kProtocol);
    CHECK(s.message() == std::string(msg) + ": body is not valid JSON");
  }
}

Hello SampleHello(bool with_session) {
  Hello h;
  h.proto = 1;
  h.endpoint = "dtn-a.lncc";
  h.software = "pororoca 0.9 \"dev\"";
  if (with_session) {
    SessionId sid{};
    for (size_t i = 0; i < sid.size(); ++i) sid[i] = std::byte(static_cast<uint8_t>(i * 17 + 3));
    h.session = sid;
    h.transports = {"ucx", "tcp"};
    h.transport = "ucx";
  }
  return h;
}

Open SampleOpen(Direction d) {
  Open o;
  o.transfer_id = kTid;
  o.direction = d;
  o.path = "/data/in/ü dir/";
  o.trailing_slash = true;
  o.recursive = true;
  o.streams = 8;
  o.options = OpenOptions{1u << 20, true, Existing::kOverwrite};
  o.local_path = "/exports/src";
  o.token = "eyJhbGciOi.payload.sig";
  o.protection = Protection::kIntegrity;
  if (d == Direction::kPush) {
    o.src = Source{"src dir", true};
    o.classification = "internal";
  }
  return o;
}

OpenOk SampleOpenOk(Direction d) {
  OpenOk ok;
  ok.transfer_id = kTid;
  ok.rule = "lncc-to-cloud";
  ok.protection = Protection::kPrivate;
  if (d == Direction::kPush) {
    ok.target = "dtn-b:/scratch/in/src dir";
  } else {
    ok.src = Source{"results.h5", false};
    ok.classification = "restricted";
  }
  return ok;
}

TEST_SUITE("proto.messages") {
  TEST_CASE("every message decodes to what was encoded") {
    for (bool with_session : {false, true}) {
      Hello h = SampleHello(with_session);
      auto d = DecodeHello(EncodeHello(h));
      REQUIRE_MESSAGE(d.ok(), d.error().ToString());
      CHECK(*d == h);
    }
    for (Direction dir : {Direction::kPush, Direction::kPull}) {
      Open o = SampleOpen(dir);
      auto d = DecodeOpen(EncodeOpen(o));
      REQUIRE_MESSAGE(d.ok(), d.error().ToString());
      CHECK(*d == o);
      o.token.reset();
      o.protection.reset();
      o.options = OpenOptions{kMaxChunkSize, false, Existing::kSkip};
      o.streams = kMaxStreams;
      d = DecodeOpen(EncodeOpen(o));
      REQUIRE_MESSAGE(d.ok(), d.error().ToString());
      CHECK(*d == o);
      CHECK_FALSE(d->token.has_value());
      CHECK_FALSE(d->protection.has_value());  // absent: the policies of both ends decide
      o.options.hard_links = true;             // written only when set; absent reads as false
      d = DecodeOpen(EncodeOpen(o));
      REQUIRE_MESSAGE(d.ok(), d.error().ToString());
      CHECK(d->options.hard_links);
      o.options.hard_links = false;
      CHECK(std::string(reinterpret_cast<const char*>(EncodeOpen(o).data()), EncodeOpen(o).size())
                .find("hard_links") == std::string::npos);

      // A query rides on a pull's OPEN; on a push it is refused, and an unknown op too.
      o.query = Query{"checksum", 1u << 20, 0};
      d = DecodeOpen(EncodeOpen(o));
      if (dir == Direction::kPull) {
        REQUIRE_MESSAGE(d.ok(), d.error().ToString());
        CHECK(*d == o);
        o.query = Query{"list", 0, 500};
        d = DecodeOpen(EncodeOpen(o));
        REQUIRE(d.ok());
        CHECK(d->query->limit == 500);
        o.query->op = "delete";
        d = DecodeOpen(EncodeOpen(o));
        REQUIRE_FALSE(d.ok());
        CHECK(d.error().message().find("OPEN.query.op") != std::string::npos);
      } else {
        REQUIRE_FALSE(d.ok());
        CHECK(d.error().message().find("only with direction pull") != std::string::npos);
      }
      o.query.reset();

      OpenOk ok = SampleOpenOk(dir);
      auto dk = DecodeOpenOk(EncodeOpenOk(ok), dir);
      REQUIRE_MESSAGE(dk.ok(), dk.error().ToString());
      CHECK(*dk == ok);
    }
    for (Code c : {Code::kInvalidArgument, Code::kCancelled, Code::kUnauthenticated}) {
      ErrorMsg e{c, "no\nway \"out\" ü", c == Code::kCancelled};
      auto d = DecodeErrorMsg(EncodeErrorMsg(e));
      REQUIRE(d.ok());
      CHECK(*d == e);
    }
    auto end = DecodeEnd(EncodeEnd(End{~0ull}));
    REQUIRE(end.ok());
    CHECK(end->files == ~0ull);
    Summary sum{1, 2, 3, 4, 5, 6, ~0ull, {}};
    auto ds = DecodeSummary(EncodeSummary(sum));
    REQUIRE(ds.ok());
    CHECK(*ds == sum);
    auto dc = DecodeCancel(EncodeCancel(Cancel{"user asked"}));
    REQUIRE(dc.ok());
    CHECK(dc->reason == "user asked");
    for (Protection p : {Protection::kClear, Protection::kIntegrity, Protection::kPrivate}) {
      auto st = DecodeStart(EncodeStart(Start{p}));
      REQUIRE(st.ok());
      CHECK(st->protection == p);
    }
    CHECK(Text(EncodeStart(Start{Protection::kPrivate})) == R"({"protection":"private"})");
    CHECK(EncodeKeepalive(Keepalive{}).empty());
    CHECK(DecodeKeepalive(EncodeKeepalive(Keepalive{})).ok());
    CHECK(Text(EncodeKeepalive(Keepalive{uint64_t{123456789}})) == R"({"verified":123456789})");
    auto kv = DecodeKeepalive(EncodeKeepalive(Keepalive{uint64_t{123456789}}));
    REQUIRE(kv.ok());
    CHECK(kv->verified == uint64_t{123456789});
  }

  TEST_CASE("the wire bytes the daemon and the engines wrote before the typed messages decode") {
    // The JSON texts as daemon/server.cc and the engines built and dumped them (nlohmann::json
    // sorts keys), and the typed encoders write the same bytes.
    SUBCASE("HELLO, both ways") {
      const std::string initiator = R"({"endpoint":"dtn-a","proto":1,"software":"pororoca 0.9.0"})";
      auto h = DecodeHello(Bytes(initiator));
      REQUIRE_MESSAGE(h.ok(), h.error().ToString());
      CHECK(h->proto == 1);
      CHECK(h->endpoint == "dtn-a");
      CHECK(h->software == "pororoca 0.9.0");
      CHECK_FALSE(h->session.has_value());
      CHECK(Text(EncodeHello(*h)) == initiator);
      const std::string responder =
          R"({"endpoint":"dtn-b","proto":1,"session":"000102030405060708090a0b0c0d0e0f","software":"pororoca 0.9.0"})";
      h = DecodeHello(Bytes(responder));
      REQUIRE_MESSAGE(h.ok(), h.error().ToString());
      REQUIRE(h->session.has_value());
      CHECK((*h->session)[15] == std::byte{15});
      CHECK(Text(EncodeHello(*h)) == responder);
    }
    SUBCASE("OPEN, push and pull") {
      const std::string push =
          R"({"classification":"internal","direction":"push","local_path":"/src/a.bin",)"
          R"("options":{"chunk_size":4194304,"existing":"fail","streams":4,"sync":false},)"
          R"("path":"/in/","recursive":false,"src":{"is_dir":false,"name":"a.bin"},"streams":4,)"
          R"("token":"t.o.k","trailing_slash":true,"transfer_id":"00112233445566778899aabbccddeeff"})";
      auto o = DecodeOpen(Bytes(push));
      REQUIRE_MESSAGE(o.ok(), o.error().ToString());
      CHECK(o->direction == Direction::kPush);
      CHECK(o->streams == 4);
      CHECK(o->options == OpenOptions{4u << 20, false, Existing::kFail});
      CHECK(o->src == Source{"a.bin", false});
      CHECK(o->classification == "internal");
      CHECK(o->token == "t.o.k");
      CHECK(o->local_path == "/src/a.bin");
      CHECK(o->path == "/in/");
      CHECK(o->trailing_slash);
      CHECK(Text(EncodeOpen(*o)) == push);
      // A pull, without a token (the initiator had none).
      const std::string pull =
          R"({"direction":"pull","local_path":"/dst","options":{"chunk_size":65536,"existing":"skip",)"
          R"("streams":2,"sync":true},"path":"/data/tree","recursive":true,"streams":2,)"
          R"("trailing_slash":false,"transfer_id":"00112233445566778899aabbccddeeff"})";
      o = DecodeOpen(Bytes(pull));
      REQUIRE_MESSAGE(o.ok(), o.error().ToString());
      CHECK(o->direction == Direction::kPull);
      CHECK(o->options == OpenOptions{65536, true, Existing::kSkip});
      CHECK_FALSE(o->token.has_value());
      CHECK_FALSE(o->src.has_value());
      CHECK(Text(EncodeOpen(*o)) == pull);
    }
    SUBCASE("OPEN_OK, push and pull") {
      const std::string push =
          R"({"rule":"","target":"dtn-b:/in/a.bin","transfer_id":"00112233445566778899aabbccddeeff"})";
      auto ok = DecodeOpenOk(Bytes(push), Direction::kPush);
      REQUIRE_MESSAGE(ok.ok(), ok.error().ToString());
      CHECK(ok->target == "dtn-b:/in/a.bin");
      CHECK(Text(EncodeOpenOk(*ok)) == push);
      const std::string pull =
          R"({"classification":"public","rule":"pulls","src":{"is_dir":true,"name":"tree"},)"
          R"("transfer_id":"00112233445566778899aabbccddeeff"})";
      ok = DecodeOpenOk(Bytes(pull), Direction::kPull);
      REQUIRE_MESSAGE(ok.ok(), ok.error().ToString());
      CHECK(ok->src == Source{"tree", true});
      CHECK(ok->classification == "public");
      CHECK(ok->rule == "pulls");
      CHECK(Text(EncodeOpenOk(*ok)) == pull);
    }
    SUBCASE("ERROR, END, SUMMARY") {
      const std::string error =
          R"({"code":8,"message":"transfer cancelled","name":"Cancelled","retryable":false})";
      auto e = DecodeErrorMsg(Bytes(error));
      REQUIRE_MESSAGE(e.ok(), e.error().ToString());
      CHECK(e->code == Code::kCancelled);
      CHECK(Text(EncodeErrorMsg(*e)) == error);
      CHECK(Text(EncodeErrorMsg(ErrorMsgFromStatus(Status::Cancelled("transfer cancelled")))) == error);
      const std::string end = R"({"files":12})";
      auto en = DecodeEnd(Bytes(end));
      REQUIRE(en.ok());
      CHECK(en->files == 12);
      CHECK(Text(EncodeEnd(*en)) == end);
      const std::string summary =
          R"({"bytes_committed":1048576,"bytes_resumed":0,"bytes_skipped":10,"chunks_corrupt":1,)"
          R"("files_committed":3,"files_failed":0,"files_skipped":1})";
      auto s = DecodeSummary(Bytes(summary));
      REQUIRE_MESSAGE(s.ok(), s.error().ToString());
      CHECK(*s == Summary{3, 1048576, 1, 10, 0, 1, 0, {}});
      CHECK(Text(EncodeSummary(*s)) == summary);
      CHECK(SummaryToJson(*s) == json::parse(summary));
    }
  }

  TEST_CASE("unknown keys are ignored") {
    json j = Parse(EncodeHello(SampleHello(false)));
    j["features"] = {"zstd", 3};
    j["later"] = nullptr;
    auto h = DecodeHello(Dump(j));
    REQUIRE(h.ok());
    CHECK(*h == SampleHello(false));
    json o = Parse(EncodeOpen(SampleOpen(Direction::kPush)));
    o["options"]["compression"] = "zstd";
    o["src"]["uid"] = 1000;
    auto d = DecodeOpen(Dump(o));
    REQUIRE(d.ok());
    CHECK(*d == SampleOpen(Direction::kPush));
  }

  TEST_CASE("HELLO: every field missing, of the wrong type or out of range names the field") {
    const json valid = Parse(EncodeHello(SampleHello(true)));
    CheckFields(StatusOf(DecodeHello), valid,
                {
                    {"/proto",
                     "HELLO.proto",
                     true,
                     {"1", 1.0, true, json::array()},
                     {18446744073709551615ull},
                     "out of range"},
                    {"/endpoint", "HELLO.endpoint", true, {5, json::object(), nullptr}, {}, ""},
                    {"/software", "HELLO.software", true, {false}, {}, ""},
                    {"/session",
                     "HELLO.session",
                     false,
                     {7, json::array()},
                     {"", "abc", std::string(30, 'a'), std::string(34, 'a'), std::string(32, 'g'),
                      "000102030405060708090a0b0c0d0e0 "},
                     "expected 32 hex digits"},
                });
    // Another version is not the decoder's business: the daemon refuses it with NotSupported.
    json v2 = valid;
    v2["proto"] = 2;
    CHECK(DecodeHello(Dump(v2))->proto == 2);
    v2["proto"] = -1;
    CHECK(DecodeHello(Dump(v2))->proto == -1);
    CheckNotObject(StatusOf(DecodeHello), "HELLO");
  }

  TEST_CASE("HELLO transports and CHANNELS: the lists are bounded and every bad element names the field") {
    json h = Parse(EncodeHello(SampleHello(true)));
    CHECK(h["transports"] == json::array({"ucx", "tcp"}));
    CHECK(h["transport"] == "ucx");
    // Absent: a peer from before the negotiation (tcp).
    json old_peer = h;
    old_peer.erase("transports");
    old_peer.erase("transport");
    auto d = DecodeHello(Dump(old_peer));
    REQUIRE(d.ok());
    CHECK(d->transports.empty());
    CHECK(!d->transport.has_value());
    // Unknown names are kept (a newer peer's), never an error.
    h["transports"] = json::array({"verbs-ng", "tcp"});
    CHECK(DecodeHello(Dump(h))->transports == std::vector<std::string>{"verbs-ng", "tcp"});
    for (const json& bad : {json("ucx"), json::array({1}), json::array({""}),
                            json::array({std::string(17, 'x')}), json(std::vector<std::string>(9, "tcp"))}) {
      CAPTURE(bad.dump());
      json b = h;
      b["transports"] = bad;
      auto r = DecodeHello(Dump(b));
      REQUIRE(!r.ok());
      CHECK(r.status().message().find("HELLO.transports: ") == 0);
    }
    json t = h;
    t["transport"] = 5;
    CHECK(DecodeHello(Dump(t)).status().message().find("HELLO.transport: ") == 0);
    CHECK(IsTransportName("tcp"));
    CHECK(IsTransportName("ucx"));
    CHECK(IsTransportName("fabric"));
    CHECK(!IsTransportName("verbs"));
    CHECK(!IsTransportName(""));
    CHECK(!IsTransportName("UCX"));

    Channels c{"ucx", {{std::byte{'1'}, std::byte{':'}, std::byte{'2'}}, {std::byte{0xff}}}};
    auto back = DecodeChannels(EncodeChannels(c), 2);
    REQUIRE(back.ok());
    CHECK(*back == c);
    auto wrong_count = DecodeChannels(EncodeChannels(c), 3);
    REQUIRE(!wrong_count.ok());
    CHECK(wrong_count.status().message() == "CHANNELS.addresses: 2 addresses for 3 streams");
    json cj = Parse(EncodeChannels(c));
    for (const json& bad : {json("00"), json::array({""}), json::array({"zz"}), json::array({7}),
                            json::array({std::string(2 * kMaxChannelAddress + 2, 'a')})}) {
      CAPTURE(bad.dump());
      json b = cj;
      b["addresses"] = bad;
      auto r = DecodeChannels(Dump(b), static_cast<uint32_t>(bad.is_array() ? bad.size() : 1));
      REQUIRE(!r.ok());
      CHECK(r.status().message().find("CHANNELS.addresses: ") == 0);
    }
    json no_t = cj;
    no_t.erase("transport");
    CHECK(DecodeChannels(Dump(no_t), 2).status().message() == "CHANNELS.transport: missing");
    CHECK(MsgTypeName(MsgType::kChannels) == "CHANNELS");
  }

  TEST_CASE("OPEN: every field missing, of the wrong type or out of range names the field") {
    const std::string long_path(kMaxPathBytes + 1, 'p');
    const json push = Parse(EncodeOpen(SampleOpen(Direction::kPush)));
    const std::vector<FieldCase> common = {
        {"/transfer_id",
         "OPEN.transfer_id",
         true,
         {1, nullptr},
         {"", "abc", std::string(31, 'a'), std::string(33, 'a'), std::string(32, 'x')},
         "expected 32 hex digits"},
        {"/direction", "OPEN.direction", true, {1, true}, {"", "sideways", "PUSH"}, "must be push or pull"},
        {"/path", "OPEN.path", true, {1, json::array()}, {long_path}, "longer than 4096 bytes"},
        {"/trailing_slash", "OPEN.trailing_slash", true, {"true", 1}, {}, ""},
        {"/recursive", "OPEN.recursive", true, {0, "false", nullptr}, {}, ""},
        {"/streams",
         "OPEN.streams",
         true,
         {"4", -1, 1.5, true},
         {0, kMaxStreams + 1, 1ull << 40},
         "out of range"},
        {"/options", "OPEN.options", true, {json::array(), "x", 4}, {}, ""},
        {"/options/chunk_size",
         "OPEN.options.chunk_size",
         true,
         {"1M", -4096, 65536.0},
         {0, kMaxChunkSize + 1, 1ull << 33},
         "out of range"},
        {"/options/sync", "OPEN.options.sync", true, {1, "yes"}, {}, ""},
        {"/options/existing",
         "OPEN.options.existing",
         true,
         {1, false},
         {"replace", "", "Fail"},
         "must be fail, overwrite or skip"},
        {"/local_path", "OPEN.local_path", true, {false}, {long_path}, "longer than 4096 bytes"},
        {"/token", "OPEN.token", false, {5, json::object()}, {}, ""},
        {"/protection",
         "OPEN.protection",
         false,
         {2, true, json::array()},
         {"", "secret", "Private"},
         "must be clear, integrity or private"},
    };
    std::vector<FieldCase> push_cases = common;
    push_cases.push_back({"/src", "OPEN.src", true, {"a.bin", json::array()}, {}, ""});
    push_cases.push_back({"/src/name",
                          "OPEN.src.name",
                          true,
                          {1, nullptr},
                          {"a/b", "..", ".", "/abs", std::string("a\0b", 3), std::string(256, 'n')},
                          ""});
    push_cases.push_back({"/src/is_dir", "OPEN.src.is_dir", true, {"true", 0}, {}, ""});
    push_cases.push_back({"/classification", "OPEN.classification", true, {1, json::array()}, {}, ""});
    CheckFields(StatusOf(DecodeOpen), push, push_cases);
    // The boundaries themselves are accepted.
    for (auto [ptr, v] :
         {std::pair{"/streams", json(1)}, std::pair{"/streams", json(kMaxStreams)},
          std::pair{"/options/chunk_size", json(1)}, std::pair{"/options/chunk_size", json(kMaxChunkSize)},
          std::pair{"/path", json(std::string(kMaxPathBytes, 'p'))}, std::pair{"/src/name", json("")}}) {
      CAPTURE(ptr);
      json j = push;
      j[json::json_pointer(ptr)] = v;
      CHECK(DecodeOpen(Dump(j)).ok());
    }
    // A pull's src and classification are not read: missing or malformed, the OPEN decodes.
    const json pull = Parse(EncodeOpen(SampleOpen(Direction::kPull)));
    REQUIRE_FALSE(pull.contains("src"));
    CheckFields(StatusOf(DecodeOpen), pull, common);
    json pull_src = pull;
    pull_src["src"] = "garbage";
    pull_src["classification"] = 5;
    auto d = DecodeOpen(Dump(pull_src));
    REQUIRE(d.ok());
    CHECK_FALSE(d->src.has_value());
    CHECK_FALSE(d->classification.has_value());
    CheckNotObject(StatusOf(DecodeOpen), "OPEN");
  }

  TEST_CASE("OPEN_OK: every field missing, of the wrong type or out of range names the field") {
    const std::vector<FieldCase> common = {
        {"/transfer_id",
         "OPEN_OK.transfer_id",
         true,
         {json::array()},
         {"?", std::string(32, 'z')},
         "expected 32 hex digits"},
        {"/rule", "OPEN_OK.rule", true, {1, nullptr}, {}, ""},
        {"/protection",
         "OPEN_OK.protection",
         false,
         {1, nullptr},
         {"none", "PRIVATE"},
         "must be clear, integrity or private"},
    };
    auto decode_push = [](std::span<const std::byte> b) {
      return DecodeOpenOk(b, Direction::kPush).status();
    };
    auto decode_pull = [](std::span<const std::byte> b) {
      return DecodeOpenOk(b, Direction::kPull).status();
    };
    std::vector<FieldCase> push_cases = common;
    push_cases.push_back({"/target", "OPEN_OK.target", true, {1, json::object()}, {}, ""});
    CheckFields(decode_push, Parse(EncodeOpenOk(SampleOpenOk(Direction::kPush))), push_cases);
    std::vector<FieldCase> pull_cases = common;
    pull_cases.push_back({"/src", "OPEN_OK.src", true, {"x", 1}, {}, ""});
    pull_cases.push_back({"/src/name", "OPEN_OK.src.name", true, {false}, {"a/b", "..", "/x"}, ""});
    pull_cases.push_back({"/src/is_dir", "OPEN_OK.src.is_dir", true, {"no"}, {}, ""});
    pull_cases.push_back({"/classification", "OPEN_OK.classification", true, {3}, {}, ""});
    CheckFields(decode_pull, Parse(EncodeOpenOk(SampleOpenOk(Direction::kPull))), pull_cases);
    // The direction decides what is required: a push's OPEN_OK is not a valid pull's, and back.
    CheckFieldError(decode_pull, Parse(EncodeOpenOk(SampleOpenOk(Direction::kPush))), "OPEN_OK.src",
                    "missing");
    CheckFieldError(decode_push, Parse(EncodeOpenOk(SampleOpenOk(Direction::kPull))), "OPEN_OK.target",
                    "missing");
    CheckNotObject(decode_push, "OPEN_OK");
    CheckNotObject(decode_pull, "OPEN_OK");
  }

  TEST_CASE("ERROR: fields checked, an unknown code reads as Internal, conversion to and from Status") {
    const json valid = Parse(EncodeErrorMsg(ErrorMsg{Code::kNotFound, "no such file", false}));
    CheckFields(
        StatusOf(DecodeErrorMsg), valid,
        {
            {"/code", "ERROR.code", true, {"2", 2.5, nullptr}, {18446744073709551615ull}, "out of range"},
            {"/message", "ERROR.message", true, {2, json::array()}, {}, ""},
            {"/retryable", "ERROR.retryable", true, {"false", 0}, {}, ""},
        });
    // "name" is for humans: not read, whatever it holds.
    json j = valid;
    j.erase("name");
    CHECK(DecodeErrorMsg(Dump(j)).ok());
    j["name"] = 42;
    CHECK(DecodeErrorMsg(Dump(j))->code == Code::kNotFound);
    for (int64_t code : {0, -1, 14, 200, 1 << 20}) {
      CAPTURE(code);
      j["code"] = code;
      auto e = DecodeErrorMsg(Dump(j));
      REQUIRE(e.ok());
      CHECK(e->code == Code::kInternal);
    }
    Status s = StatusFromErrorMsg(ErrorMsg{Code::kUnavailable, "daemon stopping", true});
    CHECK(s.code() == Code::kUnavailable);
    CHECK(s.message() == "peer: daemon stopping");
    CHECK(s.retryable());
    Status not_retryable = StatusFromErrorMsg(ErrorMsg{Code::kUnavailable, "x", false});
    CHECK_FALSE(not_retryable.retryable());
    ErrorMsg from = ErrorMsgFromStatus(Status::DataLoss("digest mismatch").WithRetryable(true));
    CHECK(from == ErrorMsg{Code::kDataLoss, "digest mismatch", true});
    CHECK(ErrorMsgFromStatus(Status::OK()).code == Code::kInternal);
    Status body = StatusFromErrorBody(EncodeErrorMsg(ErrorMsg{Code::kPermissionDenied, "policy", false}));
    CHECK(body.code() == Code::kPermissionDenied);
    CHECK(body.message() == "peer: policy");
    Status bad = StatusFromErrorBody(Bytes(R"({"code":"3","message":"m","retryable":false})"));
    CHECK(bad.code() == Code::kProtocol);
    CHECK(bad.message() == "ERROR.code: expected an integer");
    CHECK(StatusFromErrorBody(Bytes("")).code() == Code::kProtocol);
    CheckNotObject(StatusOf(DecodeErrorMsg), "ERROR");
  }

  TEST_CASE("END, SUMMARY, CANCEL: every field missing or of the wrong type names the field") {
    CheckFields(StatusOf(DecodeEnd), Parse(EncodeEnd(End{3})),
                {{"/files", "END.files", true, {"3", -3, 3.5, nullptr}, {}, ""}});
    CheckNotObject(StatusOf(DecodeEnd), "END");
    std::vector<FieldCase> summary_cases;
    for (const char* f : {"files_committed", "bytes_committed", "files_skipped", "bytes_skipped",
                          "files_failed", "chunks_corrupt", "bytes_resumed"}) {
      summary_cases.push_back(
          {std::string("/") + f, std::string("SUMMARY.") + f, true, {"1", -1, 0.5, json::object()}, {}, ""});
    }
    CheckFields(StatusOf(DecodeSummary), Parse(EncodeSummary(Summary{1, 2, 3, 4, 5, 6, 7, {}})),
                summary_cases);
    CheckNotObject(StatusOf(DecodeSummary), "SUMMARY");
    CheckFields(StatusOf(DecodeCancel), Parse(EncodeCancel(Cancel{"why"})),
                {{"/reason", "CANCEL.reason", true, {1, nullptr}, {}, ""}});
    CheckNotObject(StatusOf(DecodeCancel), "CANCEL");
    Status c = StatusFromCancelBody(EncodeCancel(Cancel{"operator"}));
    CHECK(c.code() == Code::kCancelled);
    CHECK(c.message() == "transfer cancelled by the peer: operator");
    CHECK(StatusFromCancelBody(EncodeCancel(Cancel{""})).message() == "transfer cancelled by the peer");
    CHECK(StatusFromCancelBody(Bytes("{}")).message() == "CANCEL.reason: missing");
  }

  TEST_CASE("SUMMARY: the hard links the receiver could not make, checked against files_failed") {
    Summary sum{1, 2, 3, 4, 2, 0, 0, {{"t/b", "not linked: its target t/a was not transferred"}}};
    auto d = DecodeSummary(EncodeSummary(sum));
    REQUIRE_MESSAGE(d.ok(), d.error().ToString());
    CHECK(*d == sum);
    CHECK_FALSE(SummaryToJson(Summary{1, 2, 3, 4, 0, 0, 0, {}}).contains("link_failures"));
    sum.files_failed = 0;  // more names than failures
    CHECK(DecodeSummary(EncodeSummary(sum)).error().code() == Code::kProtocol);
    CHECK(DecodeSummary(
              Bytes(R"({"files_committed":1,"bytes_committed":1,"files_skipped":0,"bytes_skipped":0,)"
                    R"("files_failed":1,"chunks_corrupt":0,"bytes_resumed":0,"link_failures":[{"path":1}]})"))
              .error()
              .code() == Code::kProtocol);
  }

  TEST_CASE("END: the sender's special files, when there are any, with their names checked") {
    End e(7);
    e.specials = 2;
    e.special_names = {{"sub/pipe", "FIFO"}, {"dev/null", "character device"}};
    auto d = DecodeEnd(EncodeEnd(e));
    REQUIRE_MESSAGE(d.ok(), d.error().ToString());
    CHECK(*d == e);
    CHECK(Text(EncodeEnd(End{3})) == R"({"files":3})");  // none: the bytes of before
    const json valid = Parse(EncodeEnd(e));
    CheckFields(
        StatusOf(DecodeEnd), valid,
        {{"/specials", "END.specials", false, {"2", -1}, {}, ""},
         {"/special_names/0/path", "END.special_names[].path", true, {1}, {std::string(5000, 'p')}, ""},
         {"/special_names/0/kind", "END.special_names[].kind", true, {false}, {std::string(65, 'k')}, ""}});
    json no_names = valid;
    no_names.erase("special_names");
    CheckFieldError(StatusOf(DecodeEnd), no_names, "END.special_names", "expected an array");
    json too_many = valid;
    too_many["specials"] = 1;
    CheckFieldError(StatusOf(DecodeEnd), too_many, "END.special_names", "more names than specials");
  }

  TEST_CASE("START: the protection level is required and must be one of the three") {
    CheckFields(StatusOf(DecodeStart), Parse(EncodeStart(Start{Protection::kIntegrity})),
                {{"/protection",
                  "START.protection",
                  true,
                  {1, nullptr, json::object()},
                  {"", "confidential", "Integrity"},
                  "must be clear, integrity or private"}});
    CheckNotObject(StatusOf(DecodeStart), "START");
    // An absent OPEN_OK.protection reads as clear (the bytes of a responder that requires nothing).
    json ok = Parse(EncodeOpenOk(SampleOpenOk(Direction::kPush)));
    ok.erase("protection");
    auto d = DecodeOpenOk(Dump(ok), Direction::kPush);
    REQUIRE(d.ok());
    CHECK(d->protection == Protection::kClear);
  }

  TEST_CASE("KEEPALIVE: an empty body or any JSON object, anything else is refused") {
    CHECK(DecodeKeepalive({}).ok());
    CHECK(DecodeKeepalive(Bytes("{}")).ok());
    CHECK(DecodeKeepalive(Bytes(R"({"t": 1})")).ok());
    CHECK(!DecodeKeepalive(Bytes(R"({"t": 1})"))->verified.has_value());
    for (std::string_view body :
         {"[]", "0", "{", "\xff", R"({"verified": -1})", R"({"verified": "5"})", R"({"verified": 1.5})"}) {
      CAPTURE(body);
      auto k = DecodeKeepalive(Bytes(body));
      REQUIRE_FALSE(k.ok());
      CHECK(k.error().code() == Code::kProtocol);
      CHECK(std::string(k.error().message()).rfind("KEEPALIVE", 0) == 0);
    }
  }

  TEST_CASE("names of directions, existing modes and message types") {
    for (Direction d : {Direction::kPush, Direction::kPull}) CHECK(*ParseDirection(DirectionName(d)) == d);
    for (Existing e : {Existing::kFail, Existing::kOverwrite, Existing::kSkip}) {
      CHECK(*ParseExisting(ExistingName(e)) == e);
    }
    CHECK(ParseDirection("both").error().code() == Code::kInvalidArgument);
    CHECK(ParseExisting("").error().code() == Code::kInvalidArgument);
    CHECK(MsgTypeName(MsgType::kOpenOk) == "OPEN_OK");
    CHECK(MsgTypeName(MsgType::kKeepalive) == "KEEPALIVE");
    CHECK(MsgTypeName(MsgType::kStart) == "START");
    CHECK(MsgTypeName(MsgType(77)) == "unknown (77)");
  }
}

}  // namespace
}  // namespace pororoca::proto
