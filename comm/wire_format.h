// The wire format of messages between processes: a fixed 80-byte header followed by the
// payload. All fields are little-endian at fixed offsets, so the encoding does not depend on
// the compiler's struct layout.
//
//   offset  size  field
//        0     4  magic "ASGD"
//        4     2  format version (kWireVersion)
//        6     2  kind (FrameKind)
//        8     8  model fingerprint: parameter count
//       16     8  model fingerprint: layout hash (Model::fingerprint())
//       24     4  sender rank
//       28     2  element type (1 = float32)
//       30     2  flags (kFlagStop on a done frame: the receiver should stop training)
//       32     8  sender step
//       40     8  send time, seconds on the sender's steady clock (float64)
//       48     8  range offset, elements
//       56     8  range length, elements
//       64     8  payload checksum: XXH3-64 of the payload bytes
//       72     4  header checksum: XXH32 of bytes 0..72, so that a corrupted header is caught
//                 even where every field still looks plausible
//       76     4  reserved, zero
//
// A receiver runs decode_header() on the header, then checks the payload's length and
// checksum (PayloadHasher) before anything reaches a model. Every rejection has a reason
// (WireError) that the transport counts.
//
// Thread-safety: free functions are pure; a PayloadHasher is used by one thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "comm/message.h"

namespace asgd {

inline constexpr std::uint32_t kWireMagic = 0x44475341u;  // "ASGD" read as little-endian
inline constexpr std::uint16_t kWireVersion = 1;
inline constexpr std::size_t kWireHeaderBytes = 80;
inline constexpr std::uint16_t kFlagStop = 0x1;

enum class FrameKind : std::uint16_t {
  kState = 1,  // a range of the sender's state; the payload follows
  kDone = 2,   // the sender sends nothing more (kFlagStop: and asks everyone to stop)
  kIdle = 3,   // nothing for the receiver in this round (the NCCL transport's rounds only)
};

enum class ElementType : std::uint16_t { kFloat32 = 1 };

// What a receiver requires of every message: the same model.
struct ModelFingerprint {
  std::int64_t parameters = 0;
  std::uint64_t layout_hash = 0;
  bool operator==(const ModelFingerprint& o) const {
    return parameters == o.parameters && layout_hash == o.layout_hash;
  }
  bool operator!=(const ModelFingerprint& o) const { return !(*this == o); }
};

struct WireHeader {
  FrameKind kind = FrameKind::kState;
  ModelFingerprint model;
  std::int32_t sender = -1;
  ElementType element_type = ElementType::kFloat32;
  std::uint16_t flags = 0;
  std::int64_t sender_step = 0;
  double send_time_s = 0;
  std::int64_t offset = 0;
  std::int64_t length = 0;
  std::uint64_t payload_checksum = 0;

  std::int64_t payload_bytes() const { return length * 4; }
  MessageHeader message_header() const;
};

using EncodedHeader = std::array<std::byte, kWireHeaderBytes>;

// Why a received frame was rejected. kNone: accepted.
enum class WireError : std::uint8_t {
  kNone = 0,
  kTruncated,  // the header frame is not kWireHeaderBytes long
  kBadMagic,
  kBadVersion,
  kHeaderChecksum,    // the header's own checksum does not match its bytes
  kBadKind,           // unknown frame kind or element type, or reserved bits set
  kWrongFingerprint,  // a different model (parameter count or layout)
  kBadSender,         // the sender field is not the rank the frame came from
  kRangeOutOfBounds,  // offset/length outside the receiver's state
  kLengthMismatch,    // the payload is not length * 4 bytes
  kChecksumMismatch,  // the payload's bytes do not match the header's checksum
  kStale,             // not newer than a message already taken from that sender (a replay)
  kCount
};
inline constexpr int kWireErrorCount = static_cast<int>(WireError::kCount);
std::string_view to_string(WireError e);

// The ways a sender can be made to damage what it sends, for reliability experiments
// (--fault; the MPI transport injects them, see comm/mpi/mpi_transport.h).
enum class WireFaultKind {
  kNone,
  kCorrupt,
  kForgeOffset,
  kForgeLength,
  kForgeFingerprint,
  kReplay
};
std::string_view to_string(WireFaultKind kind);  // "corrupt", "forge-offset", ...
// The kind of that name; kNone for any other name (and for "none").
WireFaultKind wire_fault_named(std::string_view name);

EncodedHeader encode_header(const WireHeader& header);

// Decodes and validates a header that arrived from rank `source`, for a receiver holding
// `expected`. `bytes` is what arrived (any length). On kNone, `out` holds the header; the
// payload's length and checksum are still to be checked.
WireError decode_header(const std::byte* bytes, std::size_t size, const ModelFingerprint& expected,
                        int source, WireHeader& out);

// What a header frame announces, believed as soon as the frame's integrity holds (its size,
// magic, version, header checksum and kind: what it says is what its sender wrote), whatever
// else is wrong with it. For a protocol that must stay in step with a sender whose frame it
// rejects for what it says (a wrong model, a stale step), taking the announced payload off the
// wire and dropping it: comm/nccl/round_transport.h.
struct Announcement {
  WireError integrity = WireError::kNone;  // kind and length hold only when this is kNone
  FrameKind kind = FrameKind::kState;
  std::int64_t length = 0;  // payload elements that follow: a kState frame's length as
                            // written (possibly out of range), 0 for the other kinds
};
Announcement read_announcement(const std::byte* bytes, std::size_t size);

// The payload checksum, fed in pieces (XXH3-64 streaming: the same value as one call over
// the whole payload).
class PayloadHasher {
 public:
  PayloadHasher();
  ~PayloadHasher();
  PayloadHasher(const PayloadHasher&) = delete;
  PayloadHasher& operator=(const PayloadHasher&) = delete;

  void reset();
  void update(const void* data, std::size_t bytes);
  std::uint64_t digest() const;

  // Copies `bytes` from src to dst and hashes them in the same pass (block by block while the
  // block is in cache), so a checksum costs little more than the copy.
  void copy_and_update(void* dst, const void* src, std::size_t bytes);

 private:
  void* state_;  // XXH3_state_t
};

// One call over a whole payload.
std::uint64_t payload_checksum(const void* data, std::size_t bytes);

}  // namespace asgd
