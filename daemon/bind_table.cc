#include "daemon/bind_table.h"

#include <unistd.h>

#include "base/log.h"
#include "transport/tcp.h"

namespace pororoca::daemon {

std::shared_ptr<BindTable::Entry> BindTable::Open(const proto::SessionId& id, std::vector<std::byte> key,
                                                  unsigned streams) {
  auto e = std::make_shared<Entry>();
  e->table_ = this;
  e->id_ = id;
  e->key_ = std::move(key);
  e->streams_ = streams;
  e->channels_.resize(streams);
  MutexLock lock(&mu_);
  entries_[id] = e.get();
  return e;
}

void BindTable::Close(const proto::SessionId& id) {
  MutexLock lock(&mu_);
  entries_.erase(id);
}

Status BindTable::Serve(UniqueFd fd) {
  transport::TcpStream stream(std::move(fd));
  transport::TransportOptions o;
  o.idle_timeout = std::chrono::milliseconds(10000);
  std::array<std::byte, proto::kBindSize> buf;
  PORO_RETURN_IF_ERROR(stream.ReadFull(buf, o));
  PORO_ASSIGN_OR_RETURN(proto::BindRequest req, proto::DecodeBind(buf));
  std::array<std::byte, proto::kBindReplySize> reply;
  bool ok = false;
  {
    MutexLock lock(&mu_);
    auto it = entries_.find(req.session);
    Entry* e = it == entries_.end() ? nullptr : it->second;
    ok = e != nullptr && !e->closed_ && req.stream < e->streams_ && !e->channels_[req.stream] &&
         proto::MacEqual(req.mac, proto::BindMac(e->key_, false, req.session, req.stream, req.nonce));
    if (ok) {
      UniqueFd raw(::dup(stream.fd()));
      if (!raw.valid()) return Status::IoError("dup data connection", errno);
      // Counted before the answer: see the header.
      e->channels_[req.stream] = factory_(std::move(raw));
      e->bound_++;
      reply = proto::EncodeBindReply(0, proto::BindMac(e->key_, true, req.session, req.stream, req.nonce));
      cv_.NotifyAll();
    }
  }
  if (!ok) {
    stream.WriteAll(proto::EncodeBindReply(1, proto::Mac{}), o).IgnoreError();
    return Status::Unauthenticated("unknown session or bad authenticator (not bound to a control session)");
  }
  return stream.WriteAll(reply, o);
}

bool BindTable::AllBound(Entry& e) {
  MutexLock lock(&mu_);
  return e.bound_ == e.streams_;
}

bool BindTable::WaitBound(Entry& e, std::chrono::steady_clock::time_point until,
                          std::chrono::milliseconds step, const std::function<bool()>& give_up) {
  MutexLock lock(&mu_);
  while (e.bound_ != e.streams_) {
    if (std::chrono::steady_clock::now() >= until) return false;
    lock.Unlock();
    const bool stop = give_up();
    lock.Lock();
    if (stop) return e.bound_ == e.streams_;
    cv_.WaitUntil(&mu_, std::min(until, std::chrono::steady_clock::now() + step));
  }
  return true;
}

std::vector<std::unique_ptr<transport::MessageChannel>> BindTable::Take(Entry& e) {
  MutexLock lock(&mu_);
  e.closed_ = true;
  return std::move(e.channels_);
}

}  // namespace pororoca::daemon
