#include "engine/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>

#include "base/coding.h"
#include "pororoca/storage.h"

namespace pororoca::engine {
namespace {

constexpr size_t kHeaderSize = 32;
constexpr size_t kRecordSize = 32;
constexpr size_t kMaxReplayBytes = 64ull << 20;  // 2M records: a 8 TiB file at 4 MiB chunks

void EncodeHeader(const JournalHeader& h, std::byte* p) {
  std::memset(p, 0, kHeaderSize);
  std::memcpy(p, "PORJ", 4);
  EncodeFixed16(p + 4, 1);
  EncodeFixed64(p + 8, h.size);
  EncodeFixed64(p + 16, static_cast<uint64_t>(h.mtime_ns));
  EncodeFixed32(p + 24, h.chunk_size);
}

}  // namespace

std::vector<std::pair<uint64_t, Digest128>> Journal::Replay(int dirfd, const std::string& name,
                                                            const JournalHeader& expect) {
  std::vector<std::pair<uint64_t, Digest128>> out;
  // O_NONBLOCK: a FIFO put at the journal's name must not block the receiver (it is then refused
  // as not a regular file).
  auto fd = UniqueFd::OpenAt(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  if (!fd.has_value()) return out;
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(kHeaderSize) ||
      static_cast<size_t>(st.st_size) > kMaxReplayBytes) {
    return out;
  }
  std::vector<std::byte> data(static_cast<size_t>(st.st_size));
  if (!io::PreadFull(fd->get(), 0, data, name).ok()) return out;
  std::byte want[kHeaderSize];
  EncodeHeader(expect, want);
  if (std::memcmp(data.data(), want, kHeaderSize) != 0) return out;
  uint64_t chunks = expect.chunk_size ? (expect.size + expect.chunk_size - 1) / expect.chunk_size : 0;
  for (size_t off = kHeaderSize; off + kRecordSize <= data.size(); off += kRecordSize) {
    const std::byte* r = data.data() + off;
    if (XXH3_64bits(r, 24) != DecodeFixed64(r + 24)) break;  // torn tail
    uint64_t idx = DecodeFixed64(r);
    if (idx >= chunks) break;
    out.emplace_back(idx, Digest128{DecodeFixed64(r + 8), DecodeFixed64(r + 16)});
  }
  return out;
}

Result<Journal> Journal::Create(int dirfd, const std::string& name, const std::string& display,
                                const JournalHeader& header) {
  PORO_ASSIGN_OR_RETURN(UniqueFd fd,
                        UniqueFd::OpenAt(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600));
  std::byte h[kHeaderSize];
  EncodeHeader(header, h);
  PORO_RETURN_IF_ERROR(io::PwriteFull(fd.get(), 0, h, display));
  if (::fdatasync(fd.get()) != 0) return Status::IoError("fdatasync " + display, errno);
  if (::lseek(fd.get(), 0, SEEK_END) < 0) return Status::IoError("lseek " + display, errno);
  return Journal(std::move(fd), display);
}

Result<Journal> Journal::OpenAppend(int dirfd, const std::string& name, const std::string& display,
                                    uint64_t valid_records) {
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, UniqueFd::OpenAt(dirfd, name, O_WRONLY | O_NOFOLLOW));
  off_t end = ::lseek(fd.get(), 0, SEEK_END);
  if (end < 0) return Status::IoError("lseek " + display, errno);
  // Drop whatever follows the valid records (a torn or damaged tail), so that new records follow
  // them directly: Replay stops at the first bad record, and would never reach records behind it.
  const off_t keep = off_t(kHeaderSize) + off_t(valid_records) * off_t(kRecordSize);
  if (end > keep && ::ftruncate(fd.get(), keep) != 0) return Status::IoError("ftruncate " + display, errno);
  if (end < keep) return Status::DataLoss("journal " + display + " is shorter than its replayed records");
  if (::lseek(fd.get(), keep, SEEK_SET) < 0) return Status::IoError("lseek " + display, errno);
  return Journal(std::move(fd), display);
}

Status Journal::Append(const std::vector<std::pair<uint64_t, Digest128>>& records) {
  if (records.empty()) return Status::OK();
  std::vector<std::byte> buf(records.size() * kRecordSize);
  std::byte* p = buf.data();
  for (const auto& [idx, d] : records) {
    EncodeFixed64(p, idx);
    EncodeFixed64(p + 8, d.hi);
    EncodeFixed64(p + 16, d.lo);
    EncodeFixed64(p + 24, XXH3_64bits(p, 24));
    p += kRecordSize;
  }
  off_t pos = ::lseek(fd_.get(), 0, SEEK_CUR);
  if (pos < 0) return Status::IoError("lseek " + display_, errno);
  PORO_RETURN_IF_ERROR(io::PwriteFull(fd_.get(), static_cast<uint64_t>(pos), buf, display_));
  if (::lseek(fd_.get(), pos + off_t(buf.size()), SEEK_SET) < 0)
    return Status::IoError("lseek " + display_, errno);
  if (::fdatasync(fd_.get()) != 0) return Status::IoError("fdatasync " + display_, errno);
  return Status::OK();
}

}  // namespace pororoca::engine
