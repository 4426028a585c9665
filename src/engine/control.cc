#include "engine/control.h"

#include "base/coding.h"
#include "proto/messages.h"

namespace pororoca::engine {

Status PeerStoppedAnswering(std::string_view what, std::chrono::milliseconds idle) {
  return Status::DeadlineExceeded("the peer " + std::string(what) + " for " +
                                  std::to_string(idle.count() / 1000) +
                                  " s: it stopped answering (its daemon stopped or hung, or the network "
                                  "between is down)")
      .WithRetryable(true);
}

Status ControlChannel::Send(proto::MsgType type, std::span<const std::byte> body) {
  std::vector<std::byte> frame = proto::EncodeControlFrame(type, body);
  MutexLock lock(&write_mu_);
  return stream_->WriteAll(frame, write_opts_);
}

void ControlChannel::SendError(const Status& s) {
  Send(proto::MsgType::kError, proto::EncodeErrorMsg(proto::ErrorMsgFromStatus(s))).IgnoreError();
}

Result<proto::ControlFrame> ControlChannel::Receive(const transport::TransportOptions& opts) {
  std::byte hdr[5];
  size_t got = 0;
  while (got < 5) {
    PORO_ASSIGN_OR_RETURN(size_t n, stream_->ReadSome(std::span(hdr + got, 5 - got), opts));
    if (n == 0) {
      if (got == 0) return Status::Unavailable("closed");
      return Status::Unavailable("control connection closed mid-message");
    }
    got += n;
  }
  uint32_t len = DecodeFixed32(hdr);
  if (len == 0 || len > proto::kMaxControlFrame) {
    return Status::Protocol("control frame length " + std::to_string(len) + " out of range");
  }
  proto::ControlFrame f;
  f.type = static_cast<proto::MsgType>(std::to_integer<uint8_t>(hdr[4]));
  f.body.resize(len - 1);
  if (!f.body.empty()) PORO_RETURN_IF_ERROR(stream_->ReadFull(f.body, opts));
  return f;
}

Result<proto::ControlFrame> ControlChannel::ReceiveLive(std::chrono::milliseconds idle) {
  transport::TransportOptions o;
  o.idle_timeout = idle;
  auto f = Receive(o);
  if (f.has_value() || f.error().code() != Code::kDeadlineExceeded || idle.count() == 0) return f;
  return PeerStoppedAnswering("sent nothing, not even a keepalive,", idle);
}

Result<std::vector<std::byte>> ControlChannel::Expect(proto::MsgType type,
                                                      const transport::TransportOptions& opts) {
  PORO_ASSIGN_OR_RETURN(proto::ControlFrame f, Receive(opts));
  if (f.type == proto::MsgType::kError) return proto::StatusFromErrorBody(f.body);
  if (f.type != type) {
    return Status::Protocol("expected " + proto::MsgTypeName(type) + ", got " + proto::MsgTypeName(f.type));
  }
  return std::move(f.body);
}

KeepaliveTicker::KeepaliveTicker(ControlChannel* ctl, std::chrono::milliseconds interval,
                                 const std::atomic<uint64_t>* verified)
    : ctl_(ctl), verified_(verified) {
  if (interval.count() > 0 || verified_ != nullptr)
    thread_ = std::thread([this, interval] { Main(interval); });
}

KeepaliveTicker::~KeepaliveTicker() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.NotifyAll();
  if (thread_.joinable()) thread_.join();
}

void KeepaliveTicker::Main(std::chrono::milliseconds interval) {
  const bool keepalive = interval.count() > 0;
  const auto tick = verified_ == nullptr ? interval
                    : keepalive          ? std::min(interval, kProgressInterval)
                                         : kProgressInterval;
  auto last_sent = std::chrono::steady_clock::now();
  uint64_t last_verified = 0;
  MutexLock lock(&mu_);
  while (!cv_.WaitFor(&mu_, tick, [&]() PORO_REQUIRES(mu_) { return stop_; })) {
    proto::Keepalive k;
    if (verified_ != nullptr) {
      const uint64_t v = verified_->load();
      if (v != last_verified) k.verified = last_verified = v;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!k.verified && (!keepalive || now - last_sent < interval)) continue;  // nothing new, not due
    last_sent = now;
    lock.Unlock();
    ctl_->Send(proto::MsgType::kKeepalive, proto::EncodeKeepalive(k)).IgnoreError();
    lock.Lock();
  }
}

}  // namespace pororoca::engine
