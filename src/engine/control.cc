#include "engine/control.h"

#include "base/coding.h"

namespace pororoca::engine {

Status ControlChannel::Send(proto::MsgType type, std::span<const std::byte> body) {
  std::vector<std::byte> frame = proto::EncodeControlFrame(type, body);
  MutexLock lock(&write_mu_);
  return stream_->WriteAll(frame, {});
}

Status ControlChannel::SendJson(proto::MsgType type, const nlohmann::json& j) {
  std::vector<std::byte> frame = proto::EncodeJsonFrame(type, j);
  MutexLock lock(&write_mu_);
  return stream_->WriteAll(frame, {});
}

void ControlChannel::SendError(const Status& s) {
  SendJson(proto::MsgType::kError, ErrorJson(s)).IgnoreError();
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

Result<nlohmann::json> ControlChannel::ExpectJson(proto::MsgType type,
                                                  const transport::TransportOptions& opts) {
  PORO_ASSIGN_OR_RETURN(proto::ControlFrame f, Receive(opts));
  if (f.type == proto::MsgType::kError) {
    PORO_ASSIGN_OR_RETURN(nlohmann::json j, proto::DecodeJsonBody(f));
    return StatusFromErrorJson(j);
  }
  if (f.type != type) {
    return Status::Protocol("expected control message " + std::to_string(int(type)) + ", got " +
                            std::to_string(int(f.type)));
  }
  return proto::DecodeJsonBody(f);
}

namespace {
Status StatusFromErrorJsonUnchecked(const nlohmann::json& j);
}  // namespace

nlohmann::json ErrorJson(const Status& s) {
  return nlohmann::json{{"code", static_cast<int>(s.code())},
                        {"name", std::string(CodeName(s.code()))},
                        {"message", std::string(s.message())},
                        {"retryable", s.retryable()}};
}

Status StatusFromErrorJson(const nlohmann::json& j) {
  try {
    return StatusFromErrorJsonUnchecked(j);
  } catch (const nlohmann::json::exception&) {
    return Status::Protocol("peer sent a malformed ERROR message");
  }
}

namespace {
Status StatusFromErrorJsonUnchecked(const nlohmann::json& j) {
  int code = j.value("code", static_cast<int>(Code::kInternal));
  if (code <= 0 || code > static_cast<int>(Code::kUnauthenticated)) code = static_cast<int>(Code::kInternal);
  Status s(static_cast<Code>(code), "peer: " + j.value("message", std::string("unspecified error")));
  s.WithRetryable(j.value("retryable", false));
  return s;
}

}  // namespace

}  // namespace pororoca::engine
