#include "engine/journal.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/coding.h"
#include "base/unique_fd.h"
#include "support/temp_dir.h"

namespace pororoca::engine {
namespace {

using Records = std::vector<std::pair<uint64_t, Digest128>>;

constexpr size_t kHeaderSize = 32;
constexpr size_t kRecordSize = 32;
constexpr uint32_t kChunk = 4096;
// 11 chunks, the last one short.
const JournalHeader kHdr{11 * uint64_t{kChunk} - 100, 1'700'000'000'123'456'789, kChunk};
const std::string kName = "f.bin.poro-journal";

// A fresh directory with an open fd on it, for the *at() calls of Journal.
struct JournalDir {
  test::TempDir tmp;
  UniqueFd fd;
  JournalDir() {
    auto r = UniqueFd::Open(tmp.path(), O_RDONLY | O_DIRECTORY);
    REQUIRE_MESSAGE(r.has_value(), r.status().ToString());
    fd = std::move(r).value();
  }
  std::string Path(const std::string& name = kName) const { return tmp / name; }
  Records Replay(const JournalHeader& h = kHdr, const std::string& name = kName) const {
    return Journal::Replay(fd.get(), name, h);
  }
};

Digest128 D(uint64_t i) {
  return Digest128{0x0123456789abcdefULL ^ (i * 0x9e3779b97f4a7c15ULL), ~i * 31 + 7};
}

Records Recs(std::initializer_list<uint64_t> idx) {
  Records out;
  for (uint64_t i : idx) out.emplace_back(i, D(i));
  return out;
}

std::vector<std::byte> ReadBytes(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE_MESSAGE(fd >= 0, "open ", path, ": ", std::strerror(errno));
  std::vector<std::byte> out;
  std::byte buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

off_t FileSize(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_size;
}

void Truncate(const std::string& path, off_t size) {
  REQUIRE_MESSAGE(::truncate(path.c_str(), size) == 0, std::strerror(errno));
}

// XORs one byte of the file at `offset` with 0xff.
void FlipByte(const std::string& path, off_t offset) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  unsigned char c = 0;
  REQUIRE(::pread(fd, &c, 1, offset) == 1);
  c ^= 0xff;
  REQUIRE(::pwrite(fd, &c, 1, offset) == 1);
  ::close(fd);
}

off_t RecordOffset(size_t i) { return static_cast<off_t>(kHeaderSize + i * kRecordSize); }

// Creates the journal with kHdr and appends `records` (one Append call).
void Write(const JournalDir& d, const Records& records, const JournalHeader& h = kHdr) {
  auto j = Journal::Create(d.fd.get(), kName, d.Path(), h);
  REQUIRE_MESSAGE(j.has_value(), j.status().ToString());
  Status s = j->Append(records);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
}

TEST_SUITE("engine.journal") {
  TEST_CASE("A missing journal replays as empty") {
    JournalDir d;
    CHECK(d.Replay().empty());
    CHECK(d.Replay(kHdr, "no/such/dir/journal").empty());
  }

  TEST_CASE("Create writes the 32-byte header in the documented format") {
    JournalDir d;
    const JournalHeader h{0x0102030405060708ULL, -42, 0x00a0b0c0};
    auto j = Journal::Create(d.fd.get(), kName, d.Path(), h);
    REQUIRE_MESSAGE(j.has_value(), j.status().ToString());
    auto bytes = ReadBytes(d.Path());
    REQUIRE(bytes.size() == kHeaderSize);
    CHECK(std::memcmp(bytes.data(), "PORJ", 4) == 0);
    CHECK(DecodeFixed16(bytes.data() + 4) == 1);  // version
    CHECK(DecodeFixed16(bytes.data() + 6) == 0);  // pad
    CHECK(DecodeFixed64(bytes.data() + 8) == h.size);
    CHECK(static_cast<int64_t>(DecodeFixed64(bytes.data() + 16)) == h.mtime_ns);
    CHECK(DecodeFixed32(bytes.data() + 24) == h.chunk_size);
    CHECK(DecodeFixed32(bytes.data() + 28) == 0);  // pad
    CHECK(test::ModeOf(d.Path()) == 0600);
  }

  TEST_CASE("Appended records are written in the documented format and replay in order") {
    JournalDir d;
    auto j = Journal::Create(d.fd.get(), kName, d.Path(), kHdr);
    REQUIRE(j.has_value());
    REQUIRE(j->Append(Recs({0, 3, 1})).ok());
    CHECK(FileSize(d.Path()) == RecordOffset(3));
    REQUIRE(j->Append(Recs({10})).ok());
    CHECK(FileSize(d.Path()) == RecordOffset(4));

    auto bytes = ReadBytes(d.Path());
    const std::byte* r = bytes.data() + RecordOffset(1);  // the record for index 3
    CHECK(DecodeFixed64(r) == 3);
    CHECK(DecodeFixed64(r + 8) == D(3).hi);
    CHECK(DecodeFixed64(r + 16) == D(3).lo);
    CHECK(DecodeFixed64(r + 24) == XXH3_64bits(r, 24));

    CHECK(d.Replay() == Recs({0, 3, 1, 10}));
  }

  TEST_CASE("Append of no records writes nothing") {
    JournalDir d;
    auto j = Journal::Create(d.fd.get(), kName, d.Path(), kHdr);
    REQUIRE(j.has_value());
    REQUIRE(j->Append({}).ok());
    CHECK(FileSize(d.Path()) == off_t(kHeaderSize));
    REQUIRE(j->Append(Recs({4})).ok());
    REQUIRE(j->Append({}).ok());
    CHECK(FileSize(d.Path()) == RecordOffset(1));
    CHECK(d.Replay() == Recs({4}));
  }

  TEST_CASE("A later record for an index comes after the earlier one, so it replaces it when applied") {
    JournalDir d;
    auto j = Journal::Create(d.fd.get(), kName, d.Path(), kHdr);
    REQUIRE(j.has_value());
    const Digest128 first{1, 2}, second{3, 4};
    REQUIRE(j->Append({{2, first}, {5, D(5)}}).ok());
    REQUIRE(j->Append({{2, second}}).ok());
    Records got = d.Replay();
    CHECK(got == Records{{2, first}, {5, D(5)}, {2, second}});
    std::map<uint64_t, Digest128> applied;
    for (const auto& [idx, dg] : got) applied[idx] = dg;
    CHECK(applied.size() == 2);
    CHECK(applied[2] == second);
    CHECK(applied[5] == D(5));
  }

  TEST_CASE("A journal for another version of the source replays nothing") {
    JournalDir d;
    Write(d, Recs({0, 1, 2}));
    REQUIRE(d.Replay() == Recs({0, 1, 2}));

    JournalHeader other_size = kHdr;
    other_size.size += 1;
    JournalHeader other_mtime = kHdr;
    other_mtime.mtime_ns += 1;
    JournalHeader other_chunk = kHdr;
    other_chunk.chunk_size *= 2;
    CHECK(d.Replay(other_size).empty());
    CHECK(d.Replay(other_mtime).empty());
    CHECK(d.Replay(other_chunk).empty());
    CHECK(d.Replay(JournalHeader{}).empty());
    // The journal itself is untouched by a mismatching replay.
    CHECK(d.Replay() == Recs({0, 1, 2}));
  }

  TEST_CASE("A damaged header replays nothing") {
    for (off_t off : {0, 4, 6, 8, 16, 24, 28, 31}) {
      CAPTURE(off);
      JournalDir d;
      Write(d, Recs({0, 1}));
      FlipByte(d.Path(), off);
      CHECK(d.Replay().empty());
    }
  }

  TEST_CASE("A torn last record is ignored and earlier records survive") {
    for (off_t cut : {1, 8, 24, 31}) {
      CAPTURE(cut);
      JournalDir d;
      Write(d, Recs({0, 1, 2}));
      Truncate(d.Path(), RecordOffset(3) - cut);
      CHECK(d.Replay() == Recs({0, 1}));
    }
  }

  TEST_CASE("A full-size last record that fails its check is ignored") {
    for (off_t within : {0, 7, 8, 16, 23, 24, 31}) {
      CAPTURE(within);
      JournalDir d;
      Write(d, Recs({0, 1, 2}));
      FlipByte(d.Path(), RecordOffset(2) + within);
      CHECK(d.Replay() == Recs({0, 1}));
    }
  }

  TEST_CASE("A zero-filled tail (size extended, data lost) is ignored") {
    JournalDir d;
    Write(d, Recs({0, 1}));
    Truncate(d.Path(), RecordOffset(4));
    CHECK(d.Replay() == Recs({0, 1}));
  }

  TEST_CASE("A bad record in the middle ends the replay") {
    JournalDir d;
    Write(d, Recs({0, 1, 2, 3}));
    FlipByte(d.Path(), RecordOffset(1) + 12);
    CHECK(d.Replay() == Recs({0}));
  }

  TEST_CASE("A record for a chunk index past the end of the file ends the replay") {
    JournalDir d;
    // kHdr has 11 chunks: 10 is the last valid index.
    Write(d, Recs({10, 0, 11, 1}));
    CHECK(d.Replay() == Recs({10, 0}));

    JournalDir e;
    Write(e, Recs({0}), JournalHeader{0, 5, kChunk});  // an empty source has no chunks
    CHECK(e.Replay(JournalHeader{0, 5, kChunk}).empty());
  }

  TEST_CASE("A file shorter than a header, a directory or a symlink replays as empty") {
    JournalDir d;
    Write(d, Recs({0, 1}));
    Truncate(d.Path(), kHeaderSize - 1);
    CHECK(d.Replay().empty());
    Truncate(d.Path(), 0);
    CHECK(d.Replay().empty());

    JournalDir e;
    REQUIRE(::mkdir(e.Path().c_str(), 0755) == 0);
    CHECK(e.Replay().empty());

    JournalDir s;
    Write(s, Recs({0, 1}));
    REQUIRE(::symlink(kName.c_str(), s.Path("link").c_str()) == 0);
    REQUIRE(s.Replay(kHdr, kName) == Recs({0, 1}));
    CHECK(s.Replay(kHdr, "link").empty());
  }

  TEST_CASE("A journal larger than the replay limit replays as empty") {
    constexpr off_t kLimit = off_t{64} << 20;
    JournalDir d;
    Write(d, Recs({0, 1}));
    // Zeros after the records fail their check, so at the limit the two records are found...
    Truncate(d.Path(), kLimit);
    CHECK(d.Replay() == Recs({0, 1}));
    // ...and one record past it the whole journal is refused.
    Truncate(d.Path(), kLimit + off_t(kRecordSize));
    CHECK(d.Replay().empty());
  }

  TEST_CASE("Create truncates an existing journal") {
    JournalDir d;
    Write(d, Recs({0, 1, 2}));
    JournalHeader h2 = kHdr;
    h2.mtime_ns += 1000;
    auto j = Journal::Create(d.fd.get(), kName, d.Path(), h2);
    REQUIRE(j.has_value());
    CHECK(FileSize(d.Path()) == off_t(kHeaderSize));
    CHECK(d.Replay(h2).empty());
    CHECK(d.Replay(kHdr).empty());
    REQUIRE(j->Append(Recs({5})).ok());
    CHECK(d.Replay(h2) == Recs({5}));
  }

  TEST_CASE("Create does not follow a symlink") {
    JournalDir d;
    Write(d, Recs({0, 1}));
    REQUIRE(::symlink(kName.c_str(), d.Path("link").c_str()) == 0);
    auto j = Journal::Create(d.fd.get(), "link", d.Path("link"), kHdr);
    REQUIRE_FALSE(j.has_value());
    CHECK(j.error().sys_errno() == ELOOP);
    CHECK(FileSize(d.Path()) == RecordOffset(2));
    CHECK(d.Replay() == Recs({0, 1}));
  }

  TEST_CASE("OpenAppend continues after the last record") {
    JournalDir d;
    Write(d, Recs({0, 1}));
    auto j = Journal::OpenAppend(d.fd.get(), kName, d.Path(), d.Replay().size());
    REQUIRE_MESSAGE(j.has_value(), j.status().ToString());
    CHECK(FileSize(d.Path()) == RecordOffset(2));
    REQUIRE(j->Append(Recs({2})).ok());
    REQUIRE(j->Append(Recs({3, 4})).ok());
    CHECK(FileSize(d.Path()) == RecordOffset(5));
    CHECK(d.Replay() == Recs({0, 1, 2, 3, 4}));
  }

  TEST_CASE("OpenAppend drops a torn tail so new records start on a record boundary") {
    for (off_t cut : {1, 16, 31}) {
      CAPTURE(cut);
      JournalDir d;
      Write(d, Recs({0, 1, 2}));
      Truncate(d.Path(), RecordOffset(3) - cut);
      auto j = Journal::OpenAppend(d.fd.get(), kName, d.Path(), d.Replay().size());
      REQUIRE_MESSAGE(j.has_value(), j.status().ToString());
      CHECK(FileSize(d.Path()) == RecordOffset(2));
      REQUIRE(j->Append(Recs({7})).ok());
      CHECK(FileSize(d.Path()) == RecordOffset(3));
      CHECK(d.Replay() == Recs({0, 1, 7}));
    }
  }

  TEST_CASE("OpenAppend cuts off a damaged record so records appended after it are replayed") {
    for (bool zero_tail : {true, false}) {
      CAPTURE(zero_tail);
      JournalDir d;
      Write(d, Recs({0, 1, 2}));
      if (zero_tail) {
        Truncate(d.Path(), RecordOffset(2));
        Truncate(d.Path(), RecordOffset(3));  // size extended by a crash, the record's bytes lost
      } else {
        FlipByte(d.Path(), RecordOffset(2) + 3);  // a full-size record that fails its check
      }
      Records have = d.Replay();
      REQUIRE(have == Recs({0, 1}));
      auto j = Journal::OpenAppend(d.fd.get(), kName, d.Path(), have.size());
      REQUIRE_MESSAGE(j.has_value(), j.status().ToString());
      REQUIRE(j->Append(Recs({5, 6})).ok());
      CHECK(FileSize(d.Path()) == RecordOffset(4));
      CHECK(d.Replay() == Recs({0, 1, 5, 6}));
    }
  }

  TEST_CASE("OpenAppend refuses a journal shorter than the records it is said to hold") {
    JournalDir d;
    Write(d, Recs({0, 1}));
    auto j = Journal::OpenAppend(d.fd.get(), kName, d.Path(), 3);
    REQUIRE_FALSE(j.has_value());
    CHECK(j.error().code() == Code::kDataLoss);
    CHECK(FileSize(d.Path()) == RecordOffset(2));
  }

  TEST_CASE("Replay of a FIFO at the journal's name returns at once with nothing") {
    JournalDir d;
    REQUIRE(::mkfifo(d.Path().c_str(), 0600) == 0);
    CHECK(d.Replay().empty());  // blocked forever before (open of a FIFO without a writer)
  }

  TEST_CASE("OpenAppend of a missing journal or of a symlink fails") {
    JournalDir d;
    auto missing = Journal::OpenAppend(d.fd.get(), kName, d.Path(), 0);
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code() == Code::kNotFound);

    Write(d, Recs({0}));
    REQUIRE(::symlink(kName.c_str(), d.Path("link").c_str()) == 0);
    auto link = Journal::OpenAppend(d.fd.get(), "link", d.Path("link"), 1);
    REQUIRE_FALSE(link.has_value());
    CHECK(link.error().sys_errno() == ELOOP);
    CHECK(FileSize(d.Path()) == RecordOffset(1));
  }
}

}  // namespace
}  // namespace pororoca::engine
