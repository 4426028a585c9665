// Typed control messages: the JSON bodies of HELLO, OPEN, OPEN_OK, START, ERROR, END, SUMMARY, CANCEL and
// KEEPALIVE on the control channel (docs/protocol.md, section 1). One struct per message, one
// EncodeX that writes exactly the JSON object the protocol names (same keys, same meaning), and one
// DecodeX that checks every field's presence, JSON type and protocol range.
//
// Decoders never throw and never trust the peer: a body that is not a JSON object, a missing field, a
// field of the wrong JSON type or out of the range the protocol fixes is Status::Protocol naming the
// message and the field, e.g. "OPEN.streams: expected an unsigned integer". Unknown keys are ignored
// (forward compatibility). Limits that are policy (a daemon's max_streams, its chunk size and buffer
// size, who may push where) are checked by the daemon, not here.
//
// Thread-safety: free functions on values; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pororoca/protection.h"
#include "pororoca/status.h"
#include "proto/wire.h"

namespace pororoca::proto {

// Ranges the protocol itself fixes (docs/protocol.md sections 1 and 4).
inline constexpr uint32_t kMaxStreams = 1024;         // OPEN.streams is 1..kMaxStreams
inline constexpr uint32_t kMaxChunkSize = 64u << 20;  // OPEN.options.chunk_size is 1..kMaxChunkSize
inline constexpr size_t kTransferIdHexDigits = 32;    // transfer_id: 16 bytes as hex

// Who sends, seen from the initiator: in a push the initiator sends, in a pull the responder sends.
enum class Direction : uint8_t { kPush = 0, kPull = 1 };
std::string_view DirectionName(Direction d);  // "push", "pull"
// kInvalidArgument unless `s` is "push" or "pull".
Result<Direction> ParseDirection(std::string_view s);

// What the receiver does with a file that already exists under the final name.
enum class Existing : uint8_t { kFail = 0, kOverwrite = 1, kSkip = 2 };
std::string_view ExistingName(Existing e);  // "fail", "overwrite", "skip"
// kInvalidArgument unless `s` is "fail", "overwrite" or "skip".
Result<Existing> ParseExisting(std::string_view s);

// "HELLO", "OPEN", ..., "BAD_CHUNK"; "unknown (N)" for a type this build does not know.
std::string MsgTypeName(MsgType t);

// HELLO, both ways, once each.
// {"proto": 1, "endpoint": "...", "software": "pororoca <version>"[, "session": "<32 hex>"]}
// The data transports this build knows: "tcp", "ucx" and "fabric" (libfabric).
bool IsTransportName(std::string_view name);
inline constexpr const char* kTransportNames = "tcp, ucx or fabric";  // for error messages

// HELLO, both ways. {"proto", "endpoint", "software", "session"?, "transports"?, "transport"?}
struct Hello {
  int64_t proto = kProtocolVersion;  // any integer decodes: the daemon refuses other versions
  std::string endpoint;              // the sender's [endpoint] name (checked against its certificate)
  std::string software;
  std::optional<SessionId> session;  // the responder's HELLO only: the session the binds name
  // The data transports the sender offers, in its order of preference; absent or empty reads as
  // ["tcp"] (a peer from before the negotiation). Names this build does not know are kept (and
  // never chosen). At most kMaxTransports names of at most 16 bytes.
  std::vector<std::string> transports;
  // The responder's HELLO only: the transport it chose, the first of the initiator's list it
  // offers too. Absent reads as "tcp".
  std::optional<std::string> transport;
  bool operator==(const Hello&) const = default;
};
inline constexpr size_t kMaxTransports = 8;

// The basename of the transfer's source and whether it is a directory.
// {"name": "<basename>", "is_dir": bool}; name is "" (the export root) or one clean path component.
struct Source {
  std::string name;
  bool is_dir = false;
  bool operator==(const Source&) const = default;
};

// OPEN.options. On the wire also {"streams": N}, a copy of OPEN.streams (written, not read).
struct OpenOptions {
  uint32_t chunk_size = 4u << 20;  // 1..kMaxChunkSize here; the daemon checks its own limits
  bool sync = false;
  Existing existing = Existing::kFail;
  bool hard_links = false;  // recreate hard links within the tree (absent on the wire: false)
  bool operator==(const OpenOptions&) const = default;
};

// OPEN.query: not a transfer but a question about the responder's path, admitted as a pull of
// it would be (token storage.read, the responder's policy) and answered with QUERY_RESULT instead
// of OPEN_OK; no data connection follows. "list": the entries of a directory (or the file
// itself), at most `limit`; "checksum": the file digest pororoca verifies (XXH3-128 over the
// XXH3-128 digests of its `chunk_size` chunks). An older responder ignores it and answers OPEN_OK.
struct Query {
  std::string op;           // "list" or "checksum"
  uint32_t chunk_size = 0;  // checksum
  uint32_t limit = 0;       // list
  bool operator==(const Query&) const = default;
};

// OPEN, initiator -> responder: the transfer request.
struct Open {
  std::string transfer_id;  // 32 hex digits
  Direction direction = Direction::kPush;
  std::string path;  // in the responder's export root; at most kMaxPathBytes
  bool trailing_slash = false;
  bool recursive = false;
  uint32_t streams = 1;  // data connections that follow: 1..kMaxStreams
  OpenOptions options;
  std::string local_path;            // the initiator's own path ("/" + export-relative); <= kMaxPathBytes
  std::optional<std::string> token;  // bearer token, when the initiator has one
  // The protection level the user asked for; absent: the stricter of both ends' policy minimums.
  std::optional<Protection> protection;
  // Push only, and then always present after a successful decode (a pull's are not read).
  std::optional<Source> src;
  std::optional<std::string> classification;
  std::optional<Query> query;  // pull only
  bool operator==(const Open&) const = default;
};

// OPEN_OK, responder -> initiator: the transfer is accepted.
struct OpenOk {
  std::string transfer_id;  // 32 hex digits
  std::string rule;         // the responder's policy rule that allowed it ("" if none)
  // Decoded according to the direction the initiator asked for; the other direction's are not read.
  std::optional<std::string> target;          // push: "<endpoint>:/<resolved path>"
  std::optional<Source> src;                  // pull
  std::optional<std::string> classification;  // pull: the data's label at the responder
  // The stricter of OPEN's request (clear if none) and the responder's policy minimum. Written only
  // above clear; absent reads as clear (each end enforces its own minimum on START anyway).
  Protection protection = Protection::kClear;
  bool operator==(const OpenOk&) const = default;
};

// START, initiator -> responder, after its own policy decision and before the data connections:
// the protection level in force, never below OPEN_OK's (the initiator's policy may require more).
// {"protection": "clear" | "integrity" | "private"}
struct Start {
  Protection protection = Protection::kClear;
  bool operator==(const Start&) const = default;
};

// CHANNELS, receiving end -> sending end, after START, on a transport other than tcp: where the
// data channels are. {"transport": "ucx", "addresses": ["<hex>", ...]}, one address per stream
// (ucx: "ip:port" of a UCX listener; fabric: the endpoint's libfabric address, a sockaddr), each at
// most kMaxChannelAddress bytes.
struct Channels {
  std::string transport;
  std::vector<std::vector<std::byte>> addresses;
  bool operator==(const Channels&) const = default;
};
inline constexpr size_t kMaxChannelAddress = 8192;

// ERROR, either way: fatal for the session.
// {"code": <int>, "name": "<CodeName>", "message": "...", "retryable": bool}; "name" is written
// for humans and not read. A code this build does not know (or 0) decodes as Code::kInternal.
struct ErrorMsg {
  Code code = Code::kInternal;
  std::string message;
  bool retryable = false;
  bool operator==(const ErrorMsg&) const = default;
};

// The ERROR to send for `s` (code, message, retryable); an OK `s` becomes kInternal.
ErrorMsg ErrorMsgFromStatus(const Status& s);
// The Status a received ERROR stands for: its code and retryable, message "peer: <message>".
Status StatusFromErrorMsg(const ErrorMsg& e);
// DecodeErrorMsg + StatusFromErrorMsg: the Status of a received ERROR body, or the Protocol error
// that the body is malformed. Never OK.
Status StatusFromErrorBody(std::span<const std::byte> body);

// END, sender -> receiver: the walk is complete. {"files": <FILES entries sent>} and, when the tree
// held special files the sender did not send (FIFOs, sockets, devices), "specials": their number,
// and "special_names": [{"path": "<inside the transfer>", "kind": "FIFO"}, ...] (at most 100).
struct SpecialFile {
  std::string path;
  std::string kind;
  bool operator==(const SpecialFile&) const = default;
};
struct End {
  End() = default;
  End(uint64_t n) : files(n) {}  // NOLINT: End{n} as before the specials
  uint64_t files = 0;
  uint64_t specials = 0;
  std::vector<SpecialFile> special_names;  // the first kMaxSpecialNames of them
  bool operator==(const End&) const = default;
};
inline constexpr size_t kMaxSpecialNames = 100;

// SUMMARY, receiver -> sender: the receiver's final account; every field an unsigned integer.
struct Summary {
  uint64_t files_committed = 0;
  uint64_t bytes_committed = 0;
  uint64_t files_skipped = 0;
  uint64_t bytes_skipped = 0;
  uint64_t files_failed = 0;
  uint64_t chunks_corrupt = 0;
  uint64_t bytes_resumed = 0;
  // Hard links the receiver could not make (they are counted in files_failed), so a sending
  // initiator lists them too: path inside the transfer and why. At most 100; absent when none.
  std::vector<std::pair<std::string, std::string>> link_failures;
  bool operator==(const Summary&) const = default;
};

// The SUMMARY object as on the wire, for the transfer record's "summary" (api.md).
nlohmann::json SummaryToJson(const Summary& s);

// CANCEL, either way: understood, never sent by version 1. {"reason": "..."}
struct Cancel {
  std::string reason;
  bool operator==(const Cancel&) const = default;
};

// The Status a received CANCEL body stands for: kCancelled "transfer cancelled by the peer[: reason]",
// or the Protocol error that the body is malformed. Never OK.
Status StatusFromCancelBody(std::span<const std::byte> body);

// KEEPALIVE, either way, during the engine phase (engine::KeepaliveTicker): keeps the peer's idle
// timeout from firing. From the receiver it may carry {"verified": N}: the payload bytes it has
// verified and written in this session so far (the sender's live progress). Encoded as an empty
// body without it; an empty body or any JSON object decodes, and "verified", when present, must be
// an unsigned integer.
struct Keepalive {
  std::optional<uint64_t> verified;
  bool operator==(const Keepalive&) const = default;
};

std::vector<std::byte> EncodeHello(const Hello& m);
Result<Hello> DecodeHello(std::span<const std::byte> body);
// Writes src and classification when present (the initiator sets them for a push only).
std::vector<std::byte> EncodeOpen(const Open& m);
// A push requires src and classification; a pull leaves them empty.
Result<Open> DecodeOpen(std::span<const std::byte> body);
// Writes whichever of target, src and classification are present.
std::vector<std::byte> EncodeOpenOk(const OpenOk& m);
// `direction` is the one the initiator sent in OPEN: a push requires target, a pull requires src and
// classification.
Result<OpenOk> DecodeOpenOk(std::span<const std::byte> body, Direction direction);
std::vector<std::byte> EncodeChannels(const Channels& m);
// `streams` is the session's: the count of addresses must match.
Result<Channels> DecodeChannels(std::span<const std::byte> body, uint32_t streams);
std::vector<std::byte> EncodeStart(const Start& m);
Result<Start> DecodeStart(std::span<const std::byte> body);
std::vector<std::byte> EncodeErrorMsg(const ErrorMsg& m);
Result<ErrorMsg> DecodeErrorMsg(std::span<const std::byte> body);
std::vector<std::byte> EncodeEnd(const End& m);
Result<End> DecodeEnd(std::span<const std::byte> body);
std::vector<std::byte> EncodeSummary(const Summary& m);
Result<Summary> DecodeSummary(std::span<const std::byte> body);
std::vector<std::byte> EncodeCancel(const Cancel& m);
Result<Cancel> DecodeCancel(std::span<const std::byte> body);
std::vector<std::byte> EncodeKeepalive(const Keepalive& m);
Result<Keepalive> DecodeKeepalive(std::span<const std::byte> body);

}  // namespace pororoca::proto
