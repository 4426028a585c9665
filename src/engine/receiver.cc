// Receiving side of a session: plan each announced entry (existing destination, --sync, resume from
// the journal), receive and verify chunks on every data channel, write them at their offsets, and
// commit finished files atomically in batches (fsync, rename into place, fsync the directory).
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "base/log.h"
#include "base/mutex.h"
#include "engine/channel_seal.h"
#include "engine/journal.h"
#include "engine/session.h"
#include "engine/zero_digest.h"
#include "io/direct_align.h"

namespace pororoca::engine {

std::string PartName(std::string_view name) {
  char buf[40];
  std::snprintf(buf, sizeof buf, ".poro-%016llx.part",
                static_cast<unsigned long long>(XXH3_64bits(name.data(), name.size())));
  return buf;
}

std::string JournalName(std::string_view name) {
  char buf[40];
  std::snprintf(buf, sizeof buf, ".poro-%016llx.jnl",
                static_cast<unsigned long long>(XXH3_64bits(name.data(), name.size())));
  return buf;
}

namespace {

using proto::ChunkHeader;
using proto::ChunkKind;
using proto::EntryType;
using proto::FileEntry;
using proto::MsgType;
using proto::PlanAction;
using proto::PlanEntry;

// Nanoseconds since the epoch (negative before 1970) as a normalised timespec for utimensat.
struct timespec MtimeSpec(int64_t ns) {
  struct timespec t {
    ns / 1000000000, ns % 1000000000
  };
  if (t.tv_nsec < 0) {
    t.tv_sec -= 1;
    t.tv_nsec += 1000000000;
  }
  return t;
}

enum class ChunkState : uint8_t { kMissing = 0, kWritten = 1, kDurable = 2 };

// A chunk the sender sends again in pieces (it failed verification twice): the pieces land in one
// pool buffer, each verified on arrival; the chunk is written once all are in. At most
// kMaxAssemblies per session, counted in `*count` for as long as the buffer is held.
struct Assembly {
  enum Piece : uint8_t { kMissing = 0, kReceiving = 1, kHave = 2 };
  io::Buffer buf;
  uint32_t len = 0;
  std::vector<uint8_t> pieces;  // Piece, one per kPieceSize from the chunk's start
  uint32_t left = 0;            // pieces not yet verified
  std::atomic<unsigned>* count = nullptr;
  Assembly() = default;
  Assembly(const Assembly&) = delete;
  Assembly& operator=(const Assembly&) = delete;
  ~Assembly() {
    if (count != nullptr) count->fetch_sub(1);
  }
};

struct RxFile {
  // Set when the file is planned, before it is shared; read without a lock.
  FileEntry entry;
  std::string final_rel;  // root-relative destination
  std::string dir_rel;    // its directory
  std::string name;       // last component
  uint64_t chunks = 0;
  // Lock order: io_mu, then mu, then Receiver::mu_. Writers hold io_mu shared while they use `fd`;
  // opening and closing `fd` take it exclusively, so no write can hit a closed (or reused) fd.
  SharedMutex io_mu PORO_ACQUIRED_BEFORE(mu, write_mu);
  // Buffered writes to one file serialise in the kernel (the inode lock), where waiters spin; taking
  // this first lets them sleep and leaves the CPU to the channels that receive and hash.
  Mutex write_mu;
  Mutex mu;
  // The hidden part file, open while chunks arrive (changed with mu held too).
  UniqueFd fd PORO_GUARDED_BY(io_mu);
  std::vector<ChunkState> state PORO_GUARDED_BY(mu);
  std::vector<Digest128> digests PORO_GUARDED_BY(mu);
  std::vector<uint8_t> retries PORO_GUARDED_BY(mu);
  uint64_t missing PORO_GUARDED_BY(mu) = 0;  // chunks not yet written
  uint64_t arrived PORO_GUARDED_BY(mu) = 0;  // verified chunks written in this session (vs FILE_END.sent)
  uint64_t unjournaled_bytes PORO_GUARDED_BY(mu) = 0;
  bool direct PORO_GUARDED_BY(mu) = false;  // fd is O_DIRECT (changed with io_mu held exclusively too)
  void Close() PORO_REQUIRES(io_mu) { fd.Reset(); }
  bool have_end PORO_GUARDED_BY(mu) = false;
  proto::FileEnd end PORO_GUARDED_BY(mu);
  bool terminal PORO_GUARDED_BY(mu) = false;  // committed or failed
  bool failed PORO_GUARDED_BY(mu) = false;
  Status error PORO_GUARDED_BY(mu);  // why this side failed the file (kept apart from the sender's FILE_END)
  bool journaled PORO_GUARDED_BY(mu) = false;        // a journal exists for this file
  uint64_t journal_records PORO_GUARDED_BY(mu) = 0;  // valid records in it (replayed, then appended)
  // The part file already has its final size: set when it was created at that size, or when the
  // file's last chunk was written with data (buffered). Else the commit truncates it.
  bool sized PORO_GUARDED_BY(mu) = false;
  bool queued PORO_GUARDED_BY(mu) = false;  // in the committer's queue
  // Chunks being gathered from pieces (by index); dropped when the file fails or the chunk is written.
  std::unordered_map<uint64_t, std::shared_ptr<Assembly>> assemblies PORO_GUARDED_BY(mu);
};

// The file-system path of f's hidden part file, for messages.
std::string PartDisplay(const ExportRoot& root, const RxFile& f) {
  return root.Display(ExportRoot::Join(f.dir_rel, PartName(f.name)));
}

// Writes verified chunks into part files; one per channel thread. A part file is written direct
// (O_DIRECT, through this thread's io_uring queue) or buffered (pwrite), as UseDirect() decided when
// it was opened.
class PartWriter {
 public:
  PartWriter(const ExportRoot& root, io::BufferPool* pool) : root_(root), pool_(pool) {}

  // Turns O_DIRECT on for a part file of `size` bytes where the file system really does direct I/O,
  // for files of 1 MiB and more; says whether it did. tmpfs accepts the flag on recent kernels but
  // only adds alignment rules, so it stays buffered (and mapped) there.
  static bool UseDirect(int fd, uint64_t size, bool try_direct) {
    if (!try_direct || size < (1u << 20)) return false;
    struct statfs sfs {};
    if (::fstatfs(fd, &sfs) != 0 || sfs.f_type == TMPFS_MAGIC) return false;
    int fl = ::fcntl(fd, F_GETFL);
    return fl >= 0 && ::fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
  }

  // Writes the chunk payload buf[0, len) at `offset` of f's part file (`direct`: f.direct, read under
  // f.mu by the caller). A direct write of a short last chunk pads buf with zeros to the alignment.
  Status Write(RxFile& f, bool direct, uint64_t offset, uint64_t index, io::Buffer& buf, uint32_t len)
      PORO_REQUIRES_SHARED(f.io_mu) {
    return direct ? WriteDirect(f, offset, index, buf, len) : WriteBuffered(f, offset, buf, len);
  }

 private:
  Status WriteDirect(RxFile& f, uint64_t offset, uint64_t index, io::Buffer& buf, uint32_t len)
      PORO_REQUIRES_SHARED(f.io_mu) {
    if (len % io::kDirectAlign) {
      uint32_t padded = io::RoundUpToDirectAlign(len);
      std::memset(buf.data() + len, 0, padded - len);
      len = padded;
    }
    // The pool's buffers are registered with the queue (fixed writes: no page pinning per I/O); the
    // channels together keep several writes in flight. Created at the first direct write: registering
    // the pool costs, and tmpfs never needs it.
    if (!q_) {
      io::IoQueueOptions qo;
      qo.depth = 4;
      qo.registered = pool_;
      PORO_ASSIGN_OR_RETURN(q_, io::CreateIoQueue(qo));
    }
    PORO_RETURN_IF_ERROR(
        q_->SubmitWrite(f.fd.get(), offset, std::span<const std::byte>(buf.data(), len), index));
    io::Completion c;
    PORO_ASSIGN_OR_RETURN(size_t n, q_->Reap(std::span(&c, 1), 1));
    if (n != 1) return Status::Internal("io_uring write did not complete");
    if (c.result < 0) return Status::IoError("write " + PartDisplay(root_, f), static_cast<int>(-c.result));
    if (static_cast<uint64_t>(c.result) != len) return Status::IoError("write " + PartDisplay(root_, f), EIO);
    return Status::OK();
  }

  // Buffered destination (tmpfs, small files): a plain pwrite; io_uring would only punt it to a worker.
  Status WriteBuffered(RxFile& f, uint64_t offset, const io::Buffer& buf, uint32_t len)
      PORO_REQUIRES_SHARED(f.io_mu) {
    MutexLock wl(&f.write_mu);
    Status s = io::PwriteFull(f.fd.get(), offset, std::span<const std::byte>(buf.data(), len), std::string());
    if (!s.ok()) return Status::IoError("pwrite " + PartDisplay(root_, f), s.sys_errno());
    return Status::OK();
  }

  const ExportRoot& root_;
  io::BufferPool* pool_;
  std::unique_ptr<io::IoQueue> q_;
};

// One chunk message as it comes off a data channel.
struct Incoming {
  ChunkHeader h;
  std::shared_ptr<RxFile> f;  // null for end-of-stream, and for a chunk of a file finished here (dropped)
  io::Buffer buf;             // the payload lands here, then is written at its offset
  std::span<std::byte> payload;
  Status open_error;  // the part file could not be created: the file fails once the chunk is read
  std::optional<Digest128> digest;     // the payload's XXH3-128, when the seal's opening computed it
  std::shared_ptr<Assembly> assembly;  // a piece: the payload landed in this chunk's assembly buffer
  uint16_t channel = 0;                // the data channel it came on
};

// The process's file descriptor limit (4096 if unknown or unlimited). A session keeps at most a
// quarter of it in open part files and an eighth in cached directories.
size_t NofileLimit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 4096;
  return static_cast<size_t>(rl.rlim_cur);
}

class Receiver {
 public:
  Receiver(const ExportRoot& root, std::string target, const EngineOptions& opts, const DataPath& dp)
      : root_(root),
        target_(std::move(target)),
        opts_(opts),
        dp_(dp),
        zero_(opts.chunk_size),
        nofile_(NofileLimit()),
        dircache_(root, std::clamp<size_t>(nofile_ / 8, 16, 4096)) {
    max_open_parts_ = std::clamp<size_t>(nofile_ / 4, 16, 4096);
    commit_batch_ = std::max<size_t>(1, std::min<size_t>(kCommitBatch, max_open_parts_ / 2));
  }

  Result<nlohmann::json> Run();

 private:
  Status HandleFiles(const proto::ControlFrame& f) PORO_EXCLUDES(mu_);
  PlanEntry PlanOne(const FileEntry& e, std::shared_ptr<RxFile>* out);
  // Creates directory `rel` (mode | 0700) unless it exists as a directory; *created says which.
  Status MakeDir(const std::string& rel, uint32_t mode, bool* created);
  Status MakeSymlink(const FileEntry& e, const std::string& rel);
  Status HandleFileEnd(const proto::ControlFrame& f) PORO_EXCLUDES(mu_);
  void ChannelMain(size_t i);
  // Reads the control connection (FILES, FILE_END, END, ERROR, CANCEL) until the session is over or
  // fails; runs on its own thread so that a channel's error can interrupt a blocking read.
  void CtlReaderLoop() PORO_EXCLUDES(mu_);
  // Receives chunk messages on channel i and stores them until end-of-stream. Errors end the session;
  // a file that cannot be written fails alone (FailFile).
  Status ChannelLoop(size_t i);
  // The channel's sink: checks the header, finds the chunk's file, creates its part file if needed,
  // and returns where the payload goes.
  Result<std::span<std::byte>> AcceptChunk(std::span<const std::byte> header, size_t payload_len,
                                           Incoming& in) PORO_EXCLUDES(mu_);
  // The file a chunk names; null if it was announced but is already finished here (the chunk is
  // read and dropped).
  Result<std::shared_ptr<RxFile>> ChunkFile(uint64_t file_id) PORO_EXCLUDES(mu_);
  // A pool buffer for the payload of `in`.
  Result<std::span<std::byte>> PayloadBuffer(Incoming& in, size_t payload_len);
  // Creates f's part file unless it is open or no longer wanted; waits for an open slot first.
  Status EnsurePartOpen(RxFile& f) PORO_EXCLUDES(f.io_mu, f.mu, mu_);
  // A hole chunk: zeros where the journal had data, then recorded like a written chunk.
  Status StoreHole(const Incoming& in);
  // A data chunk: verified, then written (or asked for again). Errors are the session's.
  Status StoreData(Incoming& in, PartWriter& writer);
  // A piece of a chunk sent again in pieces: verified; the chunk is written once all its pieces are in.
  Status StorePiece(Incoming& in, PartWriter& writer);
  // Writes a verified chunk (buf[0, len) at its offset) and records it. Errors fail the file.
  void WriteChunk(const std::shared_ptr<RxFile>& f, uint64_t index, uint64_t offset, io::Buffer& buf,
                  uint32_t len, const Digest128& d, Status open_error, PartWriter& writer);
  // Where a piece's payload goes: its place in the chunk's assembly (in.assembly set), or nowhere
  // (in.f reset: a piece no longer wanted, read and dropped).
  Result<std::span<std::byte>> AcceptPiece(Incoming& in, size_t payload_len) PORO_EXCLUDES(mu_);
  // A chunk or piece that failed verification (`why`: its digest, or the seal's authentication): ask
  // for it again (from the second failure of a chunk on, in pieces, when a buffer is free to gather
  // them), or fail its file after max_chunk_retries.
  Status RejectChunk(const Incoming& in, const Status& why);
  // Sets a pool buffer aside to gather chunk `index` of f from pieces; false if none can be spared.
  bool StartAssembly(const std::shared_ptr<RxFile>& f, uint64_t index, uint32_t len);
  // Makes [offset, offset+len) of f's part file read as zeros (punch a hole, else write zeros).
  Status ZeroRange(const std::shared_ptr<RxFile>& f, uint64_t offset, uint32_t len)
      PORO_EXCLUDES(f->io_mu, f->mu);
  // Part files open at once are bounded (open_parts_). The channel threads take a slot with
  // AcquireOpenSlot() before they lock a file; OpenPart() counts without waiting.
  void AcquireOpenSlot() PORO_EXCLUDES(mu_);
  void ReleaseOpenSlot() PORO_EXCLUDES(mu_);
  Status OpenPart(RxFile& f) PORO_REQUIRES(f.io_mu, f.mu) PORO_EXCLUDES(mu_);
  Status OpenPartFile(RxFile& f) PORO_REQUIRES(f.io_mu, f.mu);
  // Closes f's part file and frees its slot.
  void ClosePart(RxFile& f) PORO_REQUIRES(f.io_mu) PORO_EXCLUDES(mu_);
  // Every chunk is on disk and every chunk the sender announced in FILE_END has arrived.
  static bool Complete(const RxFile& f) PORO_REQUIRES(f.mu) {
    return f.missing == 0 && f.have_end && f.arrived >= f.end.sent;
  }
  void ChunkWritten(const std::shared_ptr<RxFile>& f, uint64_t index, const Digest128& d, uint32_t len)
      PORO_EXCLUDES(f->mu);
  // This side fails the file with `s` (disk full, unwritable destination, corrupt chunks, the sender's
  // error) unless it is finished or failed already; the committer then finishes it. The session goes on.
  void FailFile(const std::shared_ptr<RxFile>& f, Status s) PORO_EXCLUDES(f->mu);
  void FailFileLocked(const std::shared_ptr<RxFile>& f, Status s) PORO_REQUIRES(f->mu);
  void CommitterMain() PORO_EXCLUDES(mu_);
  Status CommitBatch(std::vector<std::shared_ptr<RxFile>>& batch) PORO_EXCLUDES(mu_);
  // Makes the written chunks durable, then records them.
  Status JournalFile(RxFile& f) PORO_REQUIRES(f.mu) PORO_REQUIRES_SHARED(f.io_mu);
  void FinishFile(RxFile& f, const Status& s) PORO_REQUIRES(f.io_mu, f.mu) PORO_EXCLUDES(mu_);
  void Enqueue(const std::shared_ptr<RxFile>& f) PORO_REQUIRES(f->mu) PORO_EXCLUDES(mu_);
  // Wakes Run() if every announced entry is terminal.
  void NotifyIfAllDone() PORO_REQUIRES(mu_);
  Status ApplyDirMetadata();
  // Makes the hard links announced in this session (after every file is committed): each names a
  // file of the transfer, which must be in place with the size and mtime announced. A link that
  // cannot be made fails as an entry (counted, named, reported in SUMMARY.link_failures).
  void MakeHardLinks(std::vector<std::pair<std::string, std::string>>* failures);
  void Fail(Status s) PORO_EXCLUDES(mu_);
  bool Cancelled() const { return dp_.cancel && dp_.cancel->load(); }
  std::string Display(const std::string& rel) const { return root_.Display(rel); }
  std::string PartDisplay(const RxFile& f) const { return engine::PartDisplay(root_, f); }

  const ExportRoot& root_;
  std::string target_;
  EngineOptions opts_;
  DataPath dp_;
  ZeroDigests zero_;
  std::vector<ChannelSeal> seals_;  // one per data channel above clear; channel i's thread only
  const size_t nofile_;             // NofileLimit() when the session started
  // Chunk assemblies alive (Assembly::count); declared before files_, which may hold the last ones.
  static constexpr unsigned kMaxAssemblies = 4;
  std::atomic<unsigned> assemblies_{0};
  DirCache dircache_;

  // Files that completed are committed in batches of commit_batch_ (one syncfs, one FILE_DONE
  // message and one fsync per directory for the batch), or after kCommitDelay when fewer arrive.
  static constexpr size_t kCommitBatch = 64;
  static constexpr std::chrono::milliseconds kCommitDelay{2};
  size_t commit_batch_ = kCommitBatch;

  // mu_ guards what follows; it is taken after any RxFile lock. Three condition variables, so that a
  // file's progress wakes only the thread that waits for it: commit_cv_ the committer (commit_q_,
  // stop_committer_), slot_cv_ the channel threads waiting for an open slot, done_cv_ Run() (end of
  // session or error).
  Mutex mu_;
  CondVar commit_cv_;
  CondVar slot_cv_;
  CondVar done_cv_;
  size_t slot_waiters_ PORO_GUARDED_BY(mu_) = 0;
  Status error_ PORO_GUARDED_BY(mu_);
  // Announced data files not yet finished.
  std::unordered_map<uint64_t, std::shared_ptr<RxFile>> files_ PORO_GUARDED_BY(mu_);
  uint64_t max_id_ PORO_GUARDED_BY(mu_) = 0;  // the highest id announced
  uint64_t entries_ PORO_GUARDED_BY(mu_) = 0, terminal_ PORO_GUARDED_BY(mu_) = 0;
  bool end_received_ PORO_GUARDED_BY(mu_) = false;
  bool summary_sent_ PORO_GUARDED_BY(mu_) = false;
  bool ctl_done_ PORO_GUARDED_BY(mu_) = false;  // the control reader has ended
  // Control reader only (Run() reads dirs_ after END, which the reader accepts under mu_ and after
  // which it plans nothing).
  std::vector<FileEntry> dirs_;                   // for mode/mtime after their contents
  std::unordered_set<std::string> created_dirs_;  // directories this session created
  std::unordered_set<std::string> links_;         // symbolic links this session created
  std::vector<FileEntry> hardlinks_;              // hard link entries, made at the end (MakeHardLinks)
  std::deque<std::shared_ptr<RxFile>> commit_q_ PORO_GUARDED_BY(mu_);
  std::vector<proto::FileDone> dones_ PORO_GUARDED_BY(mu_);
  bool stop_committer_ PORO_GUARDED_BY(mu_) = false;
  // Part files open at once. Channel threads wait for a slot before opening another, so a sender that
  // outruns the committer (many small files) cannot exhaust the process's file descriptors.
  size_t open_parts_ PORO_GUARDED_BY(mu_) = 0;
  size_t max_open_parts_ PORO_GUARDED_BY(mu_) = 1024;
  uint64_t files_committed_ PORO_GUARDED_BY(mu_) = 0, bytes_committed_ PORO_GUARDED_BY(mu_) = 0;
};

void Receiver::Fail(Status s) {
  {
    MutexLock lock(&mu_);
    if (error_.ok()) error_ = std::move(s);
  }
  commit_cv_.NotifyAll();
  slot_cv_.NotifyAll();
  done_cv_.NotifyAll();
}

void Receiver::NotifyIfAllDone() {
  if (end_received_ && terminal_ == entries_) done_cv_.NotifyAll();
}

Status Receiver::MakeDir(const std::string& rel, uint32_t mode, bool* created) {
  *created = false;
  PORO_ASSIGN_OR_RETURN(auto parent, dircache_.Parent(rel));
  int dfd = parent.first->fd.get();
  if (::mkdirat(dfd, parent.second.c_str(), (mode & 07777) | 0700) == 0) {
    *created = true;
    return Status::OK();
  }
  int err = errno;
  if (err == EEXIST) {
    struct stat st {};
    if (::fstatat(dfd, parent.second.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      return Status::OK();
    }
    return Status::AlreadyExists("destination exists and is not a directory: " + Display(rel));
  }
  return Status::IoError("mkdir " + Display(rel), err);
}

Status Receiver::MakeSymlink(const FileEntry& e, const std::string& rel) {
  PORO_ASSIGN_OR_RETURN(auto parent, dircache_.Parent(rel));
  int dfd = parent.first->fd.get();
  std::string tmp = PartName(parent.second);
  ::unlinkat(dfd, tmp.c_str(), 0);
  if (::symlinkat(e.link_target.c_str(), dfd, tmp.c_str()) != 0) {
    return Status::IoError("symlink " + Display(rel), errno);
  }
  struct timespec ts[2] = {{0, UTIME_OMIT}, MtimeSpec(e.mtime_ns)};
  ::utimensat(dfd, tmp.c_str(), ts, AT_SYMLINK_NOFOLLOW);
  unsigned flags = opts_.existing == ExistingMode::kOverwrite ? 0 : RENAME_NOREPLACE;
  if (::renameat2(dfd, tmp.c_str(), dfd, parent.second.c_str(), flags) != 0) {
    int err = errno;
    ::unlinkat(dfd, tmp.c_str(), 0);
    if (err == EEXIST) return Status::AlreadyExists("destination exists: " + Display(rel));
    return Status::IoError("rename into place " + Display(rel), err);
  }
  return Status::OK();
}

PlanEntry Receiver::PlanOne(const FileEntry& e, std::shared_ptr<RxFile>* out) {
  PlanEntry p;
  p.id = e.id;
  std::string rel = ExportRoot::Join(target_, e.path);
  auto fail = [&](const Status& s) {
    p.action = PlanAction::kFail;
    p.code = s.code();
    p.message = std::string(s.message());  // this end's own words; the peer's form goes in the PLAN
    return p;
  };
  // Nothing goes below a link this transfer made: the link could lead anywhere in the export root
  // (past this end's policy check on the path, which names the link, not where it leads).
  if (!links_.empty()) {
    for (std::string d = ExportRoot::Split(rel).first; !d.empty(); d = ExportRoot::Split(d).first) {
      if (links_.count(d)) {
        return fail(Status::InvalidArgument("not received: its parent " + Display(d) +
                                            " is a symbolic link sent in this transfer"));
      }
    }
  }
  if (e.type == EntryType::kDir) {
    bool created = false;
    Status s = MakeDir(rel, e.mode, &created);
    if (!s.ok()) return fail(s);
    if (created) created_dirs_.insert(rel);
    dirs_.push_back(e);
    p.action = PlanAction::kDone;
    return p;
  }
  // This end's own policy verdict on each file and link below the root (DataPath::admit_path), so
  // a sender that does not apply it gains nothing. Directories are created as announced (the
  // sender's walker does the same with a denied one), so that the files below are failed by name.
  if (dp_.admit_path && !e.path.empty()) {
    if (Status s = dp_.admit_path(rel, e.path); !s.ok()) return fail(s);
  }
  if (e.type == EntryType::kHardLink) {
    // Made once every file is in place (its target is an earlier entry, maybe not committed yet);
    // an existing name is dealt with then, so a resumed transfer finds its own links done.
    hardlinks_.push_back(e);
    p.action = PlanAction::kDone;
    return p;
  }
  // The parent must be a directory inside the root (created by an earlier entry or pre-existing).
  auto [dir_rel, name] = ExportRoot::Split(rel);
  auto parent = dircache_.Get(dir_rel);
  if (!parent.has_value()) return fail(parent.error());
  const int dfd = (*parent)->fd.get();
  struct stat stbuf {};
  const struct stat* st = &stbuf;
  // In a directory this session created nothing can be in the way (a name that appears there
  // meanwhile is caught by the commit's RENAME_NOREPLACE): no stat needed.
  bool exists = false;
  if (!created_dirs_.count(dir_rel)) {
    exists = ::fstatat(dfd, name.c_str(), &stbuf, AT_SYMLINK_NOFOLLOW) == 0;
    if (!exists && errno != ENOENT) return fail(Status::IoError("stat " + Display(rel), errno));
  }
  if (exists) {
    if (S_ISDIR(st->st_mode)) {
      return fail(Status::AlreadyExists("destination exists and is a directory: " + Display(rel)));
    }
    // Identical by size and mtime: already there. With the default mode this is what lets a re-run of
    // the same command (or a retry) after a crash go on past the files it had committed.
    if (opts_.existing != ExistingMode::kOverwrite && e.type == EntryType::kFile && S_ISREG(st->st_mode) &&
        static_cast<uint64_t>(st->st_size) == e.size &&
        int64_t(st->st_mtim.tv_sec) * 1000000000 + st->st_mtim.tv_nsec == e.mtime_ns) {
      p.action = PlanAction::kSkip;
      return p;
    }
    if (opts_.existing == ExistingMode::kSkip) {
      p.action = PlanAction::kSkip;
      return p;
    }
    if (opts_.existing == ExistingMode::kFail && !opts_.sync) {
      return fail(Status::AlreadyExists("destination exists: " + Display(rel) +
                                        " (use --overwrite, --skip-existing or --sync)"));
    }
  }
  if (e.type == EntryType::kSymlink) {
    if (opts_.sync || opts_.existing == ExistingMode::kOverwrite) {
      if (exists) ::unlinkat(dfd, name.c_str(), 0);
    }
    Status s = MakeSymlink(e, rel);
    if (!s.ok()) return fail(s);
    links_.insert(rel);
    p.action = PlanAction::kDone;
    return p;
  }
  auto f = std::make_shared<RxFile>();
  f->entry = e;
  f->final_rel = rel;
  f->dir_rel = std::move(dir_rel);
  f->name = std::move(name);
  f->chunks = ChunkCount(e.size, opts_.chunk_size);
  MutexLock lock(&f->mu);  // not shared yet: taken for the analysis, never contended
  f->state.assign(f->chunks, ChunkState::kMissing);
  f->digests.resize(f->chunks);
  f->retries.assign(f->chunks, 0);
  f->missing = f->chunks;
  p.action = PlanAction::kSendAll;
  if (f->chunks > 1) {
    JournalHeader jh{e.size, e.mtime_ns, opts_.chunk_size};
    auto have = Journal::Replay(dfd, JournalName(f->name), jh);
    struct stat pst {};
    std::string part = PartName(f->name);
    if (!have.empty() && ::fstatat(dfd, part.c_str(), &pst, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(pst.st_mode)) {
      for (const auto& [idx, d] : have) {  // a later record for an index replaces an earlier one
        if (f->state[idx] != ChunkState::kDurable) f->missing--;
        f->state[idx] = ChunkState::kDurable;
        f->digests[idx] = d;
      }
      f->journaled = true;
      f->journal_records = have.size();
      // Not `sized`: an earlier attempt may have written O_DIRECT (a padded last chunk); the
      // commit truncates to the exact size.
      p.action = PlanAction::kResume;
      p.have = std::move(have);
      PORO_LOG(INFO) << "resuming " << Display(rel) << ": " << (f->chunks - f->missing) << " of " << f->chunks
                     << " chunks already durable";
    }
  }
  *out = std::move(f);
  return p;
}

Status Receiver::HandleFiles(const proto::ControlFrame& fr) {
  PORO_ASSIGN_OR_RETURN(auto entries, proto::DecodeFiles(fr.body));
  {
    // Ids grow with every entry (the sender numbers them in walk order): an id at or below the
    // highest announced one is a repeat, even of a file already finished and forgotten. Checked for
    // the whole batch before any of it is planned.
    MutexLock lock(&mu_);
    if (end_received_) return Status::Protocol("FILES after END");
    uint64_t last = max_id_;
    for (const auto& e : entries) {
      if (e.id <= last) return Status::Protocol("FILES repeats or reorders file id " + std::to_string(e.id));
      last = e.id;
    }
    max_id_ = last;
  }
  std::vector<PlanEntry> plan;
  plan.reserve(entries.size());
  for (const auto& e : entries) {
    if (e.path.empty() && e.type != EntryType::kDir && e.type != EntryType::kFile) {
      return Status::Protocol("transfer root must be a file or a directory");
    }
    std::shared_ptr<RxFile> f;
    PlanEntry p = PlanOne(e, &f);
    uint64_t resumed_chunks = 0;
    if (f != nullptr) {
      MutexLock file_lock(&f->mu);
      resumed_chunks = f->chunks - f->missing;
    }
    MutexLock lock(&mu_);
    entries_++;
    if (e.type == EntryType::kFile) {
      dp_.stats->files_total++;
      dp_.stats->bytes_total += e.size;
    }
    switch (p.action) {
      case PlanAction::kFail:
        PORO_LOG(WARNING) << "refusing " << ExportRoot::Join(target_, e.path) << ": " << p.message;
        dp_.stats->files_failed++;
        dp_.stats->AddFailure(Display(ExportRoot::Join(target_, e.path)), p.message);
        if (e.type != EntryType::kDir) dp_.stats->AddFileResult({e.path, e.size, "", "failed", p.message});
        terminal_++;
        break;
      case PlanAction::kSkip:
        dp_.stats->files_skipped++;
        dp_.stats->bytes_skipped += e.size;
        dp_.stats->files_done++;
        dp_.stats->bytes_done += e.size;
        if (e.type == EntryType::kFile) dp_.stats->AddFileResult({e.path, e.size, "", "skipped", ""});
        terminal_++;
        break;
      case PlanAction::kDone:
        if (e.type == EntryType::kFile) {  // an empty file, made at plan time
          dp_.stats->AddFileResult({e.path, 0, FileDigester().Finish().ToHex(), "succeeded", ""});
        }
        terminal_++;
        break;
      default:
        dp_.stats->bytes_resumed += resumed_chunks * uint64_t(opts_.chunk_size);
        files_[e.id] = f;
        break;
    }
    if (p.action == PlanAction::kFail) p.message = dp_.PeerMessage(Status(p.code, p.message));
    plan.push_back(std::move(p));
    NotifyIfAllDone();
  }
  return dp_.ctl->Send(MsgType::kPlan, proto::EncodePlan(plan));
}

Status Receiver::HandleFileEnd(const proto::ControlFrame& fr) {
  PORO_ASSIGN_OR_RETURN(auto ends, proto::DecodeFileEnds(fr.body));
  for (auto& end : ends) {
    std::shared_ptr<RxFile> f;
    {
      MutexLock lock(&mu_);
      auto it = files_.find(end.id);
      if (it == files_.end()) {
        // An announced file that is already finished (and forgotten): a late error FILE_END.
        if (end.id != 0 && end.id <= max_id_) continue;
        return Status::Protocol("FILE_END names unknown file id " + std::to_string(end.id));
      }
      f = it->second;
    }
    MutexLock lock(&f->mu);
    if (f->have_end) {
      // One error FILE_END may follow a successful one: a chunk the sender had to send again could
      // not be read any more (the source changed). The file fails with the sender's reason.
      if (f->end.code != Code::kOk || end.code == Code::kOk) {
        return Status::Protocol("FILE_END repeated for file id " + std::to_string(end.id));
      }
      FailFileLocked(
          f, Status(end.code, end.message.empty() ? "the sender could not read the file again" : end.message)
                 .WithSide(Side::kSource));
      f->end.code = end.code;  // a third FILE_END is refused
      continue;
    }
    if (end.code == Code::kOk && end.chunks != f->chunks) {
      return Status::Protocol("FILE_END chunk count does not match the file size");
    }
    f->have_end = true;
    f->end = std::move(end);
    if (Complete(*f) || f->end.code != Code::kOk) Enqueue(f);
  }
  return Status::OK();
}

void Receiver::Enqueue(const std::shared_ptr<RxFile>& f) {
  if (f->queued) return;
  f->queued = true;
  MutexLock lock(&mu_);
  commit_q_.push_back(f);
  // The first file starts the committer's clock (kCommitDelay); a full batch needs it now.
  if (commit_q_.size() == 1 || commit_q_.size() == commit_batch_) commit_cv_.NotifyOne();
}

void Receiver::FailFile(const std::shared_ptr<RxFile>& f, Status s) {
  MutexLock lock(&f->mu);
  FailFileLocked(f, std::move(s));
}

void Receiver::FailFileLocked(const std::shared_ptr<RxFile>& f, Status s) {
  if (f->terminal || f->failed) return;
  f->failed = true;
  f->error = std::move(s);
  f->assemblies.clear();
  Enqueue(f);
}

void Receiver::AcquireOpenSlot() {
  // Called with no file lock held: the committer frees slots, and it may need those locks.
  MutexLock lock(&mu_);
  if (open_parts_ >= max_open_parts_) {
    // Files waiting for their commit hold slots: commit them now rather than after kCommitDelay.
    slot_waiters_++;
    commit_cv_.NotifyOne();
    slot_cv_.WaitFor(&mu_, std::chrono::seconds(30), [&]() PORO_REQUIRES(mu_) {
      return open_parts_ < max_open_parts_ || !error_.ok() || Cancelled();
    });
    slot_waiters_--;
  }
  open_parts_++;
}

void Receiver::ReleaseOpenSlot() {
  MutexLock lock(&mu_);
  open_parts_--;
  if (slot_waiters_ > 0) slot_cv_.NotifyOne();
}

Status Receiver::OpenPart(RxFile& f) {
  // For the committer and hole punching: they must not wait for slots (the committer frees them).
  {
    MutexLock lock(&mu_);
    open_parts_++;
  }
  Status s = OpenPartFile(f);
  if (!s.ok()) ReleaseOpenSlot();
  return s;
}

Status Receiver::OpenPartFile(RxFile& f) {
  PORO_ASSIGN_OR_RETURN(auto dir, dircache_.Get(f.dir_rel));
  std::string part = PartName(f.name);
  std::string display = PartDisplay(f);
  int flags = O_RDWR | O_CREAT | O_NOFOLLOW;
  bool fresh = !f.journaled;
  if (fresh) flags |= O_TRUNC;
  auto r = UniqueFd::OpenAt(dir->fd.get(), part, flags, 0600);
  if (!r.has_value()) return Status::IoError("create " + display, r.error().sys_errno());
  UniqueFd fd = std::move(*r);
  bool direct = PartWriter::UseDirect(fd.get(), f.entry.size, opts_.try_direct);
  // A file of several chunks gets its size now (chunks arrive in any order); a single chunk's
  // write gives it its size, else the commit sets it.
  if (fresh && f.chunks > 1) {
    if (::ftruncate(fd.get(), static_cast<off_t>(f.entry.size)) != 0) {
      return Status::IoError("truncate " + display, errno);
    }
    f.sized = true;
  }
  f.fd = std::move(fd);
  f.direct = direct;
  return Status::OK();
}

void Receiver::ChunkWritten(const std::shared_ptr<RxFile>& f, uint64_t index, const Digest128& d,
                            uint32_t len) {
  MutexLock lock(&f->mu);
  // A chunk may arrive for an index the journal listed: the source changed there, and the new
  // bytes (already written) replace the old ones.
  if (f->state[index] == ChunkState::kMissing) f->missing--;
  f->state[index] = ChunkState::kWritten;
  f->digests[index] = d;
  f->assemblies.erase(index);  // a whole copy came after all
  f->arrived++;
  f->unjournaled_bytes += len;
  if (len > 0 && index + 1 == f->chunks && !f->direct) f->sized = true;
  if (Complete(*f)) Enqueue(f);
}

Status Receiver::ChannelLoop(size_t i) {
  transport::MessageChannel& ch = *(*dp_.channels)[i];
  std::array<std::byte, transport::MessageChannel::kMaxHeader> hdr_buf;
  ChannelSeal* seal = seals_.empty() ? nullptr : &seals_[i];
  Hasher128 hasher;
  const crypto::ChunkSeal::PieceFn hash_piece = [&hasher](std::span<const std::byte> p) { hasher.Update(p); };
  PartWriter writer(root_, dp_.pool);
  while (true) {
    if (Cancelled()) return dp_.CancelStatus();
    Incoming in;
    in.channel = static_cast<uint16_t>(i);
    auto sink = [&](std::span<const std::byte> hb, size_t payload_len) -> Result<std::span<std::byte>> {
      if (seal != nullptr) {
        if (hb.size() != proto::kSealedChunkHeaderSize) {
          return Status::Protocol("sealed chunk header has " + std::to_string(hb.size()) +
                                  " bytes, expected " + std::to_string(proto::kSealedChunkHeaderSize));
        }
        hb = hb.first(proto::kChunkHeaderSize);  // at private its digest is still encrypted: see below
      }
      return AcceptChunk(hb, payload_len, in);
    };
    auto r = ch.Receive(hdr_buf, sink, opts_.chunk_size, {});
    if (!r.has_value()) return r.error();
    if (dp_.stream_bytes) dp_.stream_bytes[i].bytes.fetch_add(r->payload_len, std::memory_order_relaxed);
    Status authentic;
    if (seal != nullptr) {
      // The payload is hashed piece by piece as the seal opens it, while each piece is in the cache.
      hasher.Reset();
      authentic =
          seal->Open(std::span(hdr_buf).first<proto::kSealedChunkHeaderSize>(), in.payload, hash_piece);
      if (authentic.ok() && in.h.kind == ChunkKind::kData) in.digest = hasher.Finish();
      if (authentic.ok()) {
        PORO_ASSIGN_OR_RETURN(in.h,
                              proto::DecodeChunkHeader(std::span(hdr_buf).first(proto::kChunkHeaderSize)));
      } else if (in.h.kind == ChunkKind::kEos || in.f == nullptr) {
        // Nothing to ask for again: a forged end of stream, or a chunk this side drops anyway.
        if (in.h.kind == ChunkKind::kEos) return authentic.WithSide(Side::kNetwork);
        continue;
      }
    }
    if (in.h.kind == ChunkKind::kEos) return Status::OK();
    if (in.f == nullptr) continue;  // dropped
    if (!authentic.ok()) {
      dp_.stats->bytes_sent += in.payload.size();
      PORO_RETURN_IF_ERROR(RejectChunk(in, authentic));
      continue;
    }
    if (dp_.pace && in.h.kind == ChunkKind::kData && !dp_.pace(in.h.length)) return dp_.CancelStatus();
    if (in.h.kind == ChunkKind::kPiece) {
      PORO_RETURN_IF_ERROR(StorePiece(in, writer));
      continue;
    }
    PORO_RETURN_IF_ERROR(in.h.kind == ChunkKind::kHole ? StoreHole(in) : StoreData(in, writer));
  }
}

Result<std::span<std::byte>> Receiver::AcceptChunk(std::span<const std::byte> hb, size_t payload_len,
                                                   Incoming& in) {
  PORO_ASSIGN_OR_RETURN(in.h, proto::DecodeChunkHeader(hb));
  const ChunkHeader& h = in.h;
  if (h.kind == ChunkKind::kEos || h.kind == ChunkKind::kHole) {
    if (payload_len != 0) return Status::Protocol("hole or end-of-stream message with a payload");
  } else if (payload_len != h.length) {
    return Status::Protocol("chunk payload length differs from its header");
  }
  if (h.kind == ChunkKind::kEos) return std::span<std::byte>();
  PORO_ASSIGN_OR_RETURN(in.f, ChunkFile(h.file_id));
  if (in.f == nullptr) {
    // Dropped (e.g. chunks still in flight for a file that failed here, disk full); a payload must still
    // be read off the stream.
    if (h.kind == ChunkKind::kHole) return std::span<std::byte>();
    return PayloadBuffer(in, payload_len);
  }
  if (h.kind == ChunkKind::kPiece) return AcceptPiece(in, payload_len);
  const RxFile& f = *in.f;
  uint64_t expect_len = h.index < f.chunks
                            ? std::min<uint64_t>(opts_.chunk_size, f.entry.size - h.index * opts_.chunk_size)
                            : 0;
  if (h.index >= f.chunks || h.offset != h.index * uint64_t(opts_.chunk_size) || h.length != expect_len) {
    return Status::Protocol("chunk " + std::to_string(h.index) + " of file id " + std::to_string(h.file_id) +
                            " has a bad index, offset or length");
  }
  if (h.kind == ChunkKind::kHole) return std::span<std::byte>();
  // The part file is created before the payload arrives; the write checks again whether it is wanted.
  in.open_error = EnsurePartOpen(*in.f);
  return PayloadBuffer(in, payload_len);
}

Result<std::shared_ptr<RxFile>> Receiver::ChunkFile(uint64_t file_id) {
  MutexLock lock(&mu_);
  auto it = files_.find(file_id);
  if (it != files_.end()) return it->second;
  if (file_id == 0 || file_id > max_id_) {
    return Status::Protocol("chunk for unknown file id " + std::to_string(file_id));
  }
  return std::shared_ptr<RxFile>();
}

Result<std::span<std::byte>> Receiver::PayloadBuffer(Incoming& in, size_t payload_len) {
  PORO_ASSIGN_OR_RETURN(in.buf, dp_.pool->Acquire());
  if (in.buf.capacity() < payload_len) return Status::Internal("pool buffer smaller than the chunk size");
  in.payload = std::span<std::byte>(in.buf.data(), payload_len);
  return in.buf.span();
}

Status Receiver::EnsurePartOpen(RxFile& f) {
  {
    ReaderMutexLock io(&f.io_mu);
    MutexLock lock(&f.mu);
    if (f.terminal || f.failed || f.fd.valid()) return Status::OK();
  }
  AcquireOpenSlot();
  Status s;
  bool used = false;
  {
    WriterMutexLock io(&f.io_mu);
    MutexLock lock(&f.mu);
    if (!f.terminal && !f.failed && !f.fd.valid()) {
      s = OpenPartFile(f);
      used = s.ok();
    }
  }
  if (!used) ReleaseOpenSlot();
  return s;
}

Status Receiver::StoreHole(const Incoming& in) {
  const ChunkHeader& h = in.h;
  if (!(h.digest == zero_.Get(h.length))) return Status::Protocol("hole chunk with a non-zero digest");
  bool replaces;
  {
    MutexLock lock(&in.f->mu);
    replaces = in.f->state[h.index] != ChunkState::kMissing;
  }
  if (replaces) {
    // The journal listed data here but the source now has a hole: clear the old bytes, or they
    // would survive under digests that say "zeros".
    Status s = ZeroRange(in.f, h.offset, h.length);
    if (!s.ok()) {
      FailFile(in.f, std::move(s));
      return Status::OK();
    }
  }
  ChunkWritten(in.f, h.index, h.digest, 0);
  return Status::OK();
}

Status Receiver::StoreData(Incoming& in, PartWriter& writer) {
  const ChunkHeader& h = in.h;
  dp_.stats->bytes_sent += h.length;  // payload bytes moved over the data channels
  Digest128 d = in.digest ? *in.digest : Xxh3_128(std::span<const std::byte>(in.payload.data(), h.length));
  if (!(d == h.digest)) return RejectChunk(in, Status::DataLoss("digest mismatch"));
  WriteChunk(in.f, h.index, h.offset, in.buf, h.length, d, std::move(in.open_error), writer);
  return Status::OK();
}

void Receiver::WriteChunk(const std::shared_ptr<RxFile>& f, uint64_t index, uint64_t offset, io::Buffer& buf,
                          uint32_t len, const Digest128& d, Status open_error, PartWriter& writer) {
  Status s = std::move(open_error);
  bool skip;
  {
    ReaderMutexLock io(&f->io_mu);  // the file stays open while it is written
    bool direct;
    {
      MutexLock lock(&f->mu);
      skip = f->terminal || f->failed || !f->fd.valid();
      direct = f->direct;
    }
    if (!skip && s.ok()) s = writer.Write(*f, direct, offset, index, buf, len);
  }
  if (!s.ok()) {
    FailFile(f, std::move(s));
    return;
  }
  if (skip) return;
  dp_.stats->bytes_verified += len;
  ChunkWritten(f, index, d, len);
}

Result<std::span<std::byte>> Receiver::AcceptPiece(Incoming& in, size_t payload_len) {
  const ChunkHeader& h = in.h;
  const RxFile& f = *in.f;
  const uint64_t chunk_off = h.index * uint64_t(opts_.chunk_size);
  const uint64_t chunk_len =
      h.index < f.chunks ? std::min<uint64_t>(opts_.chunk_size, f.entry.size - chunk_off) : 0;
  if (h.offset < chunk_off || h.offset - chunk_off >= chunk_len ||
      (h.offset - chunk_off) % proto::kPieceSize ||
      h.length != std::min<uint64_t>(proto::kPieceSize, chunk_off + chunk_len - h.offset)) {
    return Status::Protocol("piece at offset " + std::to_string(h.offset) + " of chunk " +
                            std::to_string(h.index) + " of file id " + std::to_string(h.file_id) +
                            " has a bad index, offset or length");
  }
  const size_t at = static_cast<size_t>(h.offset - chunk_off);
  {
    MutexLock lock(&in.f->mu);
    auto it = in.f->assemblies.find(h.index);
    if (it != in.f->assemblies.end()) {
      uint8_t& piece = it->second->pieces[at / proto::kPieceSize];
      if (piece == Assembly::kMissing) {  // else a copy is arriving, or has: this one is dropped
        piece = Assembly::kReceiving;
        in.assembly = it->second;
      }
    }
  }
  if (!in.assembly) {
    in.f.reset();  // the chunk is written (or its file finished) meanwhile
    return PayloadBuffer(in, payload_len);
  }
  in.payload = std::span<std::byte>(in.assembly->buf.data() + at, payload_len);
  return in.payload;
}

Status Receiver::StorePiece(Incoming& in, PartWriter& writer) {
  const ChunkHeader& h = in.h;
  dp_.stats->bytes_sent += h.length;
  const Digest128 d =
      proto::PieceDigest(std::span<const std::byte>(in.payload.data(), h.length), h.file_id, h.offset);
  if (!(d == h.digest)) return RejectChunk(in, Status::DataLoss("digest mismatch"));
  const uint64_t chunk_off = h.index * uint64_t(opts_.chunk_size);
  std::shared_ptr<Assembly> done;
  {
    MutexLock lock(&in.f->mu);
    Assembly& a = *in.assembly;
    a.pieces[(h.offset - chunk_off) / proto::kPieceSize] = Assembly::kHave;
    if (--a.left > 0) return Status::OK();
    auto it = in.f->assemblies.find(h.index);
    if (it == in.f->assemblies.end() || it->second != in.assembly) return Status::OK();  // dropped since
    done = std::move(it->second);
    in.f->assemblies.erase(it);
  }
  // Every piece verified, and no copy of any can land in the buffer any more: the chunk's own digest
  // (for the journal and the file digest, which FILE_END checks end to end) is taken over all of it.
  const Digest128 cd = Xxh3_128(std::span<const std::byte>(done->buf.data(), done->len));
  Status open = EnsurePartOpen(*in.f);
  WriteChunk(in.f, h.index, chunk_off, done->buf, done->len, cd, std::move(open), writer);
  return Status::OK();
}

bool Receiver::StartAssembly(const std::shared_ptr<RxFile>& f, uint64_t index, uint32_t len) {
  if (len <= proto::kPieceSize) return false;
  if (assemblies_.fetch_add(1) >= kMaxAssemblies) {
    assemblies_.fetch_sub(1);
    return false;
  }
  auto a = std::make_shared<Assembly>();
  a->count = &assemblies_;  // from here the Assembly gives the count back
  // A quarter of the pool stays free: gathering pieces never holds up the chunks of other files.
  a->buf = dp_.pool->TryAcquire(dp_.pool->SenderReserve());
  if (!a->buf.valid() || a->buf.capacity() < len) return false;
  a->len = len;
  a->left = static_cast<uint32_t>((len + proto::kPieceSize - 1) / proto::kPieceSize);
  a->pieces.assign(a->left, Assembly::kMissing);
  MutexLock lock(&f->mu);
  if (f->terminal || f->failed || f->assemblies.count(index)) return false;
  f->assemblies[index] = std::move(a);
  return true;
}

Status Receiver::RejectChunk(const Incoming& in, const Status& why) {
  const ChunkHeader& h = in.h;
  const bool piece = h.kind == ChunkKind::kPiece;
  dp_.stats->chunks_corrupt++;
  unsigned copies;
  {
    MutexLock lock(&in.f->mu);
    if (in.assembly) {  // the piece may come again
      in.assembly->pieces[(h.offset - h.index * uint64_t(opts_.chunk_size)) / proto::kPieceSize] =
          Assembly::kMissing;
    }
    copies = ++in.f->retries[h.index];
  }
  const bool give_up = copies > opts_.max_chunk_retries;
  PORO_LOG(WARNING) << (piece ? "piece at offset " + std::to_string(h.offset) + " of chunk " : "chunk ")
                    << h.index << " of " << Display(in.f->final_rel) << " failed verification on stream "
                    << in.channel << ": " << why.message() << " ("
                    << (give_up ? "giving up" : "asking for it again") << ")";
  if (give_up) {
    // A bad path, not a bad file: the file fails for this attempt only, keeping what was verified,
    // and the transfer is tried again (TransferManager).
    FailFile(in.f, Status::DataLoss("chunk " + std::to_string(h.index) + " failed verification " +
                                    std::to_string(copies) + " times")
                       .WithRetryable(true));
    return Status::OK();
  }
  proto::BadChunk bad{h.file_id, h.index, h.offset, h.length, in.channel, 0};
  // From its second corrupt copy on, a whole chunk comes again in pieces if a buffer can be spared to
  // gather them: a corrupting path then costs a piece, not the chunk, per flipped bit.
  if (!piece && copies >= 2 && StartAssembly(in.f, h.index, h.length)) bad.flags = proto::kBadChunkPieces;
  return dp_.ctl->Send(MsgType::kBadChunk, proto::EncodeBadChunk(bad));
}

Status Receiver::ZeroRange(const std::shared_ptr<RxFile>& f, uint64_t offset, uint32_t len) {
  WriterMutexLock io(&f->io_mu);
  MutexLock lock(&f->mu);
  if (f->terminal || f->failed) return Status::OK();
  if (!f->fd.valid()) PORO_RETURN_IF_ERROR(OpenPart(*f));
  if (::fallocate(f->fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(len)) == 0) {
    return Status::OK();
  }
  std::vector<std::byte> zeros(len);
  // A plain write of zeros (no O_DIRECT alignment issue: chunk offsets and sizes are 4 KiB multiples
  // except at the end of the file, which is written to its full, padded length when direct).
  uint32_t n = f->direct ? io::RoundUpToDirectAlign(len) : len;
  if (n != len) zeros.resize(n);
  return io::PwriteFull(f->fd.get(), offset, zeros, PartDisplay(*f));
}

void Receiver::ChannelMain(size_t i) {
  Status s = ChannelLoop(i);
  if (!s.ok()) {
    if (s.code() == Code::kUnavailable)
      s = Status::Unavailable("data channel " + std::to_string(i) + ": " + std::string(s.message()));
    // A frame or chunk header that does not decode: a damaged path does that too (a flipped bit in
    // a length or an offset), so the session is worth trying again, within the retry budget.
    if (s.code() == Code::kProtocol) s.Annotate("data channel " + std::to_string(i)).WithRetryable(true);
    Fail(s.WithSide(Side::kNetwork));
  }
}

Status Receiver::JournalFile(RxFile& f) {
  std::vector<std::pair<uint64_t, Digest128>> recs;
  for (uint64_t i = 0; i < f.chunks; ++i) {
    if (f.state[i] == ChunkState::kWritten) recs.emplace_back(i, f.digests[i]);
  }
  if (recs.empty() || !f.fd.valid()) return Status::OK();
  std::string part_display = PartDisplay(f);
  if (::fdatasync(f.fd.get()) != 0) return Status::IoError("fdatasync " + part_display, errno);
  PORO_ASSIGN_OR_RETURN(auto dir, dircache_.Get(f.dir_rel));
  std::string jname = JournalName(f.name);
  std::string jdisplay = Display(ExportRoot::Join(f.dir_rel, jname));
  JournalHeader jh{f.entry.size, f.entry.mtime_ns, opts_.chunk_size};
  Result<Journal> j = f.journaled ? Journal::OpenAppend(dir->fd.get(), jname, jdisplay, f.journal_records)
                                  : Journal::Create(dir->fd.get(), jname, jdisplay, jh);
  if (!j.has_value()) return j.error();
  PORO_RETURN_IF_ERROR(j->Append(recs));
  f.journaled = true;
  f.journal_records += recs.size();
  for (const auto& r : recs) f.state[r.first] = ChunkState::kDurable;
  f.unjournaled_bytes = 0;
  return Status::OK();
}

void Receiver::ClosePart(RxFile& f) {
  if (!f.fd.valid()) return;
  f.Close();
  ReleaseOpenSlot();
}

void Receiver::FinishFile(RxFile& f, const Status& s) {
  f.terminal = true;
  f.assemblies.clear();
  ClosePart(f);
  MutexLock lock(&mu_);
  // Forgotten once finished (the holders of its shared_ptr keep it alive until they are done), so
  // a session's memory follows the files in flight, not the files in the tree.
  files_.erase(f.entry.id);
  terminal_++;
  if (s.ok()) {
    files_committed_++;
    bytes_committed_ += f.entry.size;
    dp_.stats->files_done++;
    dp_.stats->bytes_done += f.entry.size;
    dp_.stats->AddFileResult({f.entry.path, f.entry.size, f.end.digest.ToHex(), "succeeded", ""});
  } else {
    PORO_LOG(WARNING) << "file " << Display(f.final_rel) << " failed: " << s.ToString();
    dp_.stats->files_failed++;
    if (s.retryable()) dp_.stats->files_failed_retryable++;
    dp_.stats->AddFailure(Display(f.final_rel), std::string(s.message()));
    dp_.stats->AddFileResult({f.entry.path, f.entry.size, "", "failed", dp_.PeerMessage(s), s.retryable()});
  }
  dones_.push_back(proto::FileDone{f.entry.id, s.code(), dp_.PeerMessage(s), s.retryable()});
  NotifyIfAllDone();
}

Status Receiver::CommitBatch(std::vector<std::shared_ptr<RxFile>>& batch) {
  // 1. Verify and make durable: file digest over the chunk digests, fix size and metadata, fsync.
  struct Ready {
    RxFile* f;
    std::shared_ptr<const DirCache::Dir> dir;
  };
  std::vector<Ready> ready;
  for (auto& fp : batch) {
    RxFile& f = *fp;
    WriterMutexLock io(&f.io_mu);
    MutexLock lock(&f.mu);
    auto cleanup = [&](const Status& s) PORO_REQUIRES(f.io_mu, f.mu) {
      auto dir = dircache_.Get(f.dir_rel);
      // A retryable failure (the session lost, a chunk that kept arriving corrupt) keeps the part
      // file and its journal: the next attempt resumes from the verified chunks.
      if (dir.has_value() && !s.retryable()) {
        ::unlinkat((*dir)->fd.get(), PartName(f.name).c_str(), 0);
        ::unlinkat((*dir)->fd.get(), JournalName(f.name).c_str(), 0);
      }
      FinishFile(f, s);
    };
    if (f.failed && !f.error.ok()) {
      cleanup(f.error);
      continue;
    }
    if (f.failed || f.end.code != Code::kOk) {
      cleanup(Status(f.end.code == Code::kOk ? Code::kInternal : f.end.code,
                     f.end.message.empty() ? "sender could not read the file" : f.end.message));
      continue;
    }
    FileDigester dg;
    for (const auto& d : f.digests) dg.AddChunk(d);
    if (!(dg.Finish() == f.end.digest)) {
      cleanup(Status::DataLoss("file digest mismatch for " + Display(f.final_rel)));
      continue;
    }
    if (!f.fd.valid()) {  // empty file, or every chunk came from the journal
      Status s = OpenPart(f);
      if (!s.ok()) {
        cleanup(s);
        continue;
      }
    }
    int fd = f.fd.get();
    std::string part_display = PartDisplay(f);
    Status s;
    if ((f.direct || !f.sized) && ::ftruncate(fd, static_cast<off_t>(f.entry.size)) != 0) {
      s = Status::IoError("truncate " + part_display, errno);
    }
    if (s.ok() && ::fchmod(fd, f.entry.mode & 07777) != 0)
      s = Status::IoError("chmod " + part_display, errno);
    struct timespec ts[2] = {{0, UTIME_OMIT}, MtimeSpec(f.entry.mtime_ns)};
    if (s.ok() && ::futimens(fd, ts) != 0) s = Status::IoError("set mtime " + part_display, errno);
    auto dir = dircache_.Get(f.dir_rel);
    if (s.ok() && !dir.has_value()) s = dir.error();
    if (!s.ok()) {
      cleanup(s);
      continue;
    }
    ready.push_back(Ready{&f, std::move(*dir)});
  }
  // Durable before visible: one syncfs for a batch of files (one journal commit instead of one per
  // file), fdatasync for a lone file.
  if (ready.size() >= 8) {
    std::map<dev_t, const Ready*> devices;  // a batch may span mounts inside the export root
    for (const auto& r : ready) devices.emplace(r.dir->dev, &r);
    for (const auto& [dev, r] : devices) {
      ReaderMutexLock io(&r->f->io_mu);
      if (::syncfs(r->f->fd.get()) != 0) return Status::IoError("syncfs " + Display(r->f->dir_rel), errno);
    }
  } else {
    for (auto it = ready.begin(); it != ready.end();) {
      RxFile& f = *it->f;
      WriterMutexLock io(&f.io_mu);
      MutexLock lock(&f.mu);
      if (::fdatasync(f.fd.get()) != 0) {
        Status s = Status::IoError("fdatasync " + PartDisplay(f), errno);
        ::unlinkat(it->dir->fd.get(), PartName(f.name).c_str(), 0);
        FinishFile(f, s);
        it = ready.erase(it);
        continue;
      }
      ++it;
    }
  }
  // 2. Rename into place; 3. fsync each directory once.
  std::map<std::string, std::shared_ptr<const DirCache::Dir>> dirs;
  for (auto& r : ready) {
    RxFile& f = *r.f;
    WriterMutexLock io(&f.io_mu);
    MutexLock lock(&f.mu);
    std::string part = PartName(f.name);
    unsigned flags = (opts_.existing == ExistingMode::kOverwrite || opts_.sync) ? 0 : RENAME_NOREPLACE;
    Status s;
    const int dfd = r.dir->fd.get();
    if (::renameat2(dfd, part.c_str(), dfd, f.name.c_str(), flags) != 0) {
      int err = errno;
      s = err == EEXIST
              ? Status::AlreadyExists("destination appeared during the transfer: " + Display(f.final_rel))
              : Status::IoError("rename into place " + Display(f.final_rel), err);
      ::unlinkat(dfd, part.c_str(), 0);
    }
    if (f.journaled) ::unlinkat(dfd, JournalName(f.name).c_str(), 0);
    dirs.emplace(f.dir_rel, r.dir);
    ClosePart(f);
    r.f = nullptr;
    FinishFile(f, s);
  }
  for (const auto& [d, dir] : dirs) {
    int dfd = dir->fd.get();
    UniqueFd opened;
    if (!dir->readable) {  // an O_PATH descriptor cannot be fsync'ed
      auto o = root_.Open(d, O_RDONLY | O_DIRECTORY);
      if (!o.has_value()) return o.error();
      opened = std::move(*o);
      dfd = opened.get();
    }
    if (::fsync(dfd) != 0) return Status::IoError("fsync directory " + Display(d), errno);
  }
  return Status::OK();
}

void Receiver::CommitterMain() {
  auto last_journal = std::chrono::steady_clock::now();
  while (true) {
    std::vector<std::shared_ptr<RxFile>> batch;
    bool stop;
    {
      MutexLock lock(&mu_);
      commit_cv_.WaitFor(&mu_, std::chrono::milliseconds(50),
                         [&]() PORO_REQUIRES(mu_) { return !commit_q_.empty() || stop_committer_; });
      if (!commit_q_.empty() && commit_q_.size() < commit_batch_ && slot_waiters_ == 0 && !stop_committer_) {
        // Let a batch gather: many small files then share one syncfs, one FILE_DONE and one fsync
        // per directory.
        commit_cv_.WaitFor(&mu_, kCommitDelay, [&]() PORO_REQUIRES(mu_) {
          return commit_q_.size() >= commit_batch_ || slot_waiters_ > 0 || stop_committer_ || !error_.ok();
        });
      }
      while (!commit_q_.empty() && batch.size() < 512) {
        batch.push_back(std::move(commit_q_.front()));
        commit_q_.pop_front();
      }
      stop = stop_committer_ && commit_q_.empty() && batch.empty();
    }
    if (!batch.empty()) {
      Status s = CommitBatch(batch);
      if (!s.ok()) {
        Fail(s.WithSide(Side::kDestination));
        return;
      }
    }
    // Journal partially received multi-chunk files now and then, so a crash loses little.
    auto now = std::chrono::steady_clock::now();
    if (now - last_journal >= opts_.journal_interval) {
      last_journal = now;
      std::vector<std::shared_ptr<RxFile>> open;
      {
        MutexLock lock(&mu_);
        for (auto& [id, f] : files_) open.push_back(f);
      }
      for (auto& f : open) {
        // Try only: the committer frees open slots and must not wait behind a file held exclusively
        // (being opened, or zeroed by ZeroRange); the next pass journals it.
        if (!f->io_mu.ReaderTryLock()) continue;
        {
          MutexLock lock(&f->mu);
          if (!(f->terminal || f->failed || f->chunks < 2 || f->unjournaled_bytes == 0 || f->missing == 0)) {
            Status s = JournalFile(*f);
            if (!s.ok()) PORO_LOG(WARNING) << "journal: " << s.ToString();
          }
        }
        f->io_mu.ReaderUnlock();
      }
    }
    std::vector<proto::FileDone> dones;
    {
      MutexLock lock(&mu_);
      dones.swap(dones_);
    }
    if (!dones.empty()) {
      Status s = dp_.ctl->Send(MsgType::kFileDone, proto::EncodeFileDones(dones));
      if (!s.ok()) {
        Fail(s);
        return;
      }
    }
    if (stop) return;
  }
}

void Receiver::MakeHardLinks(std::vector<std::pair<std::string, std::string>>* failures) {
  for (const FileEntry& e : hardlinks_) {
    const std::string rel = ExportRoot::Join(target_, e.path);
    const std::string target = ExportRoot::Join(target_, e.link_target);
    auto fail = [&](const Status& s) {
      PORO_LOG(WARNING) << "hard link " << Display(rel) << " not made: " << s.message();
      dp_.stats->files_failed++;
      dp_.stats->AddFailure(Display(rel), std::string(s.message()));
      dp_.stats->AddFileResult({e.path, e.size, "", "failed", dp_.PeerMessage(s)});
      if (failures->size() < 100) failures->emplace_back(e.path, dp_.PeerMessage(s));
    };
    auto tdir = dircache_.Parent(target);
    auto ldir = dircache_.Parent(rel);
    if (!tdir.has_value() || !ldir.has_value()) {
      fail(tdir.has_value() ? ldir.error() : tdir.error());
      continue;
    }
    const int tfd = tdir->first->fd.get(), lfd = ldir->first->fd.get();
    const std::string& tname = tdir->second;
    const std::string& lname = ldir->second;
    // The target must be the file this transfer put there (or found identical): same size and mtime.
    struct stat ts {};
    if (::fstatat(tfd, tname.c_str(), &ts, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(ts.st_mode) ||
        static_cast<uint64_t>(ts.st_size) != e.size ||
        int64_t(ts.st_mtim.tv_sec) * 1000000000 + ts.st_mtim.tv_nsec != e.mtime_ns) {
      fail(Status::NotFound("not linked: its target " + Display(target) + " was not transferred"));
      continue;
    }
    struct stat ls {};
    if (::fstatat(lfd, lname.c_str(), &ls, AT_SYMLINK_NOFOLLOW) == 0) {
      if (ls.st_dev == ts.st_dev && ls.st_ino == ts.st_ino) continue;  // linked already (a resumed transfer)
      if (opts_.existing == ExistingMode::kSkip) {
        dp_.stats->files_skipped++;
        continue;
      }
      if (opts_.existing == ExistingMode::kFail && !opts_.sync) {
        fail(Status::AlreadyExists("destination exists: " + Display(rel) +
                                   " (use --overwrite, --skip-existing or --sync)"));
        continue;
      }
      if (S_ISDIR(ls.st_mode)) {
        fail(Status::AlreadyExists("destination exists and is a directory: " + Display(rel)));
        continue;
      }
      // Replaced atomically: linked under a hidden name, then renamed over the old one.
      const std::string tmp = PartName(lname) + ".lnk";
      ::unlinkat(lfd, tmp.c_str(), 0);
      if (::linkat(tfd, tname.c_str(), lfd, tmp.c_str(), 0) != 0 ||
          ::renameat(lfd, tmp.c_str(), lfd, lname.c_str()) != 0) {
        const int err = errno;
        ::unlinkat(lfd, tmp.c_str(), 0);
        fail(Status::IoError("link " + Display(rel), err));
      }
      continue;
    }
    if (::linkat(tfd, tname.c_str(), lfd, lname.c_str(), 0) != 0)
      fail(Status::IoError("link " + Display(rel), errno));
  }
}

Status Receiver::ApplyDirMetadata() {
  // Deepest first, so setting a parent's mtime is not undone by work in a child.
  std::sort(dirs_.begin(), dirs_.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path > b.path; });
  for (const auto& e : dirs_) {
    std::string rel = ExportRoot::Join(target_, e.path);
    auto fd = root_.Open(rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!fd.has_value()) return fd.error();
    if (::fchmod(fd->get(), e.mode & 07777) != 0) return Status::IoError("chmod " + Display(rel), errno);
    struct timespec ts[2] = {{0, UTIME_OMIT}, MtimeSpec(e.mtime_ns)};
    if (::futimens(fd->get(), ts) != 0) return Status::IoError("set mtime " + Display(rel), errno);
  }
  return Status::OK();
}

void Receiver::CtlReaderLoop() {
  while (true) {
    auto fr = dp_.ctl->ReceiveLive(dp_.idle_timeout);
    Status rs;
    {  // (the decoders below never throw: no try/catch needed)
      if (!fr.has_value()) {
        {
          MutexLock lock(&mu_);
          if (summary_sent_) return;  // the session is over: the peer closed, or Run() shut it down
        }
        rs = fr.error();
        if (rs.code() == Code::kUnavailable) {
          rs = Status::Unavailable("control connection lost: " + std::string(rs.message()));
        }
      } else {
        switch (fr->type) {
          case MsgType::kFiles:
            rs = HandleFiles(*fr);
            break;
          case MsgType::kFileEnd:
            rs = HandleFileEnd(*fr);
            break;
          case MsgType::kEnd: {
            auto end = proto::DecodeEnd(fr->body);  // its count is not checked, its form is
            if (!end.has_value()) {
              rs = end.error();
              break;
            }
            // The sender's special files, not sent: named in this end's record too (a pull's).
            for (const auto& sf : end->special_names) dp_.stats->AddSpecial(sf.path, sf.kind);
            if (end->specials > end->special_names.size())
              dp_.stats->specials_skipped += end->specials - end->special_names.size();
            MutexLock lock(&mu_);
            if (end_received_) {
              rs = Status::Protocol("END repeated");
              break;
            }
            end_received_ = true;
            dp_.stats->walk_done = true;
            NotifyIfAllDone();
            // Keep reading: an error FILE_END may still come (a chunk asked for again that the
            // sender could no longer read), and so may ERROR or CANCEL.
            break;
          }
          case MsgType::kError:
            rs = proto::StatusFromErrorBody(fr->body);
            break;
          case MsgType::kCancel:
            rs = proto::StatusFromCancelBody(fr->body);
            break;
          case MsgType::kKeepalive:
            rs = proto::DecodeKeepalive(fr->body).status();
            break;
          default:
            rs = Status::Protocol("unexpected control message " + std::to_string(int(fr->type)) +
                                  " at the receiver");
        }
      }
    }
    if (!rs.ok()) {
      Fail(rs);
      return;
    }
  }
}

Result<nlohmann::json> Receiver::Run() {
  size_t n = dp_.channels->size();
  if (dp_.protection != Protection::kClear) {
    PORO_ASSIGN_OR_RETURN(seals_, ChannelSeal::ForChannels(dp_.protection, dp_.seal_key, n));
  }
  dp_.ctl->set_write_timeout(dp_.idle_timeout);
  KeepaliveTicker keepalive(dp_.ctl, dp_.idle_timeout / 4, &dp_.stats->bytes_verified);
  std::thread committer([this] { CommitterMain(); });
  std::vector<std::thread> chans;
  for (size_t i = 0; i < n; ++i) chans.emplace_back([this, i] { ChannelMain(i); });

  // The control loop runs on this thread; frames are read by a helper thread so that errors from
  // the channels can interrupt a blocking read (by shutting the stream down).
  Status s;
  std::thread ctl_reader([&] {
    CtlReaderLoop();
    {
      MutexLock lock(&mu_);
      ctl_done_ = true;
    }
    done_cv_.NotifyAll();
  });

  {
    MutexLock lock(&mu_);
    while (error_.ok() && !Cancelled() && !(end_received_ && terminal_ == entries_)) {
      done_cv_.WaitFor(&mu_, std::chrono::milliseconds(200));
    }
    if (Cancelled() && error_.ok()) error_ = dp_.CancelStatus();
    s = error_;
    stop_committer_ = true;
    commit_cv_.NotifyAll();
    slot_cv_.NotifyAll();  // a channel thread waiting for an open slot sees the error at once
  }
  committer.join();
  {
    MutexLock lock(&mu_);
    if (s.ok()) s = error_;
  }
  proto::Summary summary;
  std::vector<std::pair<std::string, std::string>> link_failures;
  if (s.ok()) MakeHardLinks(&link_failures);
  if (s.ok()) s = ApplyDirMetadata();
  if (s.ok()) {
    auto st = dp_.stats->Snapshot();
    MutexLock lock(&mu_);
    summary = proto::Summary{files_committed_, bytes_committed_,  st.files_skipped, st.bytes_skipped,
                             st.files_failed,  st.chunks_corrupt, st.bytes_resumed, std::move(link_failures)};
    summary_sent_ = true;
    lock.Unlock();
    // The final count first, so that the sender's progress ends exact (the ticker's last one may be
    // up to half a second old).
    s = dp_.ctl->Send(MsgType::kKeepalive, proto::EncodeKeepalive({dp_.stats->bytes_verified.load()}));
    if (s.ok()) s = dp_.ctl->Send(MsgType::kSummary, proto::EncodeSummary(summary));
  }
  if (!s.ok()) {
    if (s.code() != Code::kUnavailable) {
      dp_.ctl->SendError(s);
      // As in the sender: the data connections stay open until the peer has read why (it answers
      // or closes the control connection), so both ends record the same reason.
      MutexLock lock(&mu_);
      done_cv_.WaitFor(&mu_, kPeerReadsError, [&]() PORO_REQUIRES(mu_) { return ctl_done_; });
    }
    dp_.ctl->Shutdown();
    for (auto& ch : *dp_.channels) ch->Shutdown();
  }
  for (auto& t : chans) t.join();
  // Every channel has ended (EOS comes after the sender has read SUMMARY), so nothing is left to
  // read on the control connection: stop the reader rather than wait for the peer to close.
  if (s.ok()) dp_.ctl->Shutdown();
  ctl_reader.join();
  {
    MutexLock lock(&mu_);
    if (s.ok() && !error_.ok()) s = error_;
  }
  // Partial files stay (with their journals) so the same command resumes; nothing is left under a
  // final name unless it was verified and committed.
  if (!s.ok()) return s;
  return proto::SummaryToJson(summary);
}

}  // namespace

Result<SourceInfo> StatSource(const ExportRoot& root, const std::string& rel) {
  PORO_ASSIGN_OR_RETURN(struct stat st, root.Lstat(rel));
  SourceInfo info;
  info.name = ExportRoot::Split(rel).second;
  info.rel = rel;
  if (S_ISLNK(st.st_mode)) {
    PORO_ASSIGN_OR_RETURN(info.rel, root.ResolveLink(rel));
    PORO_ASSIGN_OR_RETURN(st, root.Lstat(info.rel));
  }
  if (S_ISDIR(st.st_mode)) {
    info.is_dir = true;
  } else if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument("source is not a regular file or directory: " + root.Display(info.rel));
  }
  // Readable? Fail early with a clear error rather than after the session is set up.
  PORO_ASSIGN_OR_RETURN(UniqueFd fd,
                        root.Open(info.rel, O_RDONLY | O_NOFOLLOW | (info.is_dir ? O_DIRECTORY : 0)));
  return info;
}

Result<std::string> ResolveTarget(const ExportRoot& root, const std::string& dst_rel, bool dst_trailing_slash,
                                  const SourceInfo& src) {
  auto st = root.Lstat(dst_rel);
  if (st.has_value() && S_ISDIR(st->st_mode)) {
    if (src.name.empty()) return dst_rel;
    return ExportRoot::Join(dst_rel, src.name);
  }
  if (dst_trailing_slash) {
    return Status::NotFound("destination directory does not exist: " + root.Display(dst_rel));
  }
  if (dst_rel.empty()) return Status::InvalidArgument("destination is the export root");
  if (st.has_value() && src.is_dir) {
    return Status::AlreadyExists("destination exists and is not a directory: " + root.Display(dst_rel));
  }
  if (!st.has_value() && st.error().code() != Code::kNotFound) return st.error();
  const std::string parent = ExportRoot::Split(dst_rel).first;
  auto pst = root.Lstat(parent);
  if (!pst.has_value() || !S_ISDIR(pst->st_mode)) {
    return Status::NotFound("destination directory does not exist: " + root.Display(parent));
  }
  return dst_rel;
}

Result<nlohmann::json> RunReceiver(const ExportRoot& root, const std::string& target_rel,
                                   const EngineOptions& opts, const DataPath& dp) {
  Receiver r(root, target_rel, opts, dp);
  return r.Run();
}

}  // namespace pororoca::engine
