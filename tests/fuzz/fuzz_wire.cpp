// Fuzzes the message decoder: decode_header over arbitrary bytes from a fixed rank for a
// receiver holding a fixed model, then, where it accepts, the payload checks a receiver makes
// (length * 4 bytes, XXH3 checksum).
//
// Input: a frame, the 80-byte header and then the payload. Each input is decoded three ways:
// as it is (whole, any length, then split into header and payload), and twice with the
// header's checksum made right (once with the payload checksum as written, once with the
// right one), since random bytes almost never get past a 32-bit checksum.
//
// Oracles: an accepted header re-encodes to the same bytes, names the expected model and
// sender, and has a range inside the model; streaming and one-shot checksums agree.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "comm/wire_format.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace asgd;

// The receiver's model and the rank frames come from (make_seeds.cpp writes the same).
constexpr ModelFingerprint kModel{1000, 0x5eed5eed12345678ull};
constexpr int kSource = 3;

// A field of the wire's little-endian layout, whatever the host's byte order.
template <typename T>
T read_le(const std::uint8_t* bytes) {
  std::uint64_t bits = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    bits |= std::uint64_t{bytes[i]} << (8 * i);
  if constexpr (sizeof(T) == sizeof(bits)) {
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
  } else {
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(bits));
  }
}

// Decodes `header` (any length) and, on success, checks `payload` as a receiver does.
// Returns whether the whole frame is accepted.
bool receive(const std::uint8_t* header, std::size_t header_size, const std::uint8_t* payload,
             std::size_t payload_size) {
  WireHeader h;
  const WireError e =
      decode_header(reinterpret_cast<const std::byte*>(header), header_size, kModel, kSource, h);
  ASGD_FUZZ_EXPECT(static_cast<int>(e) < kWireErrorCount);
  ASGD_FUZZ_EXPECT(!to_string(e).empty());
  if (e != WireError::kNone) return false;

  ASGD_FUZZ_EXPECT(header_size == kWireHeaderBytes);
  const EncodedHeader again = encode_header(h);
  ASGD_FUZZ_EXPECT(std::memcmp(again.data(), header, kWireHeaderBytes) == 0);
  ASGD_FUZZ_EXPECT(h.model == kModel && h.sender == kSource);
  ASGD_FUZZ_EXPECT((h.flags & ~kFlagStop) == 0);
  if (h.kind == FrameKind::kDone || h.kind == FrameKind::kIdle) {
    ASGD_FUZZ_EXPECT(h.length == 0);
    return payload_size == 0;
  }
  ASGD_FUZZ_EXPECT(h.kind == FrameKind::kState);
  ASGD_FUZZ_EXPECT(h.offset >= 0 && h.offset < kModel.parameters);
  ASGD_FUZZ_EXPECT(h.length >= 1 && h.length <= kModel.parameters - h.offset);
  const MessageHeader m = h.message_header();
  ASGD_FUZZ_EXPECT(m.offset == h.offset && m.length == h.length && m.sender == h.sender);

  if (static_cast<std::uint64_t>(h.payload_bytes()) != payload_size) return false;
  PayloadHasher hasher;
  for (std::size_t done = 0; done < payload_size;) {  // in uneven pieces, as chunks arrive
    const std::size_t piece = std::min<std::size_t>(payload_size - done, 1 + done % 7 * 13);
    hasher.update(payload + done, piece);
    done += piece;
  }
  const std::uint64_t checksum = payload_checksum(payload, payload_size);
  ASGD_FUZZ_EXPECT(hasher.digest() == checksum);
  std::vector<std::uint8_t> copy(payload_size);
  hasher.reset();
  hasher.copy_and_update(copy.data(), payload, payload_size);
  ASGD_FUZZ_EXPECT(hasher.digest() == checksum);
  ASGD_FUZZ_EXPECT(payload_size == 0 || std::memcmp(copy.data(), payload, payload_size) == 0);
  return checksum == h.payload_checksum;
}

// The input's header fields with the header checksum recomputed by encode_header; the
// reserved bytes after the checksum are kept as they were. Magic and version are written
// right, since decode_header rejects wrong ones before it looks at the checksum.
EncodedHeader repair(const std::uint8_t* b, bool fix_payload_checksum, const std::uint8_t* payload,
                     std::size_t payload_size) {
  WireHeader h;
  h.kind = static_cast<FrameKind>(read_le<std::uint16_t>(b + 6));
  h.model.parameters = read_le<std::int64_t>(b + 8);
  h.model.layout_hash = read_le<std::uint64_t>(b + 16);
  h.sender = read_le<std::int32_t>(b + 24);
  h.element_type = static_cast<ElementType>(read_le<std::uint16_t>(b + 28));
  h.flags = read_le<std::uint16_t>(b + 30);
  h.sender_step = read_le<std::int64_t>(b + 32);
  h.send_time_s = read_le<double>(b + 40);
  h.offset = read_le<std::int64_t>(b + 48);
  h.length = read_le<std::int64_t>(b + 56);
  h.payload_checksum = fix_payload_checksum ? payload_checksum(payload, payload_size)
                                            : read_le<std::uint64_t>(b + 64);
  EncodedHeader out = encode_header(h);
  std::memcpy(out.data() + 76, b + 76, 4);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  receive(data, size, nullptr, 0);
  if (size < kWireHeaderBytes) return 0;
  const std::uint8_t* payload = data + kWireHeaderBytes;
  const std::size_t payload_size = size - kWireHeaderBytes;
  receive(data, kWireHeaderBytes, payload, payload_size);

  const EncodedHeader written = repair(data, false, payload, payload_size);
  const bool accepted = receive(reinterpret_cast<const std::uint8_t*>(written.data()),
                                kWireHeaderBytes, payload, payload_size);
  const EncodedHeader right = repair(data, true, payload, payload_size);
  const bool accepted_right = receive(reinterpret_cast<const std::uint8_t*>(right.data()),
                                      kWireHeaderBytes, payload, payload_size);
  // A frame that passes with the checksum it carries passes with the right one.
  ASGD_FUZZ_EXPECT(!accepted || accepted_right);
  return 0;
}
