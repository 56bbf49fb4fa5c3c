// The MPI transport between real ranks (run under mpirun with 2 or 4 ranks): every rejection
// path of the wire format as it arrives over MPI, slot semantics (latest wins, consume once),
// exact message accounting, the start-up model check, and link emulation. Each test is
// collective: every rank builds the transport and finishes it.
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "comm/mpi/mpi_session.h"
#include "comm/mpi/mpi_transport.h"
#include "runtime/distributed.h"

namespace asgd {
namespace {

constexpr std::int64_t kParams = 20000;
constexpr ModelFingerprint kModel{kParams, 0xC0FFEE0123456789ull};

MpiTransportOptions options(std::int64_t chunk_bytes = 4096) {
  MpiTransportOptions o;
  o.max_message = kParams;
  o.model = kModel;
  o.chunk_bytes = chunk_bytes;  // small, so that messages travel in several chunks
  o.peer_timeout_s = 30;        // a failing test ends instead of hanging
  return o;
}

MpiSession& session() {
  return MpiSession::get();
}

// Payload of a message from `sender` at `step`: distinct per message and never zero.
std::vector<float> payload(int sender, std::int64_t step, std::int64_t length) {
  std::vector<float> v(static_cast<std::size_t>(length));
  for (std::int64_t i = 0; i < length; ++i)
    v[static_cast<std::size_t>(i)] = static_cast<float>(sender + 1) * 1000.0f +
                                     static_cast<float>(step) + 1e-3f * static_cast<float>(i % 997);
  return v;
}

void wait_for_done(const MpiTransport& t, int peer) {
  // The peer's done frame is the last frame it sends, and frames are processed in order.
  while (!t.peer_done(peer)) {
    t.check();
    std::this_thread::yield();
  }
}

// Raw frames from rank 1 to rank 0 on the transport's communicator, as a forger would send.
struct Forger {
  MPI_Comm comm;
  void header(const EncodedHeader& b, int bytes = static_cast<int>(kWireHeaderBytes)) const {
    ASGD_CHECK_MPI(MPI_Send(b.data(), bytes, MPI_BYTE, 0, MpiTransport::kHeaderTag, comm));
  }
  void chunks(const std::vector<float>& data, std::int64_t chunk_bytes,
              std::int64_t total_bytes) const {
    const auto* bytes = reinterpret_cast<const char*>(data.data());
    for (std::int64_t at = 0; at < total_bytes; at += chunk_bytes) {
      const int n = static_cast<int>(std::min(chunk_bytes, total_bytes - at));
      ASGD_CHECK_MPI(MPI_Send(bytes + at, n, MPI_BYTE, 0, MpiTransport::kChunkTag, comm));
    }
  }
  void message(WireHeader h, const std::vector<float>& data, std::int64_t chunk_bytes) const {
    h.payload_checksum = payload_checksum(data.data(), data.size() * sizeof(float));
    header(encode_header(h));
    chunks(data, chunk_bytes, static_cast<std::int64_t>(data.size() * sizeof(float)));
  }
};

WireHeader valid_header(std::int64_t step, std::int64_t offset, std::int64_t length) {
  WireHeader h;
  h.kind = FrameKind::kState;
  h.model = kModel;
  h.sender = 1;
  h.sender_step = step;
  h.send_time_s = 1.0;
  h.offset = offset;
  h.length = length;
  return h;
}

TEST(MpiTransport, EveryMalformedFrameIsRejectedAndCountedAndNothingReachesTheSlot) {
  const int rank = session().rank();
  MpiTransport t(session(), options());
  constexpr std::int64_t kLength = 3000;  // 12,000 bytes: three chunks of 4,096
  const std::int64_t chunk = options().chunk_bytes;
  if (rank == 1) {
    const Forger f{t.communicator()};
    const std::vector<float> good = payload(1, 10, kLength);
    const std::int64_t good_bytes = kLength * 4;
    auto forged = [&](EncodedHeader b) {
      f.header(b);
      f.chunks(good, chunk, good_bytes);  // chunks after a rejected header are dropped
    };
    WireHeader h = valid_header(5, 100, kLength);
    h.payload_checksum = payload_checksum(good.data(), static_cast<std::size_t>(good_bytes));
    EncodedHeader b = encode_header(h);
    b[0] = std::byte{'X'};
    forged(b);  // bad magic
    b = encode_header(h);
    b[4] = std::byte{9};
    forged(b);  // bad version
    b = encode_header(h);
    b[48] ^= std::byte{0x40};
    forged(b);  // a plausible offset, corrupted: the header checksum catches it
    WireHeader other = h;
    other.model.layout_hash ^= 1;
    forged(encode_header(other));  // another model
    other = h;
    other.sender = 0;
    forged(encode_header(other));  // claims to be rank 0
    other = h;
    other.offset = kParams - 10;
    forged(encode_header(other));  // range past the end of the state
    // A valid header whose payload is one float short: the last chunk has the wrong size.
    f.header(encode_header(h));
    f.chunks(good, chunk, good_bytes - 4);
    // A valid header with a corrupted payload.
    std::vector<float> flipped = good;
    reinterpret_cast<unsigned char*>(flipped.data())[5000] ^= 0x10;
    f.header(encode_header(h));
    f.chunks(flipped, chunk, good_bytes);
    // A truncated header frame.
    f.header(encode_header(h), static_cast<int>(kWireHeaderBytes) - 1);
    f.chunks(good, chunk, good_bytes);
    // A valid message (accepted); a frame with a tag the protocol does not use and a chunk
    // that no header announced, neither of which may cost the message before them; a replay.
    f.message(valid_header(10, 100, kLength), good, chunk);
    const int junk = 42;
    ASGD_CHECK_MPI(MPI_Send(&junk, 1, MPI_INT, 0, 77, t.communicator()));
    f.chunks(good, chunk, chunk);
    f.message(valid_header(10, 100, kLength), good, chunk);
    // The last valid message: the one the slot must hold (latest wins).
    f.message(valid_header(11, 7, kLength), payload(1, 11, kLength), chunk);
  }
  if (rank == 0) {
    wait_for_done(t, 1);
  }
  if (rank == 1) t.finish(false);
  if (rank == 0) {
    const Message* got[4];
    ASSERT_EQ(t.collect(0, got, 4), 1);
    const Message& m = *got[0];
    EXPECT_EQ(m.header.sender, 1);
    EXPECT_EQ(m.header.sender_step, 11);
    EXPECT_EQ(m.header.offset, 7);
    ASSERT_EQ(m.header.length, kLength);
    const std::vector<float> want = payload(1, 11, kLength);
    EXPECT_EQ(std::memcmp(m.payload.data(), want.data(), want.size() * sizeof(float)), 0);
    EXPECT_EQ(t.collect(0, got, 4), 0) << "consume once";
    const WireRejections r = t.rejections();
    auto count = [&](WireError e) { return r[static_cast<std::size_t>(e)]; };
    EXPECT_EQ(count(WireError::kBadMagic), 1);
    EXPECT_EQ(count(WireError::kBadVersion), 1);
    EXPECT_EQ(count(WireError::kHeaderChecksum), 1);
    EXPECT_EQ(count(WireError::kWrongFingerprint), 1);
    EXPECT_EQ(count(WireError::kBadSender), 1);
    EXPECT_EQ(count(WireError::kRangeOutOfBounds), 1);
    EXPECT_EQ(count(WireError::kLengthMismatch), 2);  // the short payload, the stray chunk
    EXPECT_EQ(count(WireError::kChecksumMismatch), 1);
    EXPECT_EQ(count(WireError::kTruncated), 1);
    EXPECT_EQ(count(WireError::kStale), 1);
    EXPECT_EQ(count(WireError::kBadKind), 1);  // the unknown tag
    const LinkStats s = t.stats(1, 0);
    EXPECT_EQ(s.delivered, 2);    // step 10 and step 11
    EXPECT_EQ(s.overwritten, 1);  // step 10 was never taken
    EXPECT_EQ(s.bytes_delivered, 2 * kLength * 4);
  }
  if (rank != 1) t.finish(false);
  EXPECT_FALSE(t.stop_requested());
}

TEST(MpiTransport, LatestWinsConsumeOnceAndEveryPostIsAccountedFor) {
  const int rank = session().rank();
  const int size = session().size();
  MpiTransport t(session(), options(8192));
  constexpr std::int64_t kPosts = 60;
  constexpr std::int64_t kLength = kParams;  // whole states, several chunks each
  if (rank != 0) {
    for (std::int64_t step = 1; step <= kPosts; ++step) {
      MessageHeader h;
      h.sender = rank;
      h.sender_step = step;
      h.offset = 0;
      h.length = kLength;
      const std::vector<float> v = payload(rank, step, kLength);
      t.post(0, h, v.data());
    }
    t.flush();
    const LinkStats s = t.stats(rank, 0);
    EXPECT_EQ(s.posted, kPosts);
    EXPECT_EQ(s.delivered + s.superseded, kPosts);
    EXPECT_GE(s.delivered, 1);
  }
  const std::int64_t sent = rank == 0 ? 0 : t.stats(rank, 0).delivered;
  const std::vector<std::int64_t> sent_by = distributed::gather_to_root(session(), sent);
  if (rank != 0) t.finish(false);
  if (rank == 0) {
    for (int peer = 1; peer < size; ++peer)
      wait_for_done(t, peer);
    std::vector<const Message*> got(static_cast<std::size_t>(size));
    ASSERT_EQ(t.collect(0, got.data(), size), size - 1);
    std::vector<bool> seen(static_cast<std::size_t>(size), false);
    for (int i = 0; i < size - 1; ++i) {
      const Message& m = *got[static_cast<std::size_t>(i)];
      ASSERT_GT(m.header.sender, 0);
      seen[static_cast<std::size_t>(m.header.sender)] = true;
      EXPECT_EQ(m.header.sender_step, kPosts) << "the newest state wins";
      const std::vector<float> want = payload(m.header.sender, kPosts, kLength);
      EXPECT_EQ(std::memcmp(m.payload.data(), want.data(), want.size() * sizeof(float)), 0);
      const LinkStats s = t.stats(m.header.sender, 0);
      EXPECT_EQ(s.delivered, sent_by[static_cast<std::size_t>(m.header.sender)]);
      EXPECT_EQ(s.delivered, s.overwritten + 1);  // all but the one taken were overwritten
    }
    for (int peer = 1; peer < size; ++peer)
      EXPECT_TRUE(seen[static_cast<std::size_t>(peer)]);
    EXPECT_EQ(t.collect(0, got.data(), size), 0) << "consume once";
    for (std::int64_t r : t.rejections())
      EXPECT_EQ(r, 0);
    t.finish(false);
  }
}

TEST(MpiTransport, RankZerosDoneFrameAsksEveryoneToStop) {
  const int rank = session().rank();
  MpiTransport t(session(), options());
  if (rank == 0) {
    t.finish(true);
    EXPECT_FALSE(t.stop_requested());
  } else {
    wait_for_done(t, 0);
    EXPECT_TRUE(t.stop_requested());
    t.finish(false);
  }
}

TEST(MpiTransport, EmulatedLinkDelaysButDeliversEverything) {
  const int rank = session().rank();
  MpiTransport t(session(), options());
  LinkModel slow;
  slow.bandwidth_bytes_per_s = 4e6;  // 4 MB/s: a 80 kB state takes 20 ms
  slow.latency_s = 1e-3;
  constexpr std::int64_t kPosts = 5;
  if (rank == 1) {
    t.set_link(0, slow);
    const auto t0 = std::chrono::steady_clock::now();
    for (std::int64_t step = 1; step <= kPosts; ++step) {
      MessageHeader h;
      h.sender = 1;
      h.sender_step = step;
      h.length = kParams;
      const std::vector<float> v = payload(1, step, kParams);
      t.post(0, h, v.data());
      t.flush();  // one at a time, so none is superseded
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const LinkStats s = t.stats(1, 0);
    EXPECT_EQ(s.delivered, kPosts);
    EXPECT_EQ(s.superseded, 0);
    // A lower bound only (the emulation may not deliver early); no upper bound on a shared
    // machine.
    EXPECT_GE(seconds, kPosts * slow.transfer_seconds(kParams * 4.0) * 0.99);
  }
  if (rank == 0) {
    wait_for_done(t, 1);
    EXPECT_EQ(t.stats(1, 0).delivered, kPosts);
  }
  t.finish(false);
}

TEST(Distributed, DifferentModelsFailOnEveryRankWithOneMessage) {
  const int rank = session().rank();
  try {
    distributed::check_same_model(session(), rank == 1 ? 1000 : 2000, 77,
                                  rank == 1 ? "mlp 10-100-10" : "mlp 10-200-10");
    FAIL() << "no error on rank " << rank;
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("different models"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 1: 'mlp 10-100-10', 1000 parameters"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 0: 'mlp 10-200-10', 2000 parameters"), std::string::npos) << what;
  }
  // The same model everywhere passes.
  EXPECT_NO_THROW(distributed::check_same_model(session(), 2000, 77, "mlp 10-200-10"));
}

TEST(Distributed, AllreduceSumsExactly) {
  const int size = session().size();
  std::vector<float> v(1000);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = static_cast<float>(session().rank() + 1) * static_cast<float>(i);
  distributed::allreduce_sum(session(), v.data(), static_cast<std::int64_t>(v.size()));
  const float ranks_sum = static_cast<float>(size * (size + 1) / 2);
  for (std::size_t i = 0; i < v.size(); ++i)
    ASSERT_EQ(v[i], ranks_sum * static_cast<float>(i));
}

}  // namespace
}  // namespace asgd

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  asgd::MpiSession& s = asgd::MpiSession::get();
  if (s.size() < 2) {
    std::fprintf(stderr, "run under mpirun with at least 2 ranks\n");
    return 2;
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, s.comm());
  asgd::MpiSession::finalize();
  return any;
}
