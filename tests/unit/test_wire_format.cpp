// The wire format: encode/decode round trips and every rejection path, on the host.
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "comm/wire_format.h"

namespace asgd {
namespace {

constexpr ModelFingerprint kModel{269322, 0x9E3779B97F4A7C15ull};

WireHeader sample_header() {
  WireHeader h;
  h.kind = FrameKind::kState;
  h.model = kModel;
  h.sender = 3;
  h.sender_step = 123456789012;
  h.send_time_s = 98765.4321;
  h.offset = 1000;
  h.length = 5000;
  h.payload_checksum = 0x0123456789ABCDEFull;
  return h;
}

WireError decode(const EncodedHeader& b, int source, WireHeader* out = nullptr) {
  WireHeader h;
  const WireError e = decode_header(b.data(), b.size(), kModel, source, h);
  if (out) *out = h;
  return e;
}

TEST(WireFormat, RoundTripKeepsEveryField) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    WireHeader h = sample_header();
    h.sender = static_cast<std::int32_t>(rng() % 1000);
    h.sender_step = static_cast<std::int64_t>(rng() >> 2);
    h.send_time_s = std::uniform_real_distribution<double>(0, 1e7)(rng);
    h.offset = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(kModel.parameters));
    h.length = 1 + static_cast<std::int64_t>(
                       rng() % static_cast<std::uint64_t>(kModel.parameters - h.offset));
    h.payload_checksum = rng();
    h.flags = 0;
    WireHeader d;
    ASSERT_EQ(decode(encode_header(h), h.sender, &d), WireError::kNone);
    EXPECT_EQ(d.kind, h.kind);
    EXPECT_EQ(d.model, h.model);
    EXPECT_EQ(d.sender, h.sender);
    EXPECT_EQ(d.sender_step, h.sender_step);
    EXPECT_EQ(d.send_time_s, h.send_time_s);
    EXPECT_EQ(d.offset, h.offset);
    EXPECT_EQ(d.length, h.length);
    EXPECT_EQ(d.payload_checksum, h.payload_checksum);
    const MessageHeader m = d.message_header();
    EXPECT_EQ(m.sender, h.sender);
    EXPECT_EQ(m.offset, h.offset);
    EXPECT_EQ(m.length, h.length);
    EXPECT_EQ(m.sender_step, h.sender_step);
  }
}

TEST(WireFormat, LayoutIsLittleEndianAtFixedOffsets) {
  const EncodedHeader b = encode_header(sample_header());
  EXPECT_EQ(std::memcmp(b.data(), "ASGD", 4), 0);
  EXPECT_EQ(static_cast<int>(b[4]), 1);  // version 1, low byte first
  EXPECT_EQ(static_cast<int>(b[5]), 0);
  EXPECT_EQ(static_cast<int>(b[24]), 3);  // sender
  for (int i = 76; i < 80; ++i)
    EXPECT_EQ(static_cast<int>(b[i]), 0) << "reserved byte " << i;
}

TEST(WireFormat, DoneFrameCarriesTheStopFlag) {
  WireHeader h = sample_header();
  h.kind = FrameKind::kDone;
  h.offset = 0;
  h.length = 0;
  h.flags = kFlagStop;
  WireHeader d;
  ASSERT_EQ(decode(encode_header(h), h.sender, &d), WireError::kNone);
  EXPECT_EQ(d.kind, FrameKind::kDone);
  EXPECT_EQ(d.flags, kFlagStop);
  h.length = 4;  // a done frame has no payload
  EXPECT_EQ(decode(encode_header(h), h.sender), WireError::kLengthMismatch);
}

TEST(WireFormat, IdleFrameHasNoPayload) {
  WireHeader h = sample_header();
  h.kind = FrameKind::kIdle;
  h.offset = 0;
  h.length = 0;
  WireHeader d;
  ASSERT_EQ(decode(encode_header(h), h.sender, &d), WireError::kNone);
  EXPECT_EQ(d.kind, FrameKind::kIdle);
  h.length = 1;
  EXPECT_EQ(decode(encode_header(h), h.sender), WireError::kLengthMismatch);
  h.kind = static_cast<FrameKind>(4);  // the kind after the last one
  h.length = 0;
  EXPECT_EQ(decode(encode_header(h), h.sender), WireError::kBadKind);
}

// What a header announces is believed only when the frame itself is intact, whatever else is
// wrong with what it says.
TEST(WireFormat, AnnouncementNeedsOnlyAnIntactFrame) {
  WireHeader h = sample_header();
  EncodedHeader b = encode_header(h);
  Announcement a = read_announcement(b.data(), b.size());
  EXPECT_EQ(a.integrity, WireError::kNone);
  EXPECT_EQ(a.kind, FrameKind::kState);
  EXPECT_EQ(a.length, h.length);
  h.model.layout_hash ^= 1;  // another model: rejected, but the length is what was sent
  h.length = 10 * kModel.parameters;
  b = encode_header(h);
  EXPECT_EQ(decode(b, 3), WireError::kWrongFingerprint);
  EXPECT_EQ(read_announcement(b.data(), b.size()).length, 10 * kModel.parameters);
  h = sample_header();
  h.length = -5;  // out of range, but intact: the receiver must see what was written
  b = encode_header(h);
  EXPECT_EQ(decode(b, 3), WireError::kRangeOutOfBounds);
  a = read_announcement(b.data(), b.size());
  EXPECT_EQ(a.integrity, WireError::kNone);
  EXPECT_EQ(a.length, -5);
  h = sample_header();
  h.kind = FrameKind::kDone;
  h.length = 0;
  h.sender = 7;  // from the wrong rank: still a done frame as far as the rounds go
  b = encode_header(h);
  a = read_announcement(b.data(), b.size());
  EXPECT_EQ(a.integrity, WireError::kNone);
  EXPECT_EQ(a.kind, FrameKind::kDone);
  EXPECT_EQ(a.length, 0);
  b = encode_header(sample_header());
  b[57] ^= std::byte{0x01};  // the length, behind the header checksum's back
  EXPECT_EQ(read_announcement(b.data(), b.size()).integrity, WireError::kHeaderChecksum);
  b = encode_header(sample_header());
  EXPECT_EQ(read_announcement(b.data(), b.size() - 1).integrity, WireError::kTruncated);
  h = sample_header();
  h.kind = static_cast<FrameKind>(9);
  b = encode_header(h);
  EXPECT_EQ(read_announcement(b.data(), b.size()).integrity, WireError::kBadKind);
}

TEST(WireFormat, RejectsWrongSizes) {
  const EncodedHeader b = encode_header(sample_header());
  WireHeader h;
  EXPECT_EQ(decode_header(b.data(), 0, kModel, 3, h), WireError::kTruncated);
  EXPECT_EQ(decode_header(b.data(), kWireHeaderBytes - 1, kModel, 3, h), WireError::kTruncated);
  std::vector<std::byte> longer(b.begin(), b.end());
  longer.push_back(std::byte{0});
  EXPECT_EQ(decode_header(longer.data(), longer.size(), kModel, 3, h), WireError::kTruncated);
}

TEST(WireFormat, RejectsBadMagicAndVersion) {
  EncodedHeader b = encode_header(sample_header());
  b[0] = std::byte{'X'};
  EXPECT_EQ(decode(b, 3), WireError::kBadMagic);
  b = encode_header(sample_header());
  b[4] = std::byte{2};
  EXPECT_EQ(decode(b, 3), WireError::kBadVersion);
}

TEST(WireFormat, RejectsFieldsTheEncoderWouldNeverWrite) {
  WireHeader h = sample_header();
  h.kind = static_cast<FrameKind>(7);
  EXPECT_EQ(decode(encode_header(h), 3), WireError::kBadKind);
  h = sample_header();
  h.element_type = static_cast<ElementType>(2);
  EXPECT_EQ(decode(encode_header(h), 3), WireError::kBadKind);
  h = sample_header();
  h.flags = 0x8;
  EXPECT_EQ(decode(encode_header(h), 3), WireError::kBadKind);
}

TEST(WireFormat, RejectsAnotherModel) {
  WireHeader h = sample_header();
  h.model.parameters += 1;
  EXPECT_EQ(decode(encode_header(h), 3), WireError::kWrongFingerprint);
  h = sample_header();
  h.model.layout_hash ^= 1;
  EXPECT_EQ(decode(encode_header(h), 3), WireError::kWrongFingerprint);
}

TEST(WireFormat, RejectsASenderThatIsNotTheSource) {
  EXPECT_EQ(decode(encode_header(sample_header()), 2), WireError::kBadSender);
}

TEST(WireFormat, RejectsRangesOutsideTheState) {
  const std::int64_t n = kModel.parameters;
  const std::int64_t big = std::numeric_limits<std::int64_t>::max();
  const std::pair<std::int64_t, std::int64_t> bad[] = {
      {-1, 10}, {0, 0}, {0, -5}, {n, 1}, {n - 10, 11}, {1, n}, {big, 1}, {1, big}, {big, big}};
  for (auto [offset, length] : bad) {
    WireHeader h = sample_header();
    h.offset = offset;
    h.length = length;
    EXPECT_EQ(decode(encode_header(h), 3), WireError::kRangeOutOfBounds)
        << "offset " << offset << " length " << length;
  }
  WireHeader h = sample_header();
  h.offset = n - 10;
  h.length = 10;  // exactly the tail
  EXPECT_EQ(decode(encode_header(h), 3), WireError::kNone);
  h.offset = 0;
  h.length = n;  // the whole state
  EXPECT_EQ(decode(encode_header(h), 3), WireError::kNone);
}

// The header checksum catches every single-bit corruption: no flipped bit anywhere in the
// 80 bytes leaves a header that decodes.
TEST(WireFormat, EverySingleBitFlipIsRejected) {
  const EncodedHeader good = encode_header(sample_header());
  for (std::size_t bit = 0; bit < kWireHeaderBytes * 8; ++bit) {
    EncodedHeader b = good;
    b[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    EXPECT_NE(decode(b, 3), WireError::kNone) << "bit " << bit;
  }
}

TEST(WireFormat, PlausibleButCorruptedFieldsFailTheHeaderChecksum) {
  // Changing the offset's low byte keeps the range in bounds; only the checksum notices.
  EncodedHeader b = encode_header(sample_header());
  b[48] ^= std::byte{0x01};
  EXPECT_EQ(decode(b, 3), WireError::kHeaderChecksum);
}

TEST(WireFormat, ErrorNamesAreDistinct) {
  for (int i = 0; i < kWireErrorCount; ++i)
    for (int j = i + 1; j < kWireErrorCount; ++j)
      EXPECT_NE(to_string(static_cast<WireError>(i)), to_string(static_cast<WireError>(j)));
}

std::vector<float> random_payload(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v)
    x = d(rng);
  return v;
}

TEST(PayloadHasher, PiecesEqualTheWhole) {
  const std::vector<float> v = random_payload(300001, 1);
  const std::size_t bytes = v.size() * sizeof(float);
  const std::uint64_t whole = payload_checksum(v.data(), bytes);
  std::mt19937 rng(2);
  for (int trial = 0; trial < 5; ++trial) {
    PayloadHasher h;
    std::size_t done = 0;
    while (done < bytes) {
      const std::size_t n = std::min<std::size_t>(bytes - done, 1 + rng() % 200000);
      h.update(reinterpret_cast<const char*>(v.data()) + done, n);
      done += n;
    }
    EXPECT_EQ(h.digest(), whole);
  }
}

TEST(PayloadHasher, CopyAndUpdateCopiesExactlyAndHashesTheSame) {
  for (std::size_t n :
       {std::size_t{1}, std::size_t{16383}, std::size_t{16384}, std::size_t{1000003}}) {
    const std::vector<float> src = random_payload(n, static_cast<unsigned>(n));
    std::vector<float> dst(n + 1, -7.0f);
    PayloadHasher h;
    h.copy_and_update(dst.data(), src.data(), n * sizeof(float));
    EXPECT_EQ(std::memcmp(dst.data(), src.data(), n * sizeof(float)), 0);
    EXPECT_EQ(dst[n], -7.0f);  // nothing written past the end
    EXPECT_EQ(h.digest(), payload_checksum(src.data(), n * sizeof(float)));
    h.reset();
    h.update(src.data(), n * sizeof(float));
    EXPECT_EQ(h.digest(), payload_checksum(src.data(), n * sizeof(float)));
  }
}

TEST(PayloadHasher, DetectsAnySingleBitFlipInAPayload) {
  std::vector<float> v = random_payload(4096, 3);
  const std::size_t bytes = v.size() * sizeof(float);
  const std::uint64_t good = payload_checksum(v.data(), bytes);
  auto* raw = reinterpret_cast<unsigned char*>(v.data());
  for (std::size_t bit = 0; bit < bytes * 8; bit += 97) {
    raw[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    EXPECT_NE(payload_checksum(v.data(), bytes), good) << "bit " << bit;
    raw[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace asgd
