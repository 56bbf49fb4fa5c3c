#include "comm/wire_format.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>

#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
// libxxhash's runtime dispatch: XXH3 with AVX2 or AVX-512 where the CPU has them (2-4x the
// SSE2 baseline on cached data), same hash values everywhere.
#include <xxh_x86dispatch.h>
#endif

namespace asgd {
namespace {

template <typename T>
void put(EncodedHeader& b, std::size_t at, T value) {
  static_assert(std::is_trivially_copyable_v<T>);
  unsigned char raw[sizeof(T)];
  std::memcpy(raw, &value, sizeof(T));
  // Little-endian on the wire whatever the host is.
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    const std::size_t k = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) ? i : sizeof(T) - 1 - i;
    b[at + i] = static_cast<std::byte>(raw[k]);
  }
}

template <typename T>
T get(const std::byte* b, std::size_t at) {
  unsigned char raw[sizeof(T)];
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    const std::size_t k = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) ? i : sizeof(T) - 1 - i;
    raw[k] = static_cast<unsigned char>(b[at + i]);
  }
  T value;
  std::memcpy(&value, raw, sizeof(T));
  return value;
}

constexpr std::size_t kHeaderCheckAt = 72;
constexpr std::size_t kCopyBlock = 64 * 1024;  // fits L2 with room: hashed while still hot

std::uint32_t header_check(const std::byte* b) {
  return XXH32(b, kHeaderCheckAt, 0x41534744u);
}

}  // namespace

std::string_view to_string(WireFaultKind kind) {
  switch (kind) {
    case WireFaultKind::kNone:
      return "none";
    case WireFaultKind::kCorrupt:
      return "corrupt";
    case WireFaultKind::kForgeOffset:
      return "forge-offset";
    case WireFaultKind::kForgeLength:
      return "forge-length";
    case WireFaultKind::kForgeFingerprint:
      return "forge-fingerprint";
    case WireFaultKind::kReplay:
      return "replay";
  }
  return "unknown";
}

WireFaultKind wire_fault_named(std::string_view name) {
  for (const WireFaultKind kind :
       {WireFaultKind::kCorrupt, WireFaultKind::kForgeOffset, WireFaultKind::kForgeLength,
        WireFaultKind::kForgeFingerprint, WireFaultKind::kReplay})
    if (name == to_string(kind)) return kind;
  return WireFaultKind::kNone;
}

std::string_view to_string(WireError e) {
  switch (e) {
    case WireError::kNone:
      return "ok";
    case WireError::kTruncated:
      return "truncated";
    case WireError::kBadMagic:
      return "bad-magic";
    case WireError::kBadVersion:
      return "bad-version";
    case WireError::kHeaderChecksum:
      return "header-checksum";
    case WireError::kBadKind:
      return "bad-kind";
    case WireError::kWrongFingerprint:
      return "wrong-fingerprint";
    case WireError::kBadSender:
      return "bad-sender";
    case WireError::kRangeOutOfBounds:
      return "range-out-of-bounds";
    case WireError::kLengthMismatch:
      return "length-mismatch";
    case WireError::kChecksumMismatch:
      return "checksum-mismatch";
    case WireError::kStale:
      return "stale";
    case WireError::kCount:
      break;
  }
  return "unknown";
}

MessageHeader WireHeader::message_header() const {
  MessageHeader h;
  h.sender = sender;
  h.sender_step = sender_step;
  h.offset = offset;
  h.length = length;
  h.send_time_s = send_time_s;
  return h;
}

EncodedHeader encode_header(const WireHeader& h) {
  EncodedHeader b{};
  put<std::uint32_t>(b, 0, kWireMagic);
  put<std::uint16_t>(b, 4, kWireVersion);
  put<std::uint16_t>(b, 6, static_cast<std::uint16_t>(h.kind));
  put<std::int64_t>(b, 8, h.model.parameters);
  put<std::uint64_t>(b, 16, h.model.layout_hash);
  put<std::int32_t>(b, 24, h.sender);
  put<std::uint16_t>(b, 28, static_cast<std::uint16_t>(h.element_type));
  put<std::uint16_t>(b, 30, h.flags);
  put<std::int64_t>(b, 32, h.sender_step);
  put<double>(b, 40, h.send_time_s);
  put<std::int64_t>(b, 48, h.offset);
  put<std::int64_t>(b, 56, h.length);
  put<std::uint64_t>(b, 64, h.payload_checksum);
  put<std::uint32_t>(b, kHeaderCheckAt, header_check(b.data()));
  return b;
}

namespace {
// The checks before any field is believed: the frame is whole and written by this format.
WireError check_integrity(const std::byte* b, std::size_t size) {
  if (size != kWireHeaderBytes) return WireError::kTruncated;
  if (get<std::uint32_t>(b, 0) != kWireMagic) return WireError::kBadMagic;
  if (get<std::uint16_t>(b, 4) != kWireVersion) return WireError::kBadVersion;
  if (get<std::uint32_t>(b, kHeaderCheckAt) != header_check(b)) return WireError::kHeaderChecksum;
  const auto kind = get<std::uint16_t>(b, 6);
  if (kind < static_cast<std::uint16_t>(FrameKind::kState) ||
      kind > static_cast<std::uint16_t>(FrameKind::kIdle))
    return WireError::kBadKind;
  return WireError::kNone;
}
}  // namespace

Announcement read_announcement(const std::byte* b, std::size_t size) {
  Announcement a;
  a.integrity = check_integrity(b, size);
  if (a.integrity != WireError::kNone) return a;
  a.kind = static_cast<FrameKind>(get<std::uint16_t>(b, 6));
  a.length = a.kind == FrameKind::kState ? get<std::int64_t>(b, 56) : 0;
  return a;
}

WireError decode_header(const std::byte* b, std::size_t size, const ModelFingerprint& expected,
                        int source, WireHeader& out) {
  if (const WireError e = check_integrity(b, size); e != WireError::kNone) return e;
  WireHeader h;
  const auto kind = get<std::uint16_t>(b, 6);
  h.kind = static_cast<FrameKind>(kind);
  if (get<std::uint16_t>(b, 28) != static_cast<std::uint16_t>(ElementType::kFloat32))
    return WireError::kBadKind;
  h.flags = get<std::uint16_t>(b, 30);
  if ((h.flags & ~kFlagStop) != 0 || get<std::uint32_t>(b, 76) != 0) return WireError::kBadKind;
  h.model.parameters = get<std::int64_t>(b, 8);
  h.model.layout_hash = get<std::uint64_t>(b, 16);
  if (h.model != expected) return WireError::kWrongFingerprint;
  h.sender = get<std::int32_t>(b, 24);
  if (h.sender != source) return WireError::kBadSender;
  h.sender_step = get<std::int64_t>(b, 32);
  h.send_time_s = get<double>(b, 40);
  h.offset = get<std::int64_t>(b, 48);
  h.length = get<std::int64_t>(b, 56);
  h.payload_checksum = get<std::uint64_t>(b, 64);
  if (h.kind == FrameKind::kState) {
    // Written so that no sum can overflow: 0 <= offset < n, 1 <= length <= n - offset.
    if (h.offset < 0 || h.offset >= expected.parameters || h.length < 1 ||
        h.length > expected.parameters - h.offset)
      return WireError::kRangeOutOfBounds;
  } else if (h.length != 0) {
    return WireError::kLengthMismatch;
  }
  out = h;
  return WireError::kNone;
}

PayloadHasher::PayloadHasher() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  reset();
}

PayloadHasher::~PayloadHasher() {
  XXH3_freeState(static_cast<XXH3_state_t*>(state_));
}

void PayloadHasher::reset() {
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_));
}

void PayloadHasher::update(const void* data, std::size_t bytes) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, bytes);
}

std::uint64_t PayloadHasher::digest() const {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_));
}

void PayloadHasher::copy_and_update(void* dst, const void* src, std::size_t bytes) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  for (std::size_t done = 0; done < bytes; done += kCopyBlock) {
    const std::size_t n = std::min(kCopyBlock, bytes - done);
    std::memcpy(d + done, s + done, n);
    update(d + done, n);
  }
}

std::uint64_t payload_checksum(const void* data, std::size_t bytes) {
  return XXH3_64bits(data, bytes);
}

}  // namespace asgd
