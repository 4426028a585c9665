// Sending side of a session: walk, announce (FILES), read + hash (IoQueue), schedule chunks onto
// the least-loaded data channel, answer BAD_CHUNK with a fresh read, finish when SUMMARY arrives.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <thread>
#include <unordered_map>

#include "base/defer.h"
#include "base/log.h"
#include "base/mutex.h"
#include "engine/channel_seal.h"
#include "engine/session.h"
#include "engine/zero_digest.h"
#include "io/direct_align.h"

namespace pororoca::engine {
namespace {

using proto::ChunkHeader;
using proto::ChunkKind;
using proto::EntryType;
using proto::FileEntry;
using proto::MsgType;
using proto::PlanAction;
using proto::PlanEntry;

struct SrcFile {
  FileEntry entry;
  std::string rel;  // root-relative path to open
  Status denied;    // the policy refused this file (DataPath::admit_path): failed with this when planned
  std::unordered_map<uint64_t, Digest128> have;  // receiver's durable chunks
  uint64_t chunks = 0;
  uint64_t next = 0;       // next chunk index to issue
  uint64_t completed = 0;  // chunks hashed
  uint64_t sent = 0;       // chunk messages queued this session (not counting BAD_CHUNK re-sends)
  std::vector<Digest128> digests;
  Digest128 file_digest;         // the FILE_END digest, for the file's result
  std::shared_ptr<UniqueFd> fd;  // shared with queued SendFile items, which keep it open
  bool direct = false;
  bool maybe_sparse = true;  // fewer blocks than bytes: look for holes (SEEK_DATA) before reading
  bool failed = false;
  bool ended = false;    // FILE_END queued
  bool planned = false;  // PLAN arrived for it
  bool done = false;     // FILE_DONE arrived: the receiver has finished with it (nothing more is sent)
  bool queued = false;   // in work_ (under mu_)
  std::atomic<unsigned> inflight{0};           // O_DIRECT reads in reads_ that point here
  std::unordered_map<uint64_t, unsigned> bad;  // BAD_CHUNKs per chunk index (their re-sends back off)
};

// A chunk, or a piece of it, the receiver asked for again (BAD_CHUNK).
struct Resend {
  uint64_t id = 0;
  uint64_t index = 0;
  uint64_t offset = 0;  // the region asked for: the whole chunk, or one piece
  uint32_t length = 0;
  int avoid = -1;       // the stream the bad copy came on
  bool pieces = false;  // send the whole chunk in pieces
  std::chrono::steady_clock::time_point not_before;
};

// One message for a channel: its payload is either in a pool buffer (`buf`) or, on the buffered
// path, still in the source file (`file`, sent with sendfile: no user-space copy).
struct SendItem {
  ChunkHeader header;
  io::Buffer buf;
  bool eos = false;
  std::shared_ptr<UniqueFd> file;
  // A piece: its payload is at shared_off in a buffer the chunk's pieces share.
  std::shared_ptr<io::Buffer> shared;
  size_t shared_off = 0;
  int avoid = -1;  // a re-send: not on this channel, if there is another
};

bool HasPayload(ChunkKind k) { return k == ChunkKind::kData || k == ChunkKind::kPiece; }

class Sender {
 public:
  Sender(const ExportRoot& root, std::string src_rel, const EngineOptions& opts, const DataPath& dp)
      : root_(root), src_rel_(std::move(src_rel)), opts_(opts), dp_(dp), zero_(opts.chunk_size) {}

  Result<nlohmann::json> Run();

 private:
  void WalkerMain();
  Status Walk();
  Status WalkDir(const std::string& rel, const std::string& entry_path);
  Status Emit(FileEntry e, std::string rel, Status denied = Status::OK());
  Status FlushBatch();
  // Runs CtlReaderLoop, then records that the control reader has ended (ctl_done_).
  void CtlReaderMain() PORO_EXCLUDES(mu_);
  void CtlReaderLoop();
  Status HandleControl(const proto::ControlFrame& f) PORO_EXCLUDES(mu_);
  void ChannelMain(size_t i);
  Status ReaderLoop();
  Status IssueReads(std::unique_ptr<io::IoQueue>& q);
  Status Complete(const io::Completion& c);
  // `buf`: a pool buffer to read the chunk into (sealed sessions), or none (clear: hash through a
  // small buffer, the channel sends the chunk with sendfile).
  void HashBuffered(SrcFile& f, uint64_t index, uint64_t offset, uint32_t len, bool resend, io::Buffer buf,
                    int avoid);
  // Sends again, in pieces, what `r` asks for (the whole chunk, or one piece): read into one pool buffer
  // the pieces share. Sets *no_buffer (and sends nothing) if no buffer is free now.
  void SendPieces(SrcFile& f, const Resend& r, bool* no_buffer);
  // Reads [offset, offset + out.size()) of f's source (direct or buffered) into a pool buffer.
  Status ReadSource(SrcFile& f, uint64_t offset, std::span<std::byte> out);
  // The first re-send due now (resend_.end() if none); when the next is due (max() if none).
  std::deque<Resend>::iterator DueResend(std::chrono::steady_clock::time_point now) PORO_REQUIRES(mu_);
  std::chrono::steady_clock::time_point NextResend() const PORO_REQUIRES(mu_);
  // A pool buffer for the reader, leaving SenderReserve() to the daemon's receivers. With reads in
  // flight it does not wait (an invalid Buffer if none is free: the caller completes those reads
  // first, which frees buffers; waiting while holding them could deadlock the daemon's senders on
  // each other); with none, it waits up to 60 s.
  Result<io::Buffer> TakeBuffer();
  // Puts back the chunk the reader had picked (IssueReads could not get a buffer for it).
  void Unpick(SrcFile& f, const std::optional<Resend>& resend) PORO_EXCLUDES(mu_);
  // Records a hashed chunk (or a hole, announced without payload): skip it if the receiver has it,
  // else queue it; ends the file when its last chunk is accounted for. Re-sends only queue.
  void Hashed(SrcFile& f, uint64_t index, uint32_t len, const Digest128& d, bool resend, SendItem item,
              ChunkKind kind = ChunkKind::kData);
  Status OpenSource(SrcFile& f);
  void FailFile(SrcFile& f, const Status& s);
  void Dispatch(SendItem item) PORO_EXCLUDES(mu_, sched_mu_);
  // Sends one chunk message on channel i (pace, header, payload from the buffer or the file). Errors:
  // the session's cancel status when the pace wait was cancelled, else the channel's (annotated).
  Status SendOn(size_t i, SendItem& item);
  // An item still in its source file, read into a pool buffer (item.buf) for Send: for a backend
  // without sendfile. (Above clear the reader already puts every chunk in a pool buffer.)
  Status ReadPayload(SendItem& item);
  Status FlushFileEnds();
  // The receiver has finished with `f` and the reader no longer points at it.
  bool Forgettable(const SrcFile& f) const PORO_REQUIRES(mu_) {
    return f.done && !f.queued && &f != current_ && &f != resending_ && f.inflight.load() == 0;
  }
  // Reader thread: erases the finished entries the reader pointed at until now.
  void ReapFinished() PORO_REQUIRES(mu_);
  // Reader thread: current_ still has chunks to read (or, empty, its FILE_END to send).
  bool CurrentHasWork() const PORO_REQUIRES(mu_) {
    if (current_ == nullptr || current_->done) return false;
    if (current_->chunks == 0) return !current_->ended;
    return !current_->failed && current_->next < current_->chunks;
  }
  void Fail(Status s) PORO_EXCLUDES(mu_, sched_mu_);
  bool Cancelled() const { return dp_.cancel && dp_.cancel->load(); }

  const ExportRoot& root_;
  std::string src_rel_;
  EngineOptions opts_;
  DataPath dp_;
  ZeroDigests zero_;
  // One per data channel above clear (empty at clear); channel i's is used only by whichever thread
  // sends on channel i (its channel thread, or the reader while that thread sleeps: see Dispatch).
  std::vector<ChannelSeal> seals_;
  transport::TransportOptions send_opts_;  // data sends: DataPath::idle_timeout

  // Lock order: sched_mu_, then mu_ (a channel's wait predicate looks at error_).
  Mutex mu_ PORO_ACQUIRED_AFTER(sched_mu_);
  CondVar cv_;
  Status error_ PORO_GUARDED_BY(mu_);  // first fatal error
  bool walk_done_ PORO_GUARDED_BY(mu_) = false;
  unsigned batches_out_ PORO_GUARDED_BY(mu_) = 0;  // FILES batches without PLAN
  // Counts of FileEntry.
  uint64_t entries_sent_ PORO_GUARDED_BY(mu_) = 0, entries_planned_ PORO_GUARDED_BY(mu_) = 0;
  uint64_t entries_finished_ PORO_GUARDED_BY(mu_) = 0;  // planned FAIL/SKIP/DONE, or reported in FILE_DONE
  std::deque<SrcFile*> work_ PORO_GUARDED_BY(mu_);      // planned regular files, in order
  std::deque<Resend> resend_ PORO_GUARDED_BY(mu_);
  // The entries announced and not yet forgotten: an entry is erased once finished (PLAN FAIL/SKIP/
  // DONE, or FILE_DONE once the reader no longer points at it), so the sender holds about
  // announce_ahead entries whatever the size of the tree.
  std::map<uint64_t, std::unique_ptr<SrcFile>> files_ PORO_GUARDED_BY(mu_);
  std::vector<uint64_t> finished_ PORO_GUARDED_BY(mu_);  // FILE_DONE arrived while the reader pointed at them
  size_t files_peak_ PORO_GUARDED_BY(mu_) = 0;           // most entries held at once (logged at the end)
  bool end_sent_ PORO_GUARDED_BY(mu_) = false;
  bool summary_ PORO_GUARDED_BY(mu_) = false;
  bool ctl_done_ PORO_GUARDED_BY(mu_) = false;  // the control reader has ended
  nlohmann::json summary_json_ PORO_GUARDED_BY(mu_);

  // Walker batch (walker thread only). The first batch is small, so that the receiver can plan and
  // data can flow while the walk goes on; each next one is twice the last, up to files_per_batch.
  std::vector<FileEntry> batch_;
  size_t batch_limit_ = std::min<size_t>(64, opts_.files_per_batch);
  // --hard-links: the first path in the transfer of each inode with several names (walker thread).
  std::map<std::pair<dev_t, ino_t>, std::string> inodes_;
  uint64_t next_id_ = 1;

  // Reader (reader thread only).
  struct ReadOp {
    SrcFile* file;
    uint64_t index;
    uint32_t len;
    io::Buffer buf;
    bool resend;
    int avoid;
  };
  std::unordered_map<uint64_t, ReadOp> reads_;
  uint64_t next_tag_ = 1;
  SrcFile* current_ PORO_GUARDED_BY(mu_) = nullptr;
  SrcFile* resending_ PORO_GUARDED_BY(mu_) = nullptr;  // the file of the re-send being read
  std::vector<proto::FileEnd> ends_;
  std::vector<std::byte> hash_buf_;  // buffered path: cache-resident piece of the chunk being hashed
  Hasher128 hasher_;

  // Scheduler.
  // Each channel thread sleeps on its own queue's condition variable, and is woken only when an
  // item arrives while it waits: a small file costs at most one wake-up, not one per channel.
  // The fields are guarded by Sender::sched_mu_ (the analysis cannot name it from here).
  struct ChannelQueue {
    std::deque<SendItem> items;
    uint64_t queued_bytes = 0;
    CondVar cv;
    bool waiting = false;
  };
  static constexpr size_t kMaxQueuedPerChannel = 4;
  static constexpr uint32_t kInlineBytes = 256u << 10;        // Dispatch sends items up to this size itself
  static constexpr std::chrono::microseconds kNearRtt{1000};  // ... when every channel's RTT is below this
  bool send_inline_ = false;
  size_t rr_ = 0;   // Dispatch (one thread): where the search for the least-loaded channel starts
  Mutex sched_mu_;  // guards queues_ and their contents, queued_items_
  CondVar sched_space_cv_;
  size_t queued_items_ PORO_GUARDED_BY(sched_mu_) = 0;
  std::vector<std::unique_ptr<ChannelQueue>> queues_ PORO_GUARDED_BY(sched_mu_);
};

void Sender::Fail(Status s) {
  {
    MutexLock lock(&mu_);
    if (error_.ok()) error_ = std::move(s);
  }
  cv_.NotifyAll();
  MutexLock lock(&sched_mu_);
  for (auto& q : queues_) q->cv.NotifyAll();
  sched_space_cv_.NotifyAll();
}

Status Sender::Emit(FileEntry e, std::string rel, Status denied) {
  e.id = next_id_++;
  auto f = std::make_unique<SrcFile>();
  f->entry = e;
  f->rel = std::move(rel);
  f->denied = std::move(denied);
  if (e.type == EntryType::kFile) {
    dp_.stats->files_total++;
    dp_.stats->bytes_total += e.size;
  }
  {
    MutexLock lock(&mu_);
    files_[e.id] = std::move(f);
    files_peak_ = std::max(files_peak_, files_.size());
  }
  batch_.push_back(std::move(e));
  if (batch_.size() >= batch_limit_) return FlushBatch();
  return Status::OK();
}

Status Sender::FlushBatch() {
  if (batch_.empty()) return Status::OK();
  {
    MutexLock lock(&mu_);
    // The walk stays at most announce_ahead entries ahead of the files that are finished, so the
    // per-file state at both ends is bounded by that, not by the size of the tree.
    const uint64_t window = std::max<uint64_t>(opts_.announce_ahead, batch_.size());
    cv_.Wait(&mu_, [&]() PORO_REQUIRES(mu_) {
      return (batches_out_ < opts_.batches_in_flight &&
              entries_sent_ - entries_finished_ + batch_.size() <= window) ||
             !error_.ok() || Cancelled();
    });
    if (!error_.ok()) return error_;
    if (Cancelled()) return dp_.CancelStatus();
    batches_out_++;
    entries_sent_ += batch_.size();
  }
  Status s = dp_.ctl->Send(MsgType::kFiles, proto::EncodeFiles(batch_));
  batch_.clear();
  batch_limit_ = std::min(batch_limit_ * 2, opts_.files_per_batch);
  return s;
}

FileEntry EntryFromStat(const struct stat& st, EntryType type, std::string path) {
  FileEntry e;
  e.type = type;
  e.path = std::move(path);
  e.size = type == EntryType::kFile ? static_cast<uint64_t>(st.st_size) : 0;
  e.mode = st.st_mode & 07777;
  e.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return e;
}

Status Sender::WalkDir(const std::string& rel, const std::string& entry_path) {
  PORO_ASSIGN_OR_RETURN(UniqueFd dfd, root_.Open(rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  DIR* d = ::fdopendir(dfd.get());
  if (d == nullptr) return Status::IoError("opendir " + root_.Display(rel), errno);
  dfd.Release();
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* de = ::readdir(d)) {
    std::string_view n(de->d_name);
    if (n == "." || n == "..") continue;
    names.emplace_back(n);
  }
  int err = errno;
  int fd = ::dirfd(d);
  if (err != 0) {
    ::closedir(d);
    return Status::IoError("readdir " + root_.Display(rel), err);
  }
  std::sort(names.begin(), names.end());
  std::vector<std::pair<std::string, std::string>> subdirs;
  Status result;
  for (const std::string& name : names) {
    if (Cancelled()) break;
    struct stat st {};
    std::string child_rel = ExportRoot::Join(rel, name);
    std::string child_path = ExportRoot::Join(entry_path, name);
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      // Vanished since readdir: not an error of the transfer.
      if (errno == ENOENT) continue;
      result = Status::IoError("stat " + root_.Display(child_rel), errno);
      break;
    }
    // The policy's verdict on this path (DataPath::admit_path). A denied file is announced and then
    // failed with the verdict, so the receiver counts and reports it with that message; a denied
    // directory is still created (empty, so that the files below it can be failed by name) and
    // walked, so that each file below it is failed the same way. No denied byte is sent.
    Status admitted = dp_.admit_path ? dp_.admit_path(child_rel, child_path) : Status::OK();
    if (S_ISDIR(st.st_mode)) {
      subdirs.emplace_back(child_rel, child_path);
      result = Emit(EntryFromStat(st, EntryType::kDir, child_path), child_rel);
    } else if (S_ISREG(st.st_mode) && opts_.hard_links && st.st_nlink > 1 && admitted.ok() &&
               !inodes_.emplace(std::make_pair(st.st_dev, st.st_ino), child_path).second) {
      // Another name of a file already announced: sent as a link to it, no data.
      FileEntry e = EntryFromStat(st, EntryType::kHardLink, child_path);
      e.size = static_cast<uint64_t>(st.st_size);
      e.link_target = inodes_[{st.st_dev, st.st_ino}];
      result = Emit(std::move(e), child_rel);
    } else if (S_ISREG(st.st_mode)) {
      result = Emit(EntryFromStat(st, EntryType::kFile, child_path), child_rel, std::move(admitted));
    } else if (!admitted.ok()) {
      dp_.stats->files_failed++;
      dp_.stats->AddFailure(root_.Display(child_rel), std::string(admitted.message()));
      dp_.stats->AddFileResult({child_path, 0, "", "failed", std::string(admitted.message())});
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(fd, name.c_str(), target.data(), target.size());
      if (n < 0) {
        result = Status::IoError("readlink " + root_.Display(child_rel), errno);
        break;
      }
      target.resize(static_cast<size_t>(n));
      FileEntry e = EntryFromStat(st, EntryType::kSymlink, child_path);
      e.link_target = std::move(target);
      result = Emit(std::move(e), child_rel);
    } else {
      // Not copied (cp -r recreates a FIFO, a data mover does not), but named: both ends' records
      // list it (END carries the names to a receiving initiator) and the CLI's summary says so.
      const char* kind = S_ISFIFO(st.st_mode)   ? "FIFO"
                         : S_ISSOCK(st.st_mode) ? "socket"
                         : S_ISCHR(st.st_mode)  ? "character device"
                         : S_ISBLK(st.st_mode)  ? "block device"
                                                : "special file";
      PORO_LOG(INFO) << "not sending " << kind << " " << root_.Display(child_rel);
      dp_.stats->AddSpecial(child_path, kind);
    }
    if (!result.ok()) break;
  }
  ::closedir(d);
  PORO_RETURN_IF_ERROR(result);
  for (const auto& [r, p] : subdirs) PORO_RETURN_IF_ERROR(WalkDir(r, p));
  return Status::OK();
}

Status Sender::Walk() {
  PORO_ASSIGN_OR_RETURN(struct stat st, root_.Lstat(src_rel_));
  if (S_ISREG(st.st_mode)) {
    PORO_RETURN_IF_ERROR(Emit(EntryFromStat(st, EntryType::kFile, ""), src_rel_));
  } else if (S_ISDIR(st.st_mode)) {
    PORO_RETURN_IF_ERROR(Emit(EntryFromStat(st, EntryType::kDir, ""), src_rel_));
    PORO_RETURN_IF_ERROR(WalkDir(src_rel_, ""));
  } else if (S_ISLNK(st.st_mode)) {
    return Status::InvalidArgument("source is a symbolic link: " + root_.Display(src_rel_));
  } else {
    return Status::InvalidArgument("source is not a regular file or directory: " + root_.Display(src_rel_));
  }
  return FlushBatch();
}

void Sender::WalkerMain() {
  Status s = Walk();
  dp_.stats->walk_done = true;
  if (!s.ok()) {
    s.WithSide(Side::kSource);
    Fail(s);
    return;
  }
  MutexLock lock(&mu_);
  walk_done_ = true;
  cv_.NotifyAll();
}

Status Sender::HandleControl(const proto::ControlFrame& f) {
  switch (f.type) {
    case MsgType::kPlan: {
      PORO_ASSIGN_OR_RETURN(auto plan, proto::DecodePlan(f.body));
      MutexLock lock(&mu_);
      if (batches_out_ == 0) return Status::Protocol("PLAN without an outstanding FILES batch");
      batches_out_--;
      for (auto& p : plan) {
        auto it = files_.find(p.id);
        if (it == files_.end() || it->second->planned ||
            p.id > entries_sent_) {  // ids 1..entries_sent_ were announced
          return Status::Protocol("PLAN names unknown or already planned file id " + std::to_string(p.id));
        }
        SrcFile& sf = *it->second;
        sf.planned = true;
        entries_planned_++;
        const FileEntry& e = sf.entry;
        bool forget = true;  // finished by the plan itself: nothing will point at it
        switch (p.action) {
          case PlanAction::kFail:
            entries_finished_++;
            dp_.stats->files_failed++;
            dp_.stats->AddFailure(e.path.empty() ? root_.Display(sf.rel) : e.path, p.message);
            if (e.type != EntryType::kDir)
              dp_.stats->AddFileResult({e.path, e.size, "", "failed", p.message});
            break;
          case PlanAction::kSkip:
            entries_finished_++;
            if (e.type == EntryType::kFile) {
              dp_.stats->files_skipped++;
              dp_.stats->bytes_skipped += e.size;
              dp_.stats->files_done++;
              dp_.stats->bytes_done += e.size;
              dp_.stats->AddFileResult({e.path, e.size, "", "skipped", ""});
            }
            break;
          case PlanAction::kDone:
            entries_finished_++;
            if (e.type == EntryType::kFile) {  // an empty file, made at plan time
              dp_.stats->AddFileResult({e.path, 0, FileDigester().Finish().ToHex(), "succeeded", ""});
            }
            break;
          case PlanAction::kSendAll:
          case PlanAction::kResume:
            if (e.type != EntryType::kFile) return Status::Protocol("PLAN asks for data of a non-file");
            sf.chunks = ChunkCount(e.size, opts_.chunk_size);
            for (auto& [idx, d] : p.have) sf.have[idx] = d;
            sf.digests.resize(sf.chunks);
            sf.queued = true;
            work_.push_back(&sf);
            forget = false;
            break;
        }
        if (forget) files_.erase(it);
      }
      cv_.NotifyAll();
      return Status::OK();
    }
    case MsgType::kFileDone: {
      PORO_ASSIGN_OR_RETURN(auto dones, proto::DecodeFileDones(f.body));
      MutexLock lock(&mu_);
      for (const auto& d : dones) {
        auto it = files_.find(d.id);
        if (it == files_.end() || !it->second->planned || it->second->done) {
          return Status::Protocol("FILE_DONE names an unknown, unplanned or finished file id " +
                                  std::to_string(d.id));
        }
        it->second->done = true;
        entries_finished_++;
        const FileEntry& e = it->second->entry;
        if (d.code == Code::kOk) {
          dp_.stats->files_done++;
          dp_.stats->bytes_done += e.size;
          dp_.stats->AddFileResult({e.path, e.size, it->second->file_digest.ToHex(), "succeeded", ""});
        } else {
          dp_.stats->files_failed++;
          if (d.retryable) dp_.stats->files_failed_retryable++;
          dp_.stats->AddFailure(e.path.empty() ? root_.Display(it->second->rel) : e.path, d.message);
          dp_.stats->AddFileResult({e.path, e.size, "", "failed", d.message, d.retryable});
        }
        // Forgotten now, or by the reader once it no longer points at it.
        if (Forgettable(*it->second)) {
          files_.erase(it);
        } else {
          finished_.push_back(d.id);
        }
      }
      cv_.NotifyAll();  // the walk may announce more (announce_ahead)
      return Status::OK();
    }
    case MsgType::kBadChunk: {
      PORO_ASSIGN_OR_RETURN(auto bad, proto::DecodeBadChunk(f.body));
      MutexLock lock(&mu_);
      auto it = files_.find(bad.id);
      if (bad.id <= entries_sent_ && (it == files_.end() || it->second->done)) {
        // A chunk of a file the receiver has finished since (it failed the file while the chunk was
        // on its way, e.g. after the source shrank): nothing to send again.
        return Status::OK();
      }
      if (it == files_.end() || bad.index >= it->second->chunks) {
        return Status::Protocol("BAD_CHUNK names an unknown chunk");
      }
      SrcFile& sf = *it->second;
      const uint64_t chunk_off = bad.index * uint64_t(opts_.chunk_size);
      const uint64_t chunk_len = std::min<uint64_t>(opts_.chunk_size, sf.entry.size - chunk_off);
      const bool whole = bad.offset == chunk_off && bad.length == chunk_len;
      const bool piece =
          bad.offset >= chunk_off && bad.offset - chunk_off < chunk_len &&
          (bad.offset - chunk_off) % proto::kPieceSize == 0 &&
          bad.length == std::min<uint64_t>(proto::kPieceSize, chunk_off + chunk_len - bad.offset);
      if (!(whole || (piece && !(bad.flags & proto::kBadChunkPieces))) ||
          bad.stream >= dp_.channels->size()) {
        return Status::Protocol("BAD_CHUNK names a bad region or stream of chunk " +
                                std::to_string(bad.index));
      }
      dp_.stats->chunks_corrupt++;
      // The first copy again at once (on another stream); then with a backoff that doubles, from
      // 25 ms up to 1 s, so a burst of damage on the path can pass.
      const unsigned n = ++sf.bad[bad.index];
      const auto delay = n < 2 ? std::chrono::milliseconds(0)
                               : std::min(std::chrono::milliseconds(1000),
                                          std::chrono::milliseconds(25) * (1u << std::min(n - 2, 6u)));
      resend_.push_back(Resend{bad.id, bad.index, bad.offset, bad.length, bad.stream,
                               (bad.flags & proto::kBadChunkPieces) != 0,
                               std::chrono::steady_clock::now() + delay});
      cv_.NotifyAll();
      return Status::OK();
    }
    case MsgType::kSummary: {
      PORO_ASSIGN_OR_RETURN(proto::Summary summary, proto::DecodeSummary(f.body));
      // Hard links the receiver could not make: failed entries this end never heard of otherwise.
      for (const auto& [path, error] : summary.link_failures) {
        dp_.stats->files_failed++;
        dp_.stats->AddFailure(path, error);
        dp_.stats->AddFileResult({path, 0, "", "failed", error});
      }
      MutexLock lock(&mu_);
      summary_ = true;
      summary_json_ = proto::SummaryToJson(summary);
      cv_.NotifyAll();
      return Status::OK();
    }
    case MsgType::kError:
      return proto::StatusFromErrorBody(f.body);
    case MsgType::kCancel:
      return proto::StatusFromCancelBody(f.body);
    case MsgType::kKeepalive: {
      PORO_ASSIGN_OR_RETURN(proto::Keepalive k, proto::DecodeKeepalive(f.body));
      // The receiver's progress: a count that only grows within a session.
      if (k.verified && *k.verified > dp_.stats->bytes_verified.load())
        dp_.stats->bytes_verified = *k.verified;
      return Status::OK();
    }
    default:
      return Status::Protocol("unexpected control message " + std::to_string(int(f.type)) + " at the sender");
  }
}

void Sender::CtlReaderMain() {
  CtlReaderLoop();
  {
    MutexLock lock(&mu_);
    ctl_done_ = true;
  }
  cv_.NotifyAll();
}

void Sender::CtlReaderLoop() {
  while (true) {
    auto f = dp_.ctl->ReceiveLive(dp_.idle_timeout);
    if (!f.has_value()) {
      {
        MutexLock lock(&mu_);
        if (summary_) return;  // closed after the summary: normal end
      }
      Status s = f.error();
      if (s.code() == Code::kUnavailable)
        s = Status::Unavailable("control connection lost: " + std::string(s.message()));
      Fail(s.WithSide(Side::kNetwork));
      return;
    }
    Status s = HandleControl(*f);
    if (!s.ok()) {
      Fail(s);
      return;
    }
    MutexLock lock(&mu_);
    if (summary_) return;
  }
}

void Sender::Dispatch(SendItem item) {
  MutexLock lock(&sched_mu_);
  // Bound what waits in the queues: pool buffers bound the io_uring path, this bounds the sendfile path
  // (each item holds its file open).
  sched_space_cv_.Wait(&sched_mu_, [&]() PORO_REQUIRES(sched_mu_) {
    if (queued_items_ < kMaxQueuedPerChannel * queues_.size()) return true;
    MutexLock l2(&mu_);
    return !error_.ok();
  });
  const size_t n = queues_.size();
  // A re-send avoids the stream its bad copy came on (a damaged path may be one connection's).
  const size_t avoid = n > 1 && item.avoid >= 0 ? static_cast<size_t>(item.avoid) : n;
  size_t best = rr_ % n == avoid ? (rr_ + 1) % n : rr_ % n;  // ties rotate, so idle channels take turns
  for (size_t k = 1; k < n; ++k) {
    size_t i = (rr_ + k) % n;
    if (i != avoid && queues_[i]->queued_bytes < queues_[best]->queued_bytes) best = i;
  }
  rr_++;
  ChannelQueue& q = *queues_[best];
  if (send_inline_ && !dp_.pace && q.waiting && q.items.empty() && item.header.length <= kInlineBytes) {
    // That channel's thread sleeps with nothing to send: a small item is sent from here at once
    // instead of waking it (a wake-up costs more than the send). Only this thread dispatches, so
    // nothing is queued to the channel meanwhile and its thread stays asleep. Near peers only: to a
    // far one the send may block on a full socket buffer, and reading would stall with it.
    lock.Unlock();
    // Pending FILE_ENDs go first once a few have gathered: the send may block (the receiver
    // drains slowly), and the receiver holds each of those files open until its FILE_END.
    Status s = ends_.size() >= 8 ? FlushFileEnds() : Status::OK();
    if (s.ok()) s = SendOn(best, item);
    if (!s.ok()) Fail(s);
    return;
  }
  queued_items_++;
  q.queued_bytes += item.header.length;
  q.items.push_back(std::move(item));
  if (q.waiting) q.cv.NotifyOne();
}

void Sender::ChannelMain(size_t i) {
  while (true) {
    SendItem item;
    {
      MutexLock lock(&sched_mu_);
      ChannelQueue& q = *queues_[i];
      q.waiting = true;
      q.cv.Wait(&sched_mu_, [&]() PORO_REQUIRES(sched_mu_) {
        if (!q.items.empty()) return true;
        MutexLock l2(&mu_);
        return !error_.ok();
      });
      q.waiting = false;
      if (q.items.empty()) return;  // error
      item = std::move(q.items.front());
      q.items.pop_front();
      q.queued_bytes -= item.header.length;
      queued_items_--;
      sched_space_cv_.NotifyOne();
    }
    Status s = SendOn(i, item);
    if (!s.ok()) {
      Fail(s);
      return;
    }
    if (item.eos) return;
  }
}

Status Sender::SendOn(size_t i, SendItem& item) {
  transport::MessageChannel& ch = *(*dp_.channels)[i];
  if (dp_.pace && HasPayload(item.header.kind) && !dp_.pace(item.header.length)) {
    return dp_.CancelStatus();
  }
  std::array<std::byte, proto::kSealedChunkHeaderSize> hdr;
  proto::EncodeChunkHeader(item.header, std::span(hdr).first<proto::kChunkHeaderSize>());
  std::span<const std::byte> header(hdr.data(), proto::kChunkHeaderSize);
  Status s;
  bool sent = false;
  if (item.file && seals_.empty()) {
    s = ch.SendFile(header, item.file->get(), item.header.offset, item.header.length, send_opts_);
    sent = s.code() != Code::kNotSupported;  // else: a backend without sendfile
  }
  if (!sent) {
    s = item.file ? ReadPayload(item) : Status::OK();
    std::span<std::byte> payload;
    if (HasPayload(item.header.kind) && s.ok()) {
      std::byte* p = item.shared ? item.shared->data() + item.shared_off : item.buf.data();
      payload = std::span(p, item.header.length);
    }
    if (s.ok() && !seals_.empty()) {
      // Sealed in the pool buffer just before it goes out: the transport carries sealed bytes only.
      s = seals_[i].Seal(hdr, payload);
      header = hdr;
    }
    if (s.ok()) s = ch.Send(header, payload, send_opts_);
  }
  item.file.reset();
  item.shared.reset();
  if (s.code() == Code::kDeadlineExceeded && send_opts_.idle_timeout.count() > 0) {
    s = PeerStoppedAnswering("took no data", send_opts_.idle_timeout);
  }
  if (!s.ok()) return s.WithSide(Side::kNetwork).Annotate("data channel " + std::to_string(i));
  if (HasPayload(item.header.kind)) {
    dp_.stats->bytes_sent += item.header.length;
    if (dp_.stream_bytes) dp_.stream_bytes[i].bytes.fetch_add(item.header.length, std::memory_order_relaxed);
  }
  return Status::OK();
}

Status Sender::ReadPayload(SendItem& item) {
  PORO_ASSIGN_OR_RETURN(item.buf,
                        dp_.pool->Acquire(std::chrono::milliseconds(60000), dp_.pool->SenderReserve()));
  auto payload = std::span(item.buf.data(), item.header.length);
  Status s = io::PreadFull(item.file->get(), item.header.offset, payload, "source");
  if (s.code() == Code::kDataLoss) {
    // The file shrank since it was hashed: zeros in its place, as sendfile does (the receiver
    // rejects the chunk and the re-read fails the file).
    std::memset(payload.data(), 0, payload.size());
    return Status::OK();
  }
  return s;
}

Status Sender::OpenSource(SrcFile& f) {
  if (!f.denied.ok()) return f.denied;
  PORO_ASSIGN_OR_RETURN(UniqueFd fd, root_.Open(f.rel, O_RDONLY | O_NOFOLLOW));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::IoError("stat " + root_.Display(f.rel), errno);
  int64_t mtime = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (static_cast<uint64_t>(st.st_size) != f.entry.size || mtime != f.entry.mtime_ns) {
    return Status::DataLoss("source changed during the transfer: " + root_.Display(f.rel));
  }
  // A file with as many allocated bytes as it is long has no hole (compressed file systems report
  // fewer and are searched for holes anyway).
  f.maybe_sparse = static_cast<uint64_t>(st.st_blocks) * 512 < static_cast<uint64_t>(st.st_size);
  f.direct = false;
  if (opts_.try_direct && f.entry.size >= (1u << 20)) {
    // Reopen with O_DIRECT where the file system allows it (not tmpfs); buffered otherwise.
    auto d = io::OpenForRead("/proc/self/fd/" + std::to_string(fd.get()), true);
    if (d.has_value() && d->direct) {
      f.fd = std::make_shared<UniqueFd>(d->fd);
      f.direct = true;
      return Status::OK();
    }
    if (d.has_value()) ::close(d->fd);
  }
  f.fd = std::make_shared<UniqueFd>(std::move(fd));
  return Status::OK();
}

void Sender::FailFile(SrcFile& f, const Status& s) {
  // Also after the file's FILE_END (a chunk asked for again can no longer be read, because the
  // source changed): the error FILE_END that follows tells the receiver to fail the file.
  if (f.failed) return;
  f.ended = true;
  PORO_LOG(WARNING) << "cannot send " << root_.Display(f.rel) << ": " << s.ToString();
  f.failed = true;
  f.fd.reset();
  proto::FileEnd end;
  end.id = f.entry.id;
  end.code = s.code() == Code::kOk ? Code::kInternal : s.code();
  end.message = dp_.PeerMessage(s);
  ends_.push_back(std::move(end));
}

Result<io::Buffer> Sender::TakeBuffer() {
  const size_t reserve = dp_.pool->SenderReserve();
  if (!reads_.empty()) return dp_.pool->TryAcquire(reserve);
  return dp_.pool->Acquire(std::chrono::milliseconds(60000), reserve);
}

void Sender::Unpick(SrcFile& f, const std::optional<Resend>& resend) {
  if (!resend) {
    f.next--;
    return;
  }
  MutexLock lock(&mu_);
  resend_.push_front(*resend);
}

std::deque<Resend>::iterator Sender::DueResend(std::chrono::steady_clock::time_point now) {
  return std::find_if(resend_.begin(), resend_.end(), [&](const Resend& r) { return r.not_before <= now; });
}

std::chrono::steady_clock::time_point Sender::NextResend() const {
  auto t = std::chrono::steady_clock::time_point::max();
  for (const Resend& r : resend_) t = std::min(t, r.not_before);
  return t;
}

Status Sender::IssueReads(std::unique_ptr<io::IoQueue>& q) {
  // Buffered chunks are hashed synchronously here; return now and then so finished files' FILE_ENDs
  // go out promptly (the receiver holds each file open until its FILE_END arrives).
  unsigned buffered = 0;
  while (reads_.size() < opts_.read_ahead && buffered < 16 && ends_.size() < 128) {
    SrcFile* f = nullptr;
    uint64_t index = 0;
    std::optional<Resend> re;
    {
      MutexLock lock(&mu_);
      if (!error_.ok()) return error_;
      resending_ = nullptr;  // the previous iteration is done with it (or holds it by `inflight`)
      ReapFinished();
      if (auto due = DueResend(std::chrono::steady_clock::now()); due != resend_.end()) {
        re = *due;
        resend_.erase(due);
        auto it = files_.find(re->id);
        if (it == files_.end() || it->second->done) continue;  // the receiver has finished with it since
        f = it->second.get();
        index = re->index;
        resending_ = f;
      } else {
        // A file the receiver has already finished (failed it early, e.g. it could not create it)
        // is not read any further: it has forgotten the file and would discard the chunks.
        while (true) {
          if (CurrentHasWork()) break;
          if (work_.empty()) return Status::OK();
          current_ = work_.front();
          current_->queued = false;
          work_.pop_front();
        }
        f = current_;
        index = f->next;
      }
    }
    if (f->chunks == 0) {  // empty file: the digest of no chunks
      f->ended = true;
      f->file_digest = FileDigester().Finish();
      ends_.push_back(proto::FileEnd{f->entry.id, 0, f->file_digest, Code::kOk, "", 0});
      continue;
    }
    if (!f->fd) {
      if (f->failed) continue;
      Status s = OpenSource(*f);
      if (!s.ok()) {
        FailFile(*f, s);
        continue;
      }
    }
    const bool resend = re.has_value();
    const int avoid = re ? re->avoid : -1;
    if (!resend) f->next++;
    uint64_t offset = index * opts_.chunk_size;
    uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(opts_.chunk_size, f->entry.size - offset));
    if (re && (re->pieces || re->length != len)) {
      bool no_buffer = false;
      SendPieces(*f, *re, &no_buffer);
      if (no_buffer) {  // complete the reads in flight first (they free buffers)
        Unpick(*f, re);
        break;
      }
      continue;
    }
    // Sparse files: a chunk that lies entirely in a hole is announced, not read or sent.
    if (f->maybe_sparse) {
      off_t data = ::lseek(f->fd->get(), static_cast<off_t>(offset), SEEK_DATA);
      if ((data < 0 && errno == ENXIO) || (data >= 0 && static_cast<uint64_t>(data) >= offset + len)) {
        SendItem hole;
        hole.avoid = avoid;
        Hashed(*f, index, len, zero_.Get(len), resend, std::move(hole), ChunkKind::kHole);
        continue;
      }
    }
    if (!f->direct) {
      // Buffered path (tmpfs, or O_DIRECT not possible): hash the chunk through a small cache-resident
      // buffer, then let the channel send it straight from the page cache (sendfile).
      io::Buffer sealbuf;  // a sealed channel needs the bytes in a pool buffer: read them there once
      if (!seals_.empty()) {
        PORO_ASSIGN_OR_RETURN(sealbuf, TakeBuffer());
        if (!sealbuf.valid()) {
          Unpick(*f, re);
          break;
        }
      }
      HashBuffered(*f, index, offset, len, resend, std::move(sealbuf), avoid);
      buffered++;
      continue;
    }
    PORO_ASSIGN_OR_RETURN(io::Buffer buf, TakeBuffer());
    if (!buf.valid()) {  // none free now: complete the reads in flight first (they free buffers)
      Unpick(*f, re);
      break;
    }
    if (buf.capacity() < len) return Status::Internal("buffer pool buffers are smaller than the chunk size");
    uint32_t io_len = f->direct ? io::RoundUpToDirectAlign(len) : len;
    uint64_t tag = next_tag_++;
    if (!q) {  // registering the pool with a ring costs: only done when a direct read needs it
      io::IoQueueOptions qo;
      qo.depth = std::max(4u, opts_.read_ahead * 2);
      qo.registered = dp_.pool;
      PORO_ASSIGN_OR_RETURN(q, io::CreateIoQueue(qo));
    }
    PORO_RETURN_IF_ERROR(q->SubmitRead(f->fd->get(), offset, std::span(buf.data(), io_len), tag));
    reads_.emplace(tag, ReadOp{f, index, len, std::move(buf), resend, avoid});
    f->inflight++;  // before mu_ is next released with current_/resending_ moved on
  }
  return Status::OK();
}

Status Sender::Complete(const io::Completion& c) {
  auto it = reads_.find(c.tag);
  if (it == reads_.end()) return Status::Internal("completion for an unknown read");
  ReadOp op = std::move(it->second);
  reads_.erase(it);
  SrcFile& f = *op.file;
  // The last use of `f`: once no read points at it, the control reader may forget it.
  Defer unpin([&f] { f.inflight--; });
  if (f.failed) return Status::OK();
  if (c.result < 0) {
    FailFile(
        f,
        Status::IoError("read " + root_.Display(f.rel), static_cast<int>(-c.result)).WithSide(Side::kSource));
    return Status::OK();
  }
  if (static_cast<uint64_t>(c.result) < op.len) {
    FailFile(f, Status::DataLoss("source shrank during the transfer: " + root_.Display(f.rel)));
    return Status::OK();
  }
  Digest128 d = Xxh3_128(std::span<const std::byte>(op.buf.data(), op.len));
  SendItem item;
  item.buf = std::move(op.buf);
  item.avoid = op.avoid;
  Hashed(f, op.index, op.len, d, op.resend, std::move(item));
  return Status::OK();
}

void Sender::HashBuffered(SrcFile& f, uint64_t index, uint64_t offset, uint32_t len, bool resend,
                          io::Buffer buf, int avoid) {
  // Clear: hash through a small buffer and let the channel sendfile the chunk from the page cache.
  // Sealed: the channel must seal the bytes in a buffer anyway, so they are read into that pool
  // buffer here once, each piece hashed while it is in the cache (instead of a second read at send).
  SendItem item;
  std::span<std::byte> dest;
  item.buf = std::move(buf);
  item.avoid = avoid;
  if (!item.buf.valid() && hash_buf_.empty()) hash_buf_.resize(256 << 10);
  hasher_.Reset();
  for (uint64_t done = 0; done < len;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(256 << 10, len - done));
    dest = item.buf.valid() ? std::span(item.buf.data() + done, n) : std::span(hash_buf_.data(), n);
    Status s = io::PreadFull(f.fd->get(), offset + done, dest, root_.Display(f.rel));
    if (!s.ok()) {
      FailFile(f, s.WithSide(Side::kSource));
      return;
    }
    hasher_.Update(dest);
    done += n;
  }
  if (!item.buf.valid()) item.file = f.fd;
  Hashed(f, index, len, hasher_.Finish(), resend, std::move(item));
}

Status Sender::ReadSource(SrcFile& f, uint64_t offset, std::span<std::byte> out) {
  if (!f.direct) return io::PreadFull(f.fd->get(), offset, out, root_.Display(f.rel));
  // O_DIRECT: whole aligned blocks (the pool's buffers are aligned and long enough); at the end of the
  // file the last read comes back short.
  const size_t want = io::RoundUpToDirectAlign(out.size());
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::pread(f.fd->get(), out.data() + got, want - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError("read " + root_.Display(f.rel), errno);
    if (n == 0) return Status::DataLoss("source shrank during the transfer: " + root_.Display(f.rel));
    got += static_cast<size_t>(n);
  }
  return Status::OK();
}

void Sender::SendPieces(SrcFile& f, const Resend& r, bool* no_buffer) {
  const uint64_t chunk_off = r.index * uint64_t(opts_.chunk_size);
  const uint64_t chunk_len = std::min<uint64_t>(opts_.chunk_size, f.entry.size - chunk_off);
  const uint64_t off = r.pieces ? chunk_off : r.offset;
  const uint64_t len = r.pieces ? chunk_len : r.length;
  Result<io::Buffer> taken = TakeBuffer();
  if (!taken.has_value() || !taken->valid()) {
    *no_buffer = taken.has_value();
    if (!taken.has_value()) FailFile(f, taken.error());
    return;
  }
  auto buf = std::make_shared<io::Buffer>(std::move(*taken));
  if (buf->capacity() < io::RoundUpToDirectAlign(len)) {
    FailFile(f, Status::Internal("buffer pool buffers are smaller than the chunk size"));
    return;
  }
  Status s = ReadSource(f, off, std::span(buf->data(), len));
  if (!s.ok()) {
    FailFile(f, s.WithSide(Side::kSource));
    return;
  }
  // The whole chunk was read: it must still be what was announced (a piece alone cannot be checked
  // here; the receiver's file digest check catches a source changed under it).
  if (r.pieces && !(Xxh3_128(std::span<const std::byte>(buf->data(), len)) == f.digests[r.index])) {
    FailFile(f, Status::DataLoss("source changed during the transfer: " + root_.Display(f.rel)));
    return;
  }
  for (uint64_t at = 0; at < len; at += proto::kPieceSize) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(proto::kPieceSize, len - at));
    SendItem item;
    item.shared = buf;
    item.shared_off = static_cast<size_t>(at);
    item.avoid = r.avoid;
    item.header = ChunkHeader{
        ChunkKind::kPiece,
        f.entry.id,
        r.index,
        off + at,
        n,
        proto::PieceDigest(std::span<const std::byte>(buf->data() + at, n), f.entry.id, off + at)};
    dp_.stats->bytes_resent += n;
    Dispatch(std::move(item));
  }
}

void Sender::Hashed(SrcFile& f, uint64_t index, uint32_t len, const Digest128& d, bool resend, SendItem item,
                    ChunkKind kind) {
  uint64_t offset = index * opts_.chunk_size;
  item.header = ChunkHeader{kind, f.entry.id, index, offset, len, d};
  if (resend) {
    if (kind == ChunkKind::kData) dp_.stats->bytes_resent += len;
    Dispatch(std::move(item));
    return;
  }
  f.digests[index] = d;
  f.completed++;
  auto h = f.have.find(index);
  if (h != f.have.end() && h->second == d) {
    dp_.stats->bytes_resumed += len;  // already durable at the receiver
  } else {
    f.sent++;
    Dispatch(std::move(item));
  }
  if (f.completed == f.chunks) {
    FileDigester dg;
    for (const auto& x : f.digests) dg.AddChunk(x);
    f.file_digest = dg.Finish();
    ends_.push_back(proto::FileEnd{f.entry.id, f.chunks, f.file_digest, Code::kOk, "", f.sent});
    f.ended = true;
    f.fd.reset();
  }
}

void Sender::ReapFinished() {
  std::erase_if(finished_, [&](uint64_t id) PORO_REQUIRES(mu_) {
    auto it = files_.find(id);
    if (it == files_.end()) return true;
    if (!Forgettable(*it->second)) return false;
    files_.erase(it);
    return true;
  });
}

Status Sender::FlushFileEnds() {
  if (ends_.empty()) return Status::OK();
  Status s = dp_.ctl->Send(MsgType::kFileEnd, proto::EncodeFileEnds(ends_));
  ends_.clear();
  return s;
}

Status Sender::ReaderLoop() {
  std::unique_ptr<io::IoQueue> q;  // created by IssueReads at the first O_DIRECT read
  std::vector<io::Completion> comps(64);
  while (true) {
    if (Cancelled()) return dp_.CancelStatus();
    PORO_RETURN_IF_ERROR(IssueReads(q));
    if (!reads_.empty()) {
      PORO_ASSIGN_OR_RETURN(size_t n, q->Reap(comps, 1));
      for (size_t i = 0; i < n; ++i) PORO_RETURN_IF_ERROR(Complete(comps[i]));
      if (reads_.empty() || ends_.size() >= 256) PORO_RETURN_IF_ERROR(FlushFileEnds());
      continue;
    }
    PORO_RETURN_IF_ERROR(FlushFileEnds());
    MutexLock lock(&mu_);
    if (!error_.ok()) return error_;
    bool idle = work_.empty() && resend_.empty() && !CurrentHasWork();
    if (idle && walk_done_ && batches_out_ == 0 && !end_sent_) {
      end_sent_ = true;
      proto::End end(entries_sent_);
      end.specials = dp_.stats->specials_skipped.load();
      for (auto& [path, kind] : dp_.stats->Specials()) end.special_names.push_back({path, kind});
      lock.Unlock();
      PORO_RETURN_IF_ERROR(dp_.ctl->Send(MsgType::kEnd, proto::EncodeEnd(end)));
      continue;
    }
    if (summary_) return Status::OK();
    const auto now = std::chrono::steady_clock::now();
    const auto wait = std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(200),
                                                                    std::max(NextResend(), now) - now);
    cv_.WaitFor(&mu_, std::chrono::duration_cast<std::chrono::milliseconds>(wait), [&]() PORO_REQUIRES(mu_) {
      return !work_.empty() || DueResend(std::chrono::steady_clock::now()) != resend_.end() ||
             CurrentHasWork() || summary_ || !error_.ok() || Cancelled() ||
             (walk_done_ && batches_out_ == 0 && !end_sent_);
    });
  }
}

Result<nlohmann::json> Sender::Run() {
  size_t n = dp_.channels->size();
  if (n == 0) return Status::InvalidArgument("no data channels");
  if (dp_.protection != Protection::kClear) {
    PORO_ASSIGN_OR_RETURN(seals_, ChannelSeal::ForChannels(dp_.protection, dp_.seal_key, n));
  }
  {
    MutexLock lock(&sched_mu_);
    for (size_t i = 0; i < n; ++i) queues_.push_back(std::make_unique<ChannelQueue>());
  }
  send_inline_ = true;
  for (const auto& ch : *dp_.channels) {
    auto rtt = ch->rtt();
    if (!rtt || *rtt >= kNearRtt) send_inline_ = false;
  }
  PORO_LOG(DEBUG) << "sender: "
                  << (send_inline_ ? "near peer, small chunks sent by the reader"
                                   : "far peer (or RTT unknown), every chunk through the channel queues");
  dp_.ctl->set_write_timeout(dp_.idle_timeout);
  send_opts_.idle_timeout = dp_.idle_timeout;  // a data send that makes no progress that long fails
  KeepaliveTicker keepalive(dp_.ctl, dp_.idle_timeout / 4);
  std::thread walker([this] { WalkerMain(); });
  std::thread ctl([this] { CtlReaderMain(); });
  std::vector<std::thread> chans;
  for (size_t i = 0; i < n; ++i) chans.emplace_back([this, i] { ChannelMain(i); });

  Status s = ReaderLoop();
  if (s.ok()) {
    for (size_t i = 0; i < n; ++i) {
      MutexLock lock(&sched_mu_);
      SendItem eos;
      eos.header = ChunkHeader{ChunkKind::kEos, 0, 0, 0, 0, {}};
      eos.eos = true;
      queues_[i]->items.push_back(std::move(eos));
      queued_items_++;
      queues_[i]->cv.NotifyAll();
    }
  } else {
    Fail(s);
  }
  for (auto& t : chans) t.join();
  {
    MutexLock lock(&mu_);
    if (!error_.ok() && s.ok()) s = error_;
  }
  if (!s.ok()) {
    if (s.code() != Code::kUnavailable) {
      dp_.ctl->SendError(s);
      // The peer reads why before any connection of the session closes: until it answers or
      // closes the control connection (briefly), the data connections stay open, so both ends
      // record the same reason (a cancel, a session cut) rather than "data channel closed".
      MutexLock lock(&mu_);
      cv_.WaitFor(&mu_, kPeerReadsError, [&]() PORO_REQUIRES(mu_) { return ctl_done_; });
    }
    dp_.ctl->Shutdown();
    for (auto& ch : *dp_.channels) ch->Shutdown();
    Fail(s);
  }
  walker.join();
  ctl.join();
  reads_.clear();
  {
    MutexLock lock(&sched_mu_);
    queues_.clear();
  }
  MutexLock lock(&mu_);
  PORO_LOG(INFO) << "sender: " << entries_sent_ << " entries announced, at most " << files_peak_
                 << " held at once";
  if (!s.ok()) return s;
  return summary_json_;
}

}  // namespace

Result<nlohmann::json> RunSender(const ExportRoot& root, const std::string& src_rel,
                                 const EngineOptions& opts, const DataPath& dp) {
  Sender s(root, src_rel, opts, dp);
  return s.Run();
}

}  // namespace pororoca::engine
