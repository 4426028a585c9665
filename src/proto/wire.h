// The pororoca wire protocol (version 1): control messages on the TLS control channel, chunk
// messages on data channels and the bind handshake that ties a data connection to its control
// session. docs/protocol.md gives the grammar; this file is its single source in code.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pororoca/checksum.h"
#include "pororoca/status.h"

namespace pororoca::proto {

// 2: protection levels (OPEN.protection, OPEN_OK.protection, START, sealed chunk messages).
inline constexpr uint16_t kProtocolVersion = 2;
inline constexpr size_t kMaxControlFrame = 64u << 20;
inline constexpr size_t kMaxPathBytes = 4096;

// ---- control channel -------------------------------------------------------------------------
// frame := length:u32le type:u8 body[length-1]
enum class MsgType : uint8_t {
  kHello = 1,     // json {proto, endpoint, software}
  kOpen = 2,      // json: transfer request (initiator -> responder)
  kOpenOk = 3,    // json: accepted, with session facts
  kError = 4,     // json {code, message}: fatal for the session
  kFiles = 5,     // binary: batch of FileEntry (sender -> receiver)
  kPlan = 6,      // binary: batch of PlanEntry (receiver -> sender)
  kFileEnd = 7,   // binary: file digest after the last chunk (sender -> receiver)
  kFileDone = 8,  // binary: file committed or failed (receiver -> sender)
  kBadChunk = 9,  // binary: chunk failed verification, send again (receiver -> sender)
  kEnd = 10,      // json: sender has nothing more (sender -> receiver)
  kSummary = 11,  // json: receiver's final account (receiver -> sender)
  kCancel = 12,   // json {reason}
  kKeepalive = 13,
  kStart = 14,        // json {protection}: the level in force (initiator -> responder), before the binds
  kChannels = 15,     // json {transport, addresses}: the receiving end's data channels (not on tcp)
  kQueryResult = 16,  // json: the answer to an OPEN with a query (responder -> initiator); the session ends
  kUnknown = 255,
};

struct ControlFrame {
  MsgType type = MsgType::kUnknown;
  std::vector<std::byte> body;
};

std::vector<std::byte> EncodeControlFrame(MsgType type, std::span<const std::byte> body);
std::vector<std::byte> EncodeJsonFrame(MsgType type, const nlohmann::json& j);
// Parses a JSON body; kProtocol if it is not a JSON object.
Result<nlohmann::json> DecodeJsonBody(const ControlFrame& f);

// kHardLink (only with OPEN.options.hard_links): a regular file whose inode an earlier entry of the
// transfer has (same device and inode at the source); link_target is that entry's path inside the
// transfer. No data is sent for it; the receiver makes it a hard link of that file.
enum class EntryType : uint8_t { kFile = 0, kDir = 1, kSymlink = 2, kHardLink = 3 };

struct FileEntry {
  uint64_t id = 0;
  EntryType type = EntryType::kFile;
  std::string path;  // relative to the transfer root, '/'-separated, "" = the root itself
  uint64_t size = 0;
  uint32_t mode = 0;  // permission bits (07777)
  int64_t mtime_ns = 0;
  std::string link_target;  // symlinks only
};

enum class PlanAction : uint8_t {
  kSendAll = 0,  // receiver has nothing of it
  kSkip = 1,     // identical already (--sync) or existing and --skip-existing
  kFail = 2,     // cannot be written (reason in message); the transfer goes on with others
  kResume = 3,   // receiver holds the listed chunks durably; send the others
  kDone = 4,     // entry fully handled at plan time (directory, symlink, empty file)
};

struct PlanEntry {
  uint64_t id = 0;
  PlanAction action = PlanAction::kSendAll;
  Code code = Code::kOk;                             // kFail only
  std::string message;                               // kFail only
  std::vector<std::pair<uint64_t, Digest128>> have;  // kResume only: chunk index -> digest
};

struct FileEnd {
  uint64_t id = 0;
  uint64_t chunks = 0;
  Digest128 digest;
  Code code = Code::kOk;  // not kOk: the sender could not read the file (message says why)
  std::string message;
  // Chunk messages (data and hole) the sender put on the channels for this file in this session,
  // re-sends after BAD_CHUNK not counted. The receiver commits only after that many verified
  // arrivals, so a chunk still in flight (e.g. replacing a stale resumed one) is never missed.
  uint64_t sent = 0;
};

struct FileDone {
  uint64_t id = 0;
  Code code = Code::kOk;
  std::string message;
  // The failure is worth another attempt of the transfer (a chunk that kept failing verification on
  // a bad path); the initiator retries a transfer whose failed files are all retryable.
  bool retryable = false;
};

// The receiver asks for [offset, offset + length) of chunk `index` again: the whole chunk, or one
// piece of it. `stream` is the data channel the bad copy came on (the sender prefers another one);
// kBadChunkPieces asks for the whole chunk in pieces (the receiver has set a buffer aside to gather them).
inline constexpr uint8_t kBadChunkPieces = 1;
struct BadChunk {
  uint64_t id = 0;
  uint64_t index = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint16_t stream = 0;
  uint8_t flags = 0;
};

std::vector<std::byte> EncodeFiles(const std::vector<FileEntry>& entries);
Result<std::vector<FileEntry>> DecodeFiles(std::span<const std::byte> body);
std::vector<std::byte> EncodePlan(const std::vector<PlanEntry>& entries);
Result<std::vector<PlanEntry>> DecodePlan(std::span<const std::byte> body);
std::vector<std::byte> EncodeFileEnds(const std::vector<FileEnd>& v);
Result<std::vector<FileEnd>> DecodeFileEnds(std::span<const std::byte> body);
std::vector<std::byte> EncodeFileDones(const std::vector<FileDone>& v);
Result<std::vector<FileDone>> DecodeFileDones(std::span<const std::byte> body);
std::vector<std::byte> EncodeBadChunk(const BadChunk& b);
Result<BadChunk> DecodeBadChunk(std::span<const std::byte> body);

// Checks a relative path from the peer: no "..", no "." or empty components, no leading '/',
// no NUL, at most kMaxPathBytes. "" (the root) is valid.
Status ValidateRelativePath(std::string_view path);

// ---- data channels ---------------------------------------------------------------------------
// Each data message is (ChunkHeader, payload) on a transport::MessageChannel.
enum class ChunkKind : uint8_t {
  kData = 1,  // payload = the chunk's bytes
  kHole = 2,  // the chunk reads as zeros (sparse); no payload, digest of `length` zero bytes
  kEos = 3,   // end of stream: the sender will send nothing more on this channel
  // One piece of a chunk sent again in pieces (BAD_CHUNK with kBadChunkPieces): offset and length are
  // the piece's, index the chunk's, digest PieceDigest() of the piece.
  kPiece = 4,
};

// A chunk sent again in pieces is cut at multiples of kPieceSize from its start; only chunks longer
// than one piece are.
inline constexpr uint32_t kPieceSize = 256u << 10;
// A piece's digest: its XXH3-128 with the file id and the piece's offset folded in, so a piece that
// lands at another offset or in another file (a damaged header) fails verification.
Digest128 PieceDigest(std::span<const std::byte> data, uint64_t file_id, uint64_t offset);

inline constexpr size_t kChunkHeaderSize = 48;
// At the integrity and private levels every data-channel message is sealed (crypto::ChunkSeal): the
// header's first kChunkHeaderClear bytes are authenticated, its digest (the rest) and the payload
// are authenticated (integrity) or encrypted (private), and the 16-byte tag follows the header.
inline constexpr size_t kChunkHeaderClear = 32;
inline constexpr size_t kChunkTagSize = 16;
inline constexpr size_t kSealedChunkHeaderSize = kChunkHeaderSize + kChunkTagSize;

struct ChunkHeader {
  ChunkKind kind = ChunkKind::kData;
  uint64_t file_id = 0;
  uint64_t index = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  Digest128 digest;
};

void EncodeChunkHeader(const ChunkHeader& h, std::span<std::byte, kChunkHeaderSize> out);
Result<ChunkHeader> DecodeChunkHeader(std::span<const std::byte> in);

// ---- bind handshake (first bytes of a data connection) ---------------------------------------
// bind  := "PORD" version:u16 stream:u16 session:16 nonce:16 mac:32       (86 bytes)
// reply := "PORA" status:u8 pad:3 mac:32                                   (40 bytes)
// mac (bind)  = HMAC-SHA256(K, "pororoca-bind" || session || stream:u16 || nonce)
// mac (reply) = HMAC-SHA256(K, "pororoca-bind-ok" || session || stream:u16 || nonce)
// K = TLS exporter of the control session, label kBindExporterLabel, 32 bytes.
inline constexpr char kBindExporterLabel[] = "EXPORTER-pororoca-data-bind";
// The key of the data-channel seals, 32 bytes: this label, "-", and the level ("integrity",
// "private"), so a key serves one level only.
inline constexpr char kSealExporterLabel[] = "EXPORTER-pororoca-data-seal";
inline constexpr size_t kBindSize = 86;
inline constexpr size_t kBindReplySize = 40;
using SessionId = std::array<std::byte, 16>;
using Nonce = std::array<std::byte, 16>;
using Mac = std::array<std::byte, 32>;

struct BindRequest {
  uint16_t version = kProtocolVersion;
  uint16_t stream = 0;
  SessionId session{};
  Nonce nonce{};
  Mac mac{};
};

Mac BindMac(std::span<const std::byte> key, bool reply, const SessionId& session, uint16_t stream,
            const Nonce& nonce);
// The tag of stream `stream`'s messages on a tag-matching transport (UCX, libfabric): the first 8
// bytes of HMAC-SHA256(K, "pororoca-tag" || session || stream:u16 || 16 zero bytes), low bit clear
// (the backend uses it to tell a header from a payload). Secret to the two ends of the session.
uint64_t DataTag(std::span<const std::byte> key, const SessionId& session, uint16_t stream);
std::array<std::byte, kBindSize> EncodeBind(const BindRequest& b);
Result<BindRequest> DecodeBind(std::span<const std::byte> in);
std::array<std::byte, kBindReplySize> EncodeBindReply(uint8_t status, const Mac& mac);
// Returns the status byte (0 = accepted) and the mac.
Result<std::pair<uint8_t, Mac>> DecodeBindReply(std::span<const std::byte> in);
bool MacEqual(const Mac& a, const Mac& b);  // constant time

std::string HexEncode(std::span<const std::byte> b);
Result<std::vector<std::byte>> HexDecode(std::string_view s);

}  // namespace pororoca::proto
