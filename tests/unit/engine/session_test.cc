// One end of a session (RunSender, RunReceiver) against a scripted peer: a test thread that speaks
// the control protocol by hand on a loopback TCP connection. Covers what a well-behaved daemon at
// the other end never does, or does only in a narrow window: a receiver finishing a file before its
// data was sent, FILE_DONE or BAD_CHUNK messages naming the wrong files, a sender announcing files
// below a symbolic link it sent.
#include "engine/session.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/control.h"
#include "support/tcp_pair.h"
#include "support/temp_dir.h"
#include "transport/tcp.h"

namespace pororoca::engine {
namespace {

using proto::MsgType;
using test::ConnectedTcpPair;

// n pseudo-random bytes (splitmix64 from `seed`).
std::string PseudoRandom(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    out[i] = static_cast<char>(z ^ (z >> 31));
  }
  return out;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, size_t size) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
  REQUIRE(fd.valid());
  std::vector<char> block(1 << 16);
  for (size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>(i * 31 + 7);
  for (size_t done = 0; done < size; done += block.size()) {
    size_t n = std::min(block.size(), size - done);
    REQUIRE(::write(fd.get(), block.data(), n) == static_cast<ssize_t>(n));
  }
}

// One end of a session (RunSender or RunReceiver) in a background thread over one loopback
// control connection and one data channel; the test plays the other end on `ctl` and `data`.
class EngineRun {
 public:
  static constexpr uint32_t kChunk = 64 << 10;
  using RunFn = Result<nlohmann::json> (*)(const ExportRoot&, const std::string&, const EngineOptions&,
                                           const DataPath&);

  EngineRun(const std::string& root_path, size_t buffers, RunFn run, const std::string& rel,
            uint32_t chunk_size = kChunk)
      : chunk(chunk_size) {
    auto root = ExportRoot::Create(root_path);
    REQUIRE(root.has_value());
    root_ = std::make_unique<ExportRoot>(std::move(*root));
    auto [ca, cb] = ConnectedTcpPair();
    engine_ctl_ = std::make_unique<ControlChannel>(std::make_unique<transport::TcpStream>(std::move(ca)));
    ctl = std::make_unique<ControlChannel>(std::make_unique<transport::TcpStream>(std::move(cb)));
    auto [da, db] = ConnectedTcpPair();
    channels_.push_back(transport::MakeTcpMessageChannel(std::move(da)));
    data = transport::MakeTcpMessageChannel(std::move(db));
    auto pool = io::BufferPool::Create(chunk, buffers);
    REQUIRE(pool.has_value());
    pool_ = std::move(*pool);
    opts_.chunk_size = chunk;
    DataPath dp;
    dp.ctl = engine_ctl_.get();
    dp.channels = &channels_;
    dp.pool = pool_.get();
    dp.stats = &stats;
    dp.cancel = &cancel_;
    thread_ = std::thread([this, run, rel, dp] { result_ = run(*root_, rel, opts_, dp); });
  }
  ~EngineRun() {
    if (thread_.joinable()) {
      cancel_ = true;
      ctl->Shutdown();
      data->Shutdown();
      thread_.join();
    }
  }
  EngineRun(const EngineRun&) = delete;
  EngineRun& operator=(const EngineRun&) = delete;

  // The engine's result, once it has ended.
  Result<nlohmann::json> Join() {
    thread_.join();
    return std::move(result_);
  }

  const uint32_t chunk;                             // the session's chunk size
  std::unique_ptr<ControlChannel> ctl;              // the test's end
  std::unique_ptr<transport::MessageChannel> data;  // the test's end of the one data channel
  TransferStats stats;

 private:
  std::unique_ptr<ExportRoot> root_;
  std::unique_ptr<ControlChannel> engine_ctl_;
  std::vector<std::unique_ptr<transport::MessageChannel>> channels_;
  std::unique_ptr<io::BufferPool> pool_;
  EngineOptions opts_;
  std::atomic<bool> cancel_{false};
  Result<nlohmann::json> result_ = Status::Internal("not run");
  std::thread thread_;
};

// One sender session; the test plays the receiver.
class SenderRun : public EngineRun {
 public:
  SenderRun(const std::string& root_path, const std::string& src_rel, uint32_t chunk_size = kChunk)
      : EngineRun(root_path, 16, &RunSender, src_rel, chunk_size) {}

  proto::ControlFrame Expect(MsgType type) {
    auto f = ctl->Receive();
    REQUIRE_MESSAGE(f.has_value(), f.error().ToString());
    REQUIRE(int(f->type) == int(type));
    return std::move(*f);
  }
  std::vector<proto::FileEntry> ExpectFiles() {
    auto files = proto::DecodeFiles(Expect(MsgType::kFiles).body);
    REQUIRE(files.has_value());
    return std::move(*files);
  }
  void Plan(const std::vector<proto::PlanEntry>& plan) {
    REQUIRE(ctl->Send(MsgType::kPlan, proto::EncodePlan(plan)).ok());
  }
  void Done(const std::vector<proto::FileDone>& dones) {
    REQUIRE(ctl->Send(MsgType::kFileDone, proto::EncodeFileDones(dones)).ok());
  }
  // The next data message: its header and payload.
  std::pair<proto::ChunkHeader, std::vector<std::byte>> NextData() {
    std::vector<std::byte> payload(chunk);
    std::array<std::byte, transport::MessageChannel::kMaxHeader> hdr{};
    size_t got = 0;
    auto r = data->Receive(hdr,
                           [&](std::span<const std::byte>, size_t n) -> Result<std::span<std::byte>> {
                             got = n;
                             return std::span(payload);
                           },
                           chunk, {});
    REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
    auto h = proto::DecodeChunkHeader(std::span<const std::byte>(hdr.data(), r->header_len));
    REQUIRE(h.has_value());
    payload.resize(got);
    return {*h, std::move(payload)};
  }
  // Reads data messages until the end-of-stream message; returns the data chunks' count.
  uint64_t DrainData() {
    std::vector<std::byte> payload(kChunk);
    std::array<std::byte, transport::MessageChannel::kMaxHeader> hdr{};
    uint64_t chunks = 0;
    while (true) {
      auto r = data->Receive(hdr,
                             [&](std::span<const std::byte>, size_t) -> Result<std::span<std::byte>> {
                               return std::span(payload);
                             },
                             kChunk, {});
      REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
      auto h = proto::DecodeChunkHeader(std::span<const std::byte>(hdr.data(), r->header_len));
      REQUIRE(h.has_value());
      if (h->kind == proto::ChunkKind::kEos) return chunks;
      chunks++;
    }
  }
};

TEST_SUITE("engine: sender") {
  TEST_CASE("a file the receiver finished before its data was read is not read any further") {
    test::TempDir tmp;
    // 32 MiB in 64 KiB chunks: more than the socket buffers and queues hold while nobody reads
    // the data channel, so most chunks can only be sent after the FILE_DONE has arrived.
    constexpr uint64_t kSize = 32ull << 20, kChunks = kSize / SenderRun::kChunk;
    WriteBytes(tmp / "big.bin", kSize);
    SenderRun run(tmp.path(), "big.bin");
    auto files = run.ExpectFiles();
    REQUIRE(files.size() == 1);
    CHECK(files[0].size == kSize);
    run.Plan({proto::PlanEntry{files[0].id, proto::PlanAction::kSendAll, Code::kOk, "", {}}});
    // The receiver gives up on the file at once (say it could not create it).
    run.Done({proto::FileDone{files[0].id, Code::kResourceExhausted,
                              "cannot create big.bin: no space left on device"}});
    // The sender ends its data channel and announces the end with no FILE_END for the file.
    std::thread drain_thread;
    uint64_t chunks = 0;
    drain_thread = std::thread([&] { chunks = run.DrainData(); });
    auto end = run.ctl->Receive();
    REQUIRE(end.has_value());
    if (end->type == MsgType::kFileEnd) end = run.ctl->Receive();  // one may have been queued already
    REQUIRE(end.has_value());
    CHECK(int(end->type) == int(MsgType::kEnd));
    REQUIRE(run.ctl
                ->Send(MsgType::kSummary,
                       proto::EncodeSummary(proto::Summary{.files_failed = 1, .link_failures = {}}))
                .ok());
    drain_thread.join();
    auto r = run.Join();
    CHECK_MESSAGE(r.has_value(), r.error().ToString());
    MESSAGE(chunks << " of " << kChunks << " chunks sent");
    CHECK(chunks < kChunks);
    CHECK(run.stats.files_failed == 1);
    CHECK(run.stats.bytes_sent.load() == chunks * SenderRun::kChunk);
  }

  TEST_CASE(
      "FILE_DONE twice for one file, or for a file never planned, ends the session with a protocol error") {
    test::TempDir tmp;
    WriteBytes(tmp / "a.bin", 100);
    for (bool twice : {true, false}) {
      CAPTURE(twice);
      SenderRun run(tmp.path(), "a.bin");
      auto files = run.ExpectFiles();
      REQUIRE(files.size() == 1);
      const uint64_t id = files[0].id;
      if (twice) {
        run.Plan({proto::PlanEntry{id, proto::PlanAction::kSendAll, Code::kOk, "", {}}});
        run.Expect(MsgType::kFileEnd);
        run.Done({proto::FileDone{id, Code::kOk, ""}});
        run.Done({proto::FileDone{id, Code::kOk, ""}});
      } else {
        run.Done({proto::FileDone{id, Code::kOk, ""}});  // announced, but no PLAN yet
      }
      auto r = run.Join();
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kProtocol);
      CHECK(std::string(r.error().message()).find("FILE_DONE names") != std::string::npos);
      CHECK(run.stats.files_done.load() == (twice ? 1u : 0u));
    }
  }

  TEST_CASE("BAD_CHUNK for a file the receiver has already finished is ignored, not a protocol error") {
    // The receiver may fail a file while one of its chunks is on the way, find that chunk corrupt
    // and ask for it again after its FILE_DONE: the session goes on.
    test::TempDir tmp;
    WriteBytes(tmp / "a.bin", 100);
    SenderRun run(tmp.path(), "a.bin");
    auto files = run.ExpectFiles();
    REQUIRE(files.size() == 1);
    const uint64_t id = files[0].id;
    run.Plan({proto::PlanEntry{id, proto::PlanAction::kSendAll, Code::kOk, "", {}}});
    run.Expect(MsgType::kFileEnd);
    run.Done({proto::FileDone{id, Code::kDataLoss, "source shrank"}});
    REQUIRE(
        run.ctl->Send(MsgType::kBadChunk, proto::EncodeBadChunk(proto::BadChunk{id, 0, 0, 100, 0, 0})).ok());
    run.Expect(MsgType::kEnd);
    REQUIRE(run.ctl
                ->Send(MsgType::kSummary,
                       proto::EncodeSummary(proto::Summary{.files_failed = 1, .link_failures = {}}))
                .ok());
    CHECK(run.DrainData() == 1);  // the first copy only
    auto r = run.Join();
    CHECK_MESSAGE(r.has_value(), r.error().ToString());
    CHECK(run.stats.bytes_resent.load() == 0);
  }

  TEST_CASE(
      "BAD_CHUNK asking for pieces gets the chunk in pieces, each with its own digest, a bad piece comes "
      "alone") {
    test::TempDir tmp;
    constexpr uint32_t kBig = 1u << 20;  // four pieces
    const uint32_t p = proto::kPieceSize;
    WriteBytes(tmp / "a.bin", kBig + 1000);
    const std::string content = Slurp(tmp / "a.bin");
    const auto bytes = std::as_bytes(std::span(content));
    SenderRun run(tmp.path(), "a.bin", kBig);
    auto files = run.ExpectFiles();
    REQUIRE(files.size() == 1);
    const uint64_t id = files[0].id;
    run.Plan({proto::PlanEntry{id, proto::PlanAction::kSendAll, Code::kOk, "", {}}});
    for (int i = 0; i < 2; ++i) CHECK(run.NextData().first.kind == proto::ChunkKind::kData);
    run.Expect(MsgType::kFileEnd);
    auto expect_piece = [&](uint64_t offset) {
      auto [h, payload] = run.NextData();
      CHECK(h.kind == proto::ChunkKind::kPiece);
      CHECK(h.file_id == id);
      CHECK(h.index == 0);
      CHECK(h.offset == offset);
      REQUIRE(h.length == p);
      CHECK(h.digest == proto::PieceDigest(bytes.subspan(offset, p), id, offset));
      CHECK((payload == std::vector<std::byte>(bytes.begin() + offset, bytes.begin() + offset + p)));
    };
    REQUIRE(run.ctl
                ->Send(MsgType::kBadChunk,
                       proto::EncodeBadChunk(proto::BadChunk{id, 0, 0, kBig, 0, proto::kBadChunkPieces}))
                .ok());
    for (uint64_t k = 0; k < 4; ++k) expect_piece(k * p);
    REQUIRE(run.ctl->Send(MsgType::kBadChunk, proto::EncodeBadChunk(proto::BadChunk{id, 0, 2 * p, p, 0, 0}))
                .ok());
    expect_piece(2 * p);
    // A region that is neither the chunk nor one of its pieces is a protocol error.
    REQUIRE(
        run.ctl->Send(MsgType::kBadChunk, proto::EncodeBadChunk(proto::BadChunk{id, 0, 4096, p, 0, 0})).ok());
    auto r = run.Join();
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kProtocol);
    CHECK(run.stats.chunks_corrupt.load() == 2);
    CHECK(run.stats.bytes_resent.load() == kBig + p);
  }

  TEST_CASE("a PLAN or BAD_CHUNK naming an id not announced yet ends the session with a protocol error") {
    test::TempDir tmp;
    SUBCASE("PLAN for an entry of the batch the walk is still gathering") {
      // The walk sends 8 batches (64, 128, 256, 512, then 1024 each) and gathers the 9th while they
      // wait for their PLANs: its entries exist at the sender but were never announced.
      REQUIRE(::mkdir((tmp / "tree").c_str(), 0755) == 0);
      for (int i = 0; i < 6000; ++i) WriteBytes(tmp / ("tree/f" + std::to_string(i)), 0);
      SenderRun run(tmp.path(), "tree");
      uint64_t announced = 0;
      for (int batch = 0; batch < 8; ++batch) announced += run.ExpectFiles().size();
      CHECK(announced < 6001);
      run.Plan({proto::PlanEntry{announced + 1, proto::PlanAction::kDone, Code::kOk, "", {}}});
      auto r = run.Join();
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kProtocol);
    }
    SUBCASE("BAD_CHUNK for an id never announced") {
      WriteBytes(tmp / "a.bin", 100);
      SenderRun run(tmp.path(), "a.bin");
      auto files = run.ExpectFiles();
      REQUIRE(files.size() == 1);
      REQUIRE(run.ctl
                  ->Send(MsgType::kBadChunk,
                         proto::EncodeBadChunk(proto::BadChunk{files[0].id + 1, 0, 0, 100, 0, 0}))
                  .ok());
      auto r = run.Join();
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().code() == Code::kProtocol);
    }
  }

  TEST_CASE("a PLAN naming an already planned entry ends the session with a protocol error") {
    // Several FILES batches (more entries than one batch holds), so a second PLAN is expected; it
    // repeats the first one's entries, which the sender has already planned and forgotten.
    test::TempDir tmp;
    REQUIRE(::mkdir((tmp / "tree").c_str(), 0755) == 0);
    for (int i = 0; i < 1100; ++i) WriteBytes(tmp / ("tree/f" + std::to_string(i)), 0);
    SenderRun run(tmp.path(), "tree");
    auto files = run.ExpectFiles();
    REQUIRE_FALSE(files.empty());
    REQUIRE_FALSE(run.ExpectFiles().empty());  // a second batch awaits its PLAN
    std::vector<proto::PlanEntry> plan;
    for (const auto& e : files)
      plan.push_back(proto::PlanEntry{e.id, proto::PlanAction::kDone, Code::kOk, "", {}});
    run.Plan(plan);
    run.Plan(plan);
    auto r = run.Join();
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kProtocol);
    CHECK(std::string(r.error().message()).find("already planned") != std::string::npos);
  }
}

TEST_SUITE("engine: control channel") {
  TEST_CASE("Expect returns the body of the expected type, an ERROR's status, or a protocol error") {
    auto [a, b] = ConnectedTcpPair();
    ControlChannel tx(std::make_unique<transport::TcpStream>(std::move(a)));
    ControlChannel rx(std::make_unique<transport::TcpStream>(std::move(b)));
    REQUIRE(tx.Send(MsgType::kEnd, proto::EncodeEnd(proto::End{5})).ok());
    auto body = rx.Expect(MsgType::kEnd);
    REQUIRE_MESSAGE(body.has_value(), body.error().ToString());
    CHECK(proto::DecodeEnd(*body)->files == 5);

    REQUIRE(tx.Send(MsgType::kFiles, proto::EncodeFiles({})).ok());
    auto wrong = rx.Expect(MsgType::kOpenOk);
    REQUIRE_FALSE(wrong.has_value());
    CHECK(wrong.error().code() == Code::kProtocol);
    CHECK(wrong.error().message() == "expected OPEN_OK, got FILES");

    tx.SendError(Status::PermissionDenied("policy says no").WithRetryable(false));
    auto err = rx.Expect(MsgType::kOpenOk);
    REQUIRE_FALSE(err.has_value());
    CHECK(err.error().code() == Code::kPermissionDenied);
    CHECK(err.error().message() == "peer: policy says no");

    // An ERROR whose field has the wrong type: a protocol error naming the field.
    const std::string bad = R"({"code":3,"message":["no"],"retryable":false})";
    REQUIRE(tx.Send(MsgType::kError, std::as_bytes(std::span(bad))).ok());
    auto malformed = rx.Expect(MsgType::kOpenOk);
    REQUIRE_FALSE(malformed.has_value());
    CHECK(malformed.error().code() == Code::kProtocol);
    CHECK(malformed.error().message() == "ERROR.message: expected a string");
  }
}

TEST_SUITE("engine: sender and the receiver's control messages") {
  TEST_CASE("a SUMMARY with a field of the wrong type ends the sender with a protocol error naming it") {
    test::TempDir tmp;
    WriteBytes(tmp / "a.bin", 0);
    SenderRun run(tmp.path(), "a.bin");
    auto files = run.ExpectFiles();
    REQUIRE(files.size() == 1);
    run.Plan({proto::PlanEntry{files[0].id, proto::PlanAction::kDone, Code::kOk, "", {}}});
    run.Expect(MsgType::kEnd);
    nlohmann::json summary = proto::SummaryToJson(proto::Summary{});
    summary["bytes_committed"] = "0";
    const std::string text = summary.dump();
    REQUIRE(run.ctl->Send(MsgType::kSummary, std::as_bytes(std::span(text))).ok());
    auto r = run.Join();
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kProtocol);
    CHECK(r.error().message() == "SUMMARY.bytes_committed: expected an unsigned integer");
  }

  TEST_CASE("the sender returns the receiver's SUMMARY and ends on a CANCEL with its reason") {
    test::TempDir tmp;
    WriteBytes(tmp / "a.bin", 0);
    for (bool cancel : {false, true}) {
      CAPTURE(cancel);
      SenderRun run(tmp.path(), "a.bin");
      auto files = run.ExpectFiles();
      REQUIRE(files.size() == 1);
      if (cancel) {
        REQUIRE(run.ctl->Send(MsgType::kCancel, proto::EncodeCancel(proto::Cancel{"operator"})).ok());
        auto r = run.Join();
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().code() == Code::kCancelled);
        CHECK(r.error().message() == "transfer cancelled by the peer: operator");
        continue;
      }
      run.Plan({proto::PlanEntry{files[0].id, proto::PlanAction::kSkip, Code::kOk, "", {}}});
      auto end = proto::DecodeEnd(run.Expect(MsgType::kEnd).body);
      REQUIRE(end.has_value());
      CHECK(end->files == 1);
      REQUIRE(run.ctl->Send(MsgType::kKeepalive, proto::EncodeKeepalive({})).ok());
      const proto::Summary sent{0, 0, 1, 0, 0, 0, 0, {}};
      REQUIRE(run.ctl->Send(MsgType::kSummary, proto::EncodeSummary(sent)).ok());
      run.DrainData();
      auto r = run.Join();
      REQUIRE_MESSAGE(r.has_value(), r.error().ToString());
      CHECK(*r == proto::SummaryToJson(sent));
    }
  }
}

// One receiver session in a background thread, writing below <root>/in; the test plays the sender.
class ReceiverRun : public EngineRun {
 public:
  explicit ReceiverRun(const std::string& root_path, uint32_t chunk_size = kChunk)
      : EngineRun(root_path, 8, &RunReceiver, "in", chunk_size) {}

  proto::ControlFrame Next() {
    while (true) {
      auto f = ctl->Receive();
      REQUIRE_MESSAGE(f.has_value(), f.error().ToString());
      if (f->type != MsgType::kKeepalive) return std::move(*f);
    }
  }
  proto::ControlFrame Expect(MsgType type) {
    proto::ControlFrame f = Next();
    REQUIRE(int(f.type) == int(type));
    return f;
  }
  std::vector<proto::PlanEntry> Files(const std::vector<proto::FileEntry>& files) {
    REQUIRE(ctl->Send(MsgType::kFiles, proto::EncodeFiles(files)).ok());
    auto plan = proto::DecodePlan(Expect(MsgType::kPlan).body);
    REQUIRE(plan.has_value());
    return std::move(*plan);
  }
  void Chunk(uint64_t id, uint64_t index, std::span<const std::byte> payload, const Digest128& digest) {
    proto::ChunkHeader h{
        proto::ChunkKind::kData, id, index, index * chunk, static_cast<uint32_t>(payload.size()), digest};
    std::array<std::byte, proto::kChunkHeaderSize> hdr;
    proto::EncodeChunkHeader(h, hdr);
    REQUIRE(data->Send(hdr, payload, {}).ok());
  }
  // A piece of chunk `index` at file offset `offset` (its digest: PieceDigest unless `digest` is given).
  void Piece(uint64_t id, uint64_t index, uint64_t offset, std::span<const std::byte> payload,
             std::optional<Digest128> digest = std::nullopt) {
    proto::ChunkHeader h{proto::ChunkKind::kPiece,
                         id,
                         index,
                         offset,
                         static_cast<uint32_t>(payload.size()),
                         digest ? *digest : proto::PieceDigest(payload, id, offset)};
    std::array<std::byte, proto::kChunkHeaderSize> hdr;
    proto::EncodeChunkHeader(h, hdr);
    REQUIRE(data->Send(hdr, payload, {}).ok());
  }
  void FileEnd(const proto::FileEnd& end) {
    REQUIRE(ctl->Send(MsgType::kFileEnd, proto::EncodeFileEnds({end})).ok());
  }
  // END, then the FILE_DONE messages up to SUMMARY, then end-of-stream on the data channel.
  std::vector<proto::FileDone> Finish(uint64_t entries) {
    REQUIRE(ctl->Send(MsgType::kEnd, proto::EncodeEnd(proto::End{entries})).ok());
    std::vector<proto::FileDone> dones;
    while (true) {
      proto::ControlFrame f = Next();
      if (f.type == MsgType::kSummary) break;
      REQUIRE(int(f.type) == int(MsgType::kFileDone));
      auto d = proto::DecodeFileDones(f.body);
      REQUIRE(d.has_value());
      dones.insert(dones.end(), d->begin(), d->end());
    }
    proto::ChunkHeader eos{proto::ChunkKind::kEos, 0, 0, 0, 0, {}};
    std::array<std::byte, proto::kChunkHeaderSize> hdr;
    proto::EncodeChunkHeader(eos, hdr);
    REQUIRE(data->Send(hdr, {}, {}).ok());
    return dones;
  }
};

// A directory for one test case under `parent` (removed at scope exit); empty path() if it cannot be
// made there.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& parent) {
    std::string tmpl = parent + "/poro_test_XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool IsTmpfs(const std::string& path) {
  struct statfs sfs {};
  return ::statfs(path.c_str(), &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

// The names in `dir` that start with ".poro-" (part files, journals).
std::vector<std::string> Leftovers(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(".poro-", 0) == 0) out.push_back(n);
  }
  return out;
}

TEST_SUITE("engine: receiver") {
  TEST_CASE(
      "a file announced below a symbolic link of the same transfer is refused, not written where the link "
      "leads") {
    test::TempDir tmp;
    REQUIRE(::mkdir((tmp / "outside").c_str(), 0755) == 0);
    auto root = ExportRoot::Create(tmp.path());
    REQUIRE(root.has_value());
    auto [ca, cb] = ConnectedTcpPair();
    ControlChannel receiver_ctl(std::make_unique<transport::TcpStream>(std::move(ca)));
    ControlChannel ctl(std::make_unique<transport::TcpStream>(std::move(cb)));  // the scripted sender
    auto [da, db] = ConnectedTcpPair();
    std::vector<std::unique_ptr<transport::MessageChannel>> channels;
    channels.push_back(transport::MakeTcpMessageChannel(std::move(da)));
    auto data = transport::MakeTcpMessageChannel(std::move(db));
    auto pool = io::BufferPool::Create(64 << 10, 4);
    REQUIRE(pool.has_value());
    TransferStats stats;
    std::atomic<bool> cancel{false};
    EngineOptions opts;
    opts.chunk_size = 64 << 10;
    DataPath dp;
    dp.ctl = &receiver_ctl;
    dp.channels = &channels;
    dp.pool = pool->get();
    dp.stats = &stats;
    dp.cancel = &cancel;
    Result<nlohmann::json> result = Status::Internal("not run");
    std::thread t([&] { result = RunReceiver(*root, "in", opts, dp); });

    std::vector<proto::FileEntry> files(3);
    files[0] = proto::FileEntry{1, proto::EntryType::kDir, "", 0, 0755, 0, ""};
    files[1] = proto::FileEntry{2, proto::EntryType::kSymlink, "a", 0, 0777, 0, "../outside"};
    files[2] = proto::FileEntry{3, proto::EntryType::kFile, "a/x", 10, 0644, 0, ""};
    REQUIRE(ctl.Send(MsgType::kFiles, proto::EncodeFiles(files)).ok());
    auto f = ctl.Receive();
    REQUIRE_MESSAGE(f.has_value(), f.error().ToString());
    REQUIRE(int(f->type) == int(MsgType::kPlan));
    auto plan = proto::DecodePlan(f->body);
    REQUIRE(plan.has_value());
    REQUIRE(plan->size() == 3);
    CHECK(int((*plan)[1].action) == int(proto::PlanAction::kDone));  // the link itself is made
    CHECK(int((*plan)[2].action) == int(proto::PlanAction::kFail));
    CHECK((*plan)[2].message.find("symbolic link sent in this transfer") != std::string::npos);

    cancel = true;
    ctl.Shutdown();
    data->Shutdown();
    t.join();
    CHECK_FALSE(result.has_value());  // cancelled
    std::string target(64, '\0');
    ssize_t n = ::readlink((tmp / "in/a").c_str(), target.data(), target.size());
    REQUIRE(n > 0);
    CHECK(target.substr(0, size_t(n)) == "../outside");
    CHECK(std::filesystem::is_empty(tmp / "outside"));  // no file, no part file
  }

  TEST_CASE(
      "a file whose last chunk is short is written byte-exact, O_DIRECT on disk and buffered on tmpfs") {
    // 16 full chunks and a 1000-byte one: at least 1 MiB, so the receiver writes it O_DIRECT where the
    // file system allows (the last chunk padded, the file cut to size at the commit).
    const size_t size = 16 * ReceiverRun::kChunk + 1000;
    std::vector<std::byte> bytes(size);
    for (size_t i = 0; i < size; ++i) bytes[i] = std::byte(static_cast<uint8_t>(i * 131 + i / 4099));
    std::vector<std::string> parents = {"/tmp"};
    if (IsTmpfs("/dev/shm")) parents.push_back("/dev/shm");
    for (const std::string& parent : parents) {
      CAPTURE(parent);
      ScratchDir dir(parent);
      REQUIRE(!dir.path().empty());
      ReceiverRun run(dir.path());
      const uint64_t chunks = ChunkCount(size, ReceiverRun::kChunk);
      auto plan = run.Files({proto::FileEntry{1, proto::EntryType::kDir, "", 0, 0755, 0, ""},
                             proto::FileEntry{2, proto::EntryType::kFile, "f", size, 0640, 0, ""}});
      REQUIRE(plan.size() == 2);
      REQUIRE(int(plan[1].action) == int(proto::PlanAction::kSendAll));
      FileDigester dg;
      // Out of order, as several channels deliver them.
      for (uint64_t k = 0; k < chunks; ++k) {
        uint64_t i = (k * 5) % chunks;
        size_t off = i * ReceiverRun::kChunk;
        auto payload =
            std::span<const std::byte>(bytes).subspan(off, std::min<size_t>(ReceiverRun::kChunk, size - off));
        run.Chunk(2, i, payload, Xxh3_128(payload));
      }
      for (uint64_t i = 0; i < chunks; ++i) {
        size_t off = i * ReceiverRun::kChunk;
        dg.AddChunk(Xxh3_128(std::span<const std::byte>(bytes).subspan(
            off, std::min<size_t>(ReceiverRun::kChunk, size - off))));
      }
      run.FileEnd(proto::FileEnd{2, chunks, dg.Finish(), Code::kOk, "", chunks});
      auto dones = run.Finish(2);
      REQUIRE(dones.size() == 1);
      CHECK_MESSAGE(dones[0].code == Code::kOk, dones[0].message);
      auto result = run.Join();
      REQUIRE_MESSAGE(result.has_value(), result.error().ToString());

      std::string path = dir.path() + "/in/f";
      struct stat st {};
      REQUIRE(::stat(path.c_str(), &st) == 0);
      CHECK(static_cast<size_t>(st.st_size) == size);
      CHECK((st.st_mode & 07777) == 0640);
      std::vector<std::byte> got(size + 1);
      UniqueFd fd(::open(path.c_str(), O_RDONLY));
      REQUIRE(fd.valid());
      size_t n = 0;
      while (n < got.size()) {
        ssize_t r = ::read(fd.get(), got.data() + n, got.size() - n);
        REQUIRE(r >= 0);
        if (r == 0) break;
        n += static_cast<size_t>(r);
      }
      REQUIRE(n == size);
      got.resize(n);
      CHECK(got == bytes);
      CHECK(Leftovers(dir.path() + "/in").empty());
    }
  }

  TEST_CASE("a chunk that keeps failing verification is asked for again, then fails its file alone") {
    test::TempDir tmp;
    ReceiverRun run(tmp.path());
    std::vector<std::byte> payload(1000, std::byte{7});
    std::vector<std::byte> other(1000, std::byte{8});
    auto plan = run.Files({proto::FileEntry{1, proto::EntryType::kDir, "", 0, 0755, 0, ""},
                           proto::FileEntry{2, proto::EntryType::kFile, "bad", 1000, 0644, 0, ""},
                           proto::FileEntry{3, proto::EntryType::kFile, "good", 1000, 0644, 0, ""}});
    REQUIRE(plan.size() == 3);
    // EngineOptions::max_chunk_retries (3) corrupt copies are asked for again; the next fails the file.
    const unsigned retries = EngineOptions().max_chunk_retries;
    for (unsigned k = 0; k < retries; ++k) {
      run.Chunk(2, 0, payload, Xxh3_128(other));
      auto bad = proto::DecodeBadChunk(run.Expect(MsgType::kBadChunk).body);
      REQUIRE(bad.has_value());
      CHECK(bad->id == 2);
      CHECK(bad->index == 0);
    }
    run.Chunk(2, 0, payload, Xxh3_128(other));
    // The other file of the session is received as usual.
    run.Chunk(3, 0, payload, Xxh3_128(payload));
    FileDigester dg;
    dg.AddChunk(Xxh3_128(payload));
    run.FileEnd(proto::FileEnd{3, 1, dg.Finish(), Code::kOk, "", 1});
    auto dones = run.Finish(3);
    REQUIRE(dones.size() == 2);
    std::sort(dones.begin(), dones.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    CHECK(dones[0].id == 2);
    CHECK(dones[0].code == Code::kDataLoss);
    CHECK(dones[0].message.find("failed verification " + std::to_string(retries + 1) + " times") !=
          std::string::npos);
    CHECK(dones[1].id == 3);
    CHECK(dones[1].code == Code::kOk);
    auto result = run.Join();
    REQUIRE_MESSAGE(result.has_value(), result.error().ToString());
    CHECK(run.stats.chunks_corrupt.load() == retries + 1);
    // A bad path, not a bad file: worth another attempt, which resumes from what is kept.
    CHECK(dones[0].retryable);
    CHECK(run.stats.files_failed_retryable.load() == 1);
    CHECK_FALSE(std::filesystem::exists(tmp / "in/bad"));
    CHECK(std::filesystem::file_size(tmp / "in/good") == 1000);
    for (const std::string& n : Leftovers(tmp / "in"))
      CHECK((n == PartName("bad") || n == JournalName("bad")));
  }

  TEST_CASE("a chunk that fails twice comes again in pieces, a bad piece alone is asked for again") {
    test::TempDir tmp;
    constexpr uint32_t kBig = 1u << 20;  // four pieces
    ReceiverRun run(tmp.path(), kBig);
    const std::string bytes = PseudoRandom(kBig + 1000, 11);
    const auto all = std::as_bytes(std::span(bytes));
    const auto c0 = all.first(kBig), c1 = all.subspan(kBig);
    auto plan = run.Files({proto::FileEntry{1, proto::EntryType::kDir, "", 0, 0755, 0, ""},
                           proto::FileEntry{2, proto::EntryType::kFile, "f", kBig + 1000, 0644, 0, ""}});
    REQUIRE(plan.size() == 2);
    auto expect_bad = [&](uint64_t offset, uint32_t length, uint8_t flags) {
      auto bad = proto::DecodeBadChunk(run.Expect(MsgType::kBadChunk).body);
      REQUIRE(bad.has_value());
      CHECK(bad->id == 2);
      CHECK(bad->index == 0);
      CHECK(bad->offset == offset);
      CHECK(bad->length == length);
      CHECK(bad->stream == 0);
      CHECK(int(bad->flags) == int(flags));
    };
    run.Chunk(2, 0, c0, Xxh3_128(c1));  // the first corrupt copy: the whole chunk again
    expect_bad(0, kBig, 0);
    run.Chunk(2, 0, c0, Xxh3_128(c1));  // the second: in pieces
    expect_bad(0, kBig, proto::kBadChunkPieces);
    const uint32_t p = proto::kPieceSize;
    run.Piece(2, 0, 0, c0.first(p));
    run.Piece(2, 0, 2 * p, c0.subspan(2 * p, p));
    // A piece whose digest is right for its bytes but names another place: not accepted there.
    run.Piece(2, 0, p, c0.subspan(3 * p, p), proto::PieceDigest(c0.subspan(3 * p, p), 2, 3 * p));
    expect_bad(p, p, 0);
    run.Piece(2, 0, p, c0.subspan(p, p));
    run.Piece(2, 0, 3 * p, c0.subspan(3 * p, p));
    run.Chunk(2, 1, c1, Xxh3_128(c1));
    FileDigester dg;
    dg.AddChunk(Xxh3_128(c0));
    dg.AddChunk(Xxh3_128(c1));
    run.FileEnd(proto::FileEnd{2, 2, dg.Finish(), Code::kOk, "", 2});
    auto dones = run.Finish(2);
    REQUIRE(dones.size() == 1);
    CHECK_MESSAGE(dones[0].code == Code::kOk, dones[0].message);
    auto result = run.Join();
    REQUIRE_MESSAGE(result.has_value(), result.error().ToString());
    CHECK(run.stats.chunks_corrupt.load() == 3);
    CHECK(Slurp(tmp / "in/f") == bytes);
    CHECK(Leftovers(tmp / "in").empty());
  }

  TEST_CASE("a piece outside its chunk, or not at a piece boundary, ends the session with a protocol error") {
    constexpr uint32_t kBig = 1u << 20;
    const std::string bytes = PseudoRandom(proto::kPieceSize, 12);
    const auto piece = std::as_bytes(std::span(bytes));
    for (uint64_t offset : {uint64_t(4096), uint64_t(kBig)}) {
      CAPTURE(offset);
      test::TempDir tmp;
      ReceiverRun run(tmp.path(), kBig);
      run.Files({proto::FileEntry{1, proto::EntryType::kDir, "", 0, 0755, 0, ""},
                 proto::FileEntry{2, proto::EntryType::kFile, "f", 2 * kBig, 0644, 0, ""}});
      run.Piece(2, 0, offset, piece);
      auto result = run.Join();
      REQUIRE_FALSE(result.has_value());
      CHECK(result.error().code() == Code::kProtocol);
      CHECK(std::string(result.error().message()).find("bad index, offset or length") != std::string::npos);
    }
  }
}

}  // namespace
}  // namespace pororoca::engine
