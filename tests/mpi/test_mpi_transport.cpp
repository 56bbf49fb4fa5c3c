// The MPI transport between real ranks (run under mpirun with 2 or 4 ranks): every rejection
// path of the wire format as it arrives over MPI, slot semantics (latest wins, consume once),
// exact message accounting, the start-up model check, and link emulation. Each test is
// collective: every rank builds the transport and finishes it.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "comm/mpi/mpi_session.h"
#include "comm/mpi/mpi_transport.h"
#include "runtime/distributed.h"
#include "tests/mpi/mpi_test_support.h"

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

using test::payload;
using test::session;

void wait_for_done(const MpiTransport& t, int peer) {
  // The peer's done frame is the last frame it sends, and frames are processed in order.
  while (!t.peer_done(peer)) {
    t.check();
    std::this_thread::yield();
  }
}

// Posts to `peer` this rank's first `length` elements at `step`, with their distinct payload.
void post_state(MpiTransport& t, int peer, std::int64_t step, std::int64_t length) {
  MessageHeader h;
  h.sender = t.rank();
  h.sender_step = step;
  h.length = length;
  const std::vector<float> v = payload(t.rank(), step, length);
  t.post(peer, h, v.data());
}

// Raw frames from rank 1 to rank 0 on the transport's communicator, as a forger would send.
struct Forger {
  MPI_Comm comm;
  void header(const EncodedHeader& b, int bytes = static_cast<int>(kWireHeaderBytes)) const {
    ASGD_CHECK_MPI(MPI_Send(b.data(), bytes, MPI_BYTE, 0, MpiTransport::kHeaderTag, comm));
  }
  // The first total_bytes of `data` as a payload: chunks, the last with the last-chunk tag.
  void chunks(const std::vector<float>& data, std::int64_t chunk_bytes,
              std::int64_t total_bytes) const {
    const auto* bytes = reinterpret_cast<const char*>(data.data());
    for (std::int64_t at = 0; at < total_bytes; at += chunk_bytes) {
      const int n = static_cast<int>(std::min(chunk_bytes, total_bytes - at));
      const int tag = at + n == total_bytes ? MpiTransport::kLastChunkTag : MpiTransport::kChunkTag;
      ASGD_CHECK_MPI(MPI_Send(bytes + at, n, MPI_BYTE, 0, tag, comm));
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
    // Claims that end on a chunk boundary, each with the checksum of the payload it claims:
    // two chunks' worth of a three-chunk payload (found at the second chunk, which is not the
    // last; the third is dropped uncounted), and four chunks' worth of a three-chunk payload
    // (found at the third, which is the last). Each is one rejection, at once.
    WireHeader claim = valid_header(5, 100, 2 * chunk / 4);
    claim.payload_checksum = payload_checksum(good.data(), static_cast<std::size_t>(2 * chunk));
    f.header(encode_header(claim));
    f.chunks(good, chunk, 3 * chunk);
    std::vector<float> longer = payload(1, 5, 4 * chunk / 4);
    claim = valid_header(5, 100, 4 * chunk / 4);
    claim.payload_checksum = payload_checksum(longer.data(), static_cast<std::size_t>(4 * chunk));
    f.header(encode_header(claim));
    f.chunks(longer, chunk, 3 * chunk);
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
    // The short payload, the two claims on chunk boundaries, the stray chunk.
    EXPECT_EQ(count(WireError::kLengthMismatch), 4);
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
      post_state(t, 0, step, kLength);
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

TEST(MpiTransport, LentBuffersAreSentInPlaceAndEveryLoanEnds) {
  const int rank = session().rank();
  const int size = session().size();
  MpiTransport t(session(), options(8192));
  ASSERT_TRUE(t.lends_buffers());
  constexpr std::int64_t kPosts = 20;
  constexpr std::int64_t kLength = kParams / 2;  // several chunks
  constexpr std::int64_t kOffset = 123;
  MessageHeader h;
  h.sender = rank;
  h.offset = kOffset;
  h.length = kLength;
  if (rank != 0) {
    // Loans that end unposted go back to the pool (the last one back is lent next), and
    // nothing is posted: dropped, refused by post_lent()'s checks, or never valid.
    float* first = nullptr;
    {
      LentBuffer unused = t.lend(0, kLength);
      ASSERT_TRUE(unused);
      EXPECT_EQ(unused.peer(), 0);
      EXPECT_GE(unused.capacity(), kLength);
      EXPECT_EQ(t.loans_out(), 1);
      first = unused.data();
    }
    EXPECT_EQ(t.loans_out(), 0);
    MessageHeader past_the_end = h;
    past_the_end.offset = kParams - kLength + 1;
    EXPECT_THROW(t.post_lent(t.lend(0, kLength), past_the_end), Error);
    MessageHeader not_mine = h;
    not_mine.sender = 0;
    EXPECT_THROW(t.post_lent(t.lend(0, kLength), not_mine), Error);
    EXPECT_THROW(t.post_lent(LentBuffer(), h), Error);
    EXPECT_THROW(t.lend(rank, kLength), Error);
    EXPECT_THROW(t.lend(0, kParams + 1), Error);
    EXPECT_EQ(t.loans_out(), 0);
    EXPECT_EQ(t.lend(0, kLength).data(), first);
    EXPECT_EQ(t.stats(rank, 0).posted, 0);

    for (std::int64_t step = 1; step <= kPosts; ++step) {
      LentBuffer b = t.lend(0, kLength);
      const std::vector<float> v = payload(rank, step, kLength);
      std::memcpy(b.data(), v.data(), v.size() * sizeof(float));
      h.sender_step = step;
      t.post_lent(std::move(b), h);
      EXPECT_FALSE(b);               // NOLINT(bugprone-use-after-move): the loan went with the post
      if (step % 2 == 0) t.flush();  // some surely go on the wire
    }
    t.flush();
    const LinkStats s = t.stats(rank, 0);
    EXPECT_EQ(s.posted, kPosts);
    EXPECT_EQ(s.delivered + s.superseded, kPosts);
    EXPECT_EQ(t.loans_out(), 0);
    t.finish(false);
    return;
  }
  for (int peer = 1; peer < size; ++peer)
    wait_for_done(t, peer);
  std::vector<const Message*> got(static_cast<std::size_t>(size));
  ASSERT_EQ(t.collect(0, got.data(), size), size - 1);
  for (int i = 0; i < size - 1; ++i) {
    const Message& m = *got[static_cast<std::size_t>(i)];
    EXPECT_EQ(m.header.sender_step, kPosts);
    EXPECT_EQ(m.header.offset, kOffset);
    ASSERT_EQ(m.header.length, kLength);
    const std::vector<float> want = payload(m.header.sender, kPosts, kLength);
    EXPECT_EQ(std::memcmp(m.payload.data(), want.data(), want.size() * sizeof(float)), 0);
  }
  for (std::int64_t r : t.rejections())
    EXPECT_EQ(r, 0);
  t.finish(false);
}

// A wait for messages that never come ends with an error naming the peer, and the transport
// still finishes cleanly.
TEST(MpiTransport, WaitingForAMessageNobodySendsEndsWithAnError) {
  MpiTransportOptions o = options();
  o.peer_timeout_s = 0.5;
  MpiTransport t(session(), o);
  test::expect_wait_for_unsent_message_fails(t);
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
      post_state(t, 0, step, kParams);
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

// A link whose latency falls while it holds a message: the messages taken after the change
// must not overtake it, or the receiver, which keeps each sender's newest step, rejects the
// held one as a replay (kStale) although nothing was wrong with it.
TEST(MpiTransport, LinkChangeNeverLetsALaterMessageOvertakeAHeldOne) {
  const int rank = session().rank();
  MpiTransport t(session(), options());
  constexpr std::int64_t kLength = 1000;
  if (rank == 1) {
    LinkModel far;
    far.bandwidth_bytes_per_s = 1e12;
    far.latency_s = 0.3;
    t.set_link(0, far);
    post_state(t, 0, 1, kLength);
    while (t.queued(0) > 0)
      std::this_thread::yield();  // taken: the link holds it for 0.3 s
    t.set_link(0, LinkModel{});   // ideal from now on
    post_state(t, 0, 2, kLength);
    t.flush();
    const LinkStats s = t.stats(1, 0);
    EXPECT_EQ(s.delivered, 2);
    EXPECT_EQ(s.superseded, 0);
  }
  if (rank == 0) {
    wait_for_done(t, 1);
    EXPECT_EQ(t.stats(1, 0).delivered, 2);
    EXPECT_EQ(t.rejections()[static_cast<std::size_t>(WireError::kStale)], 0);
    const Message* got = nullptr;
    ASSERT_EQ(t.collect(0, &got, 1), 1);
    EXPECT_EQ(got->header.sender_step, 2) << "the newest state wins";
  }
  t.finish(false);
}

// Each record of a completed send says how long its receiver may have taken to look: the
// receiving rank's idle poll, which may differ from the sender's (another node, --comm-poll).
TEST(MpiTransport, TransferRecordsCarryTheReceiversIdlePoll) {
  const int rank = session().rank();
  MpiTransportOptions o = options();
  o.idle_poll_s = 1e-3 * (rank + 1);
  MpiTransport t(session(), o);
  if (rank == 1) {
    post_state(t, 0, 1, kParams);
    t.flush();
    const std::vector<TransferRecord> records = t.take_transfers();
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].from, 1);
    EXPECT_EQ(records[0].to, 0);
    EXPECT_EQ(records[0].bytes, kParams * 4.0);
    EXPECT_EQ(records[0].receiver_wait_s, 1e-3);  // rank 0's
    EXPECT_GT(records[0].seconds, 0);
  }
  if (rank == 0) {
    wait_for_done(t, 1);
    EXPECT_TRUE(t.take_transfers().empty());
  }
  t.finish(false);
}

// The idle poll: fast only where the communication thread has a core of its own.
TEST(MpiTransport, IdlePollIsSlowWhereTheComputeHasEveryCore) {
  EXPECT_EQ(idle_poll_seconds(2, 2, 1), 2e-3);   // the development VM under mpirun -np 2
  EXPECT_EQ(idle_poll_seconds(16, 4, 4), 2e-3);  // 16 compute threads on 16 cores
  EXPECT_EQ(idle_poll_seconds(16, 4, 1), 400e-6);
  EXPECT_EQ(idle_poll_seconds(3, 2, 1), 400e-6);
  EXPECT_EQ(idle_poll_seconds(0, 1, 1), 2e-3);  // unknown core count: assume none to spare
  MpiTransportOptions o;
  o.max_message = 4;
  o.model = {4, 1};
  o.idle_poll_s = 0;
  EXPECT_THROW(MpiTransport(MpiSession::get(), o), Error);
}

// --- fault injection (MpiTransportOptions::fault) -----------------------------------------

TEST(WireFault, EveryKindParsesFromItsNameAndAnythingElseIsAnInputError) {
  EXPECT_EQ(parse_wire_fault("corrupt"), WireFaultKind::kCorrupt);
  EXPECT_EQ(parse_wire_fault("forge-offset"), WireFaultKind::kForgeOffset);
  EXPECT_EQ(parse_wire_fault("forge-length"), WireFaultKind::kForgeLength);
  EXPECT_EQ(parse_wire_fault("forge-fingerprint"), WireFaultKind::kForgeFingerprint);
  EXPECT_EQ(parse_wire_fault("replay"), WireFaultKind::kReplay);
  for (const WireFaultKind kind :
       {WireFaultKind::kCorrupt, WireFaultKind::kForgeOffset, WireFaultKind::kForgeLength,
        WireFaultKind::kForgeFingerprint, WireFaultKind::kReplay})
    EXPECT_EQ(parse_wire_fault(to_string(kind)), kind);
  EXPECT_EQ(to_string(WireFaultKind::kNone), "none");
  for (const char* bad : {"", "none", "Corrupt", "forge", "forge_length", "replay ", "stale"}) {
    try {
      parse_wire_fault(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("forge-fingerprint"), std::string::npos) << e.what();
    }
  }
}

TEST(MpiTransportFault, BadSettingsAreInputErrorsOnEveryRankBeforeAnyCollective) {
  // Every rank is given the same bad settings and must throw before the constructor's first
  // collective call, or the ranks would hang instead.
  MpiTransportOptions o = options();
  o.fault = {WireFaultKind::kCorrupt, 0};
  EXPECT_THROW(MpiTransport(session(), o), InputError);
  o.fault = {WireFaultKind::kForgeOffset, -3};
  EXPECT_THROW(MpiTransport(session(), o), InputError);
  o.fault = {WireFaultKind::kReplay, 1};  // nothing earlier to replay
  EXPECT_THROW(MpiTransport(session(), o), InputError);
  o = options();
  o.max_message = 1;  // no other length within bounds
  o.fault = {WireFaultKind::kForgeLength, 2};
  EXPECT_THROW(MpiTransport(session(), o), InputError);
}

constexpr int kFaultySender = 1;

// The range of message `i`, by groups of three: the damaged ones of FaultyRankSends (every
// third) are a single element at the end of the state, 1,025 elements (one element short ends
// on a chunk boundary: forge-length must claim another length), 3,000 elements, a whole state.
struct Range {
  std::int64_t offset;
  std::int64_t length;
};
Range fault_range(std::int64_t i) {
  constexpr Range kRanges[] = {{0, kParams}, {kParams - 1, 1}, {100, 1025}, {7, 3000}};
  return kRanges[(i / 3) % 4];
}

void post_to_all(MpiTransport& t, std::int64_t step) {
  const Range r = fault_range(step);
  const std::vector<float> v = payload(kFaultySender, step, r.length);
  MessageHeader h;
  h.sender = kFaultySender;
  h.sender_step = step;
  h.offset = r.offset;
  h.length = r.length;
  for (int peer = 0; peer < session().size(); ++peer)
    if (peer != kFaultySender) t.post(peer, h, v.data());
}

std::int64_t rejected(const MpiTransport& t, WireError reason) {
  return t.rejections()[static_cast<std::size_t>(reason)];
}

// Rank 1 sends kPosts messages to every other rank, one at a time, damaging every kEvery-th;
// each receiver takes every undamaged message as soon as it is published and compares it with
// what was sent, and must reject exactly the damaged ones, each for `reason` alone.
void faulty_rank_sends(WireFaultKind kind, WireError reason) {
  constexpr std::int64_t kPosts = 13;
  constexpr std::int64_t kEvery = 3;  // messages 3, 6, 9 and 12
  constexpr std::int64_t kDamaged = kPosts / kEvery;
  const int rank = session().rank();
  const int size = session().size();
  MpiTransportOptions o = options();
  if (rank == kFaultySender) o.fault = {kind, kEvery};
  MpiTransport t(session(), o);
  std::int64_t delivered = 0;
  std::int64_t bytes = 0;
  for (std::int64_t step = 1; step <= kPosts; ++step) {
    if (rank == kFaultySender) {
      post_to_all(t, step);
      t.flush();  // one at a time: none is superseded, so every kEvery-th goes on the wire
    } else if (step % kEvery != 0) {
      t.wait_delivered(kFaultySender, ++delivered);
      // Frames from one sender are dealt with in order: every damaged one before this message
      // has been rejected by now.
      EXPECT_EQ(rejected(t, reason), (step - 1) / kEvery) << "before step " << step;
      const Message* got[2];
      const int n = t.collect(rank, got, 2);
      EXPECT_EQ(n, 1) << "step " << step;
      if (n >= 1) {
        const Message& m = *got[0];
        const Range r = fault_range(step);
        EXPECT_EQ(m.header.sender, kFaultySender);
        EXPECT_EQ(m.header.sender_step, step);
        EXPECT_EQ(m.header.offset, r.offset);
        EXPECT_EQ(m.header.length, r.length);
        if (m.header.length == r.length) {
          const std::vector<float> want = payload(kFaultySender, step, r.length);
          EXPECT_EQ(std::memcmp(m.payload.data(), want.data(), want.size() * sizeof(float)), 0)
              << "step " << step;
        }
        bytes += r.length * 4;
      }
    }
    // The receivers have taken message `step` before the next is posted: none is overwritten.
    distributed::barrier(session());
  }
  if (rank == kFaultySender) {
    EXPECT_EQ(t.faults_injected(), kDamaged * (size - 1));
    for (int peer = 0; peer < size; ++peer) {
      if (peer == kFaultySender) continue;
      const LinkStats s = t.stats(kFaultySender, peer);
      EXPECT_EQ(s.posted, kPosts);
      EXPECT_EQ(s.delivered, kPosts);  // damaged or not, every send completed
      EXPECT_EQ(s.superseded, 0);
    }
    t.finish(false);
  } else {
    wait_for_done(t, kFaultySender);  // its last frame: nothing more comes from it
    const WireRejections r = t.rejections();
    for (int e = 0; e < kWireErrorCount; ++e)
      EXPECT_EQ(r[static_cast<std::size_t>(e)], static_cast<WireError>(e) == reason ? kDamaged : 0)
          << to_string(static_cast<WireError>(e)) << " on rank " << rank;
    const LinkStats s = t.stats(kFaultySender, rank);
    EXPECT_EQ(s.delivered, kPosts - kDamaged);
    EXPECT_EQ(s.bytes_delivered, bytes);
    EXPECT_EQ(s.overwritten, 0);
    const Message* got[2];
    EXPECT_EQ(t.collect(rank, got, 2), 0) << "nothing damaged was published";
    EXPECT_EQ(t.faults_injected(), 0);
    t.finish(false);
  }
}

TEST(MpiTransportFault, CorruptPayloadIsRejectedAsChecksumMismatch) {
  faulty_rank_sends(WireFaultKind::kCorrupt, WireError::kChecksumMismatch);
}

TEST(MpiTransportFault, ForgedOffsetIsRejectedAsRangeOutOfBounds) {
  faulty_rank_sends(WireFaultKind::kForgeOffset, WireError::kRangeOutOfBounds);
}

TEST(MpiTransportFault, ForgedLengthIsRejectedAsLengthMismatch) {
  faulty_rank_sends(WireFaultKind::kForgeLength, WireError::kLengthMismatch);
}

TEST(MpiTransportFault, ForgedFingerprintIsRejectedAsWrongFingerprint) {
  faulty_rank_sends(WireFaultKind::kForgeFingerprint, WireError::kWrongFingerprint);
}

TEST(MpiTransportFault, ReplayIsRejectedAsStale) {
  faulty_rank_sends(WireFaultKind::kReplay, WireError::kStale);
}

// The same with little or no pacing: two messages are in flight at once (a replay beside the
// message it repeats), then posts outrun the sends and the queue supersedes some, and buffers
// are reused under load. Which messages go on the wire is up to timing, but each receiver must
// still reject exactly one in kEvery of those that reached it from rank 1, and take every other
// one intact.
// Over TCP a large message moves only while its sender's MPI makes progress, so a sender
// stopped in the middle of one holds the receiver's wait for its rest. That wait is bounded by
// the peer timeout and ends in an error naming the peer (it held the communication thread, and
// with it the run's end, for as long as the peer stayed stopped). Rank 1 speaks the protocol by
// hand on a communicator duplicated as the transport's is: a header, a payload larger than
// TCP's eager size (sent with MPI_Isend, which moves its first part only), the next header;
// then it makes no MPI call until rank 0 has seen the error (a file rank 0 creates). Registered
// as mpi.transport_stalled_peer, which runs it with Open MPI's TCP transport only; shared memory
// moves the whole payload without the sender.
TEST(MpiTransportFault, PeerStoppedInTheMiddleOfAMessageEndsTheWaitWithAnErrorNamingIt) {
  if (!std::getenv("ASGD_TEST_STALLED_PEER"))
    GTEST_SKIP() << "run by mpi.transport_stalled_peer (Open MPI over TCP)";
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  const int rank = session().rank();
  const test::StopSignal stopped;
  const std::int64_t bytes = kParams * 4;  // 80,000: beyond TCP's eager 64 KiB
  if (rank == 1) {
    MPI_Comm comm = MPI_COMM_NULL;
    ASGD_CHECK_MPI(MPI_Comm_dup(session().comm(), &comm));
    all_gather(comm, options().idle_poll_s);  // as the transport's constructor does
    const Forger f{comm};
    const std::vector<float> data = payload(1, 5, kParams);
    WireHeader h = valid_header(5, 0, kParams);
    h.payload_checksum = payload_checksum(data.data(), static_cast<std::size_t>(bytes));
    f.header(encode_header(h));
    MPI_Request requests[2];
    ASGD_CHECK_MPI(MPI_Isend(data.data(), static_cast<int>(bytes), MPI_BYTE, 0,
                             MpiTransport::kLastChunkTag, comm, &requests[0]));
    h.sender_step = 6;
    const EncodedHeader next = encode_header(h);
    ASGD_CHECK_MPI(MPI_Isend(next.data(), static_cast<int>(kWireHeaderBytes), MPI_BYTE, 0,
                             MpiTransport::kHeaderTag, comm, &requests[1]));
    stopped.wait();
    ASGD_CHECK_MPI(MPI_Waitall(2, requests, MPI_STATUSES_IGNORE));
  } else {
    MpiTransportOptions o = options(bytes);
    o.peer_timeout_s = 0.5;
    {
      MpiTransport t(session(), o);
      try {
        for (;;) {
          t.check();
          std::this_thread::yield();
        }
      } catch (const std::exception& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("rank 1 stopped in the middle of a message"), std::string::npos)
            << what;
      }
      stopped.release();  // rank 1 may go on: its payload can land while t settles
    }
  }
  ASGD_CHECK_MPI(MPI_Barrier(session().comm()));
}

// A peer that sent its done frame and then takes nothing more (its process left without
// ending the job): this rank's last message to it never completes, and finish() ends after
// the peer timeout with an error naming it instead of waiting for ever. Rank 1 speaks the
// protocol by hand: a done frame, then nothing until rank 0 has seen the error; then it takes
// what rank 0 sent, so that nothing stays pending.
TEST(MpiTransportFault, FinishEndsWhenAFinishedPeerNeverTakesItsLastMessage) {
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  const test::StopSignal gone;
  if (session().rank() == 1) {
    MPI_Comm comm = MPI_COMM_NULL;
    ASGD_CHECK_MPI(MPI_Comm_dup(session().comm(), &comm));
    all_gather(comm, options().idle_poll_s);  // as the transport's constructor does
    const Forger f{comm};
    WireHeader done;
    done.kind = FrameKind::kDone;
    done.model = kModel;
    done.sender = 1;
    f.header(encode_header(done));
    gone.wait();
    for (int tag = 0; tag != MpiTransport::kLastChunkTag;) {
      MPI_Status status;
      ASGD_CHECK_MPI(MPI_Probe(0, MPI_ANY_TAG, comm, &status));
      int count = 0;
      ASGD_CHECK_MPI(MPI_Get_count(&status, MPI_BYTE, &count));
      std::vector<char> bytes(static_cast<std::size_t>(std::max(count, 1)));
      ASGD_CHECK_MPI(
          MPI_Recv(bytes.data(), count, MPI_BYTE, 0, status.MPI_TAG, comm, MPI_STATUS_IGNORE));
      tag = status.MPI_TAG;
    }
    MPI_Comm_free(&comm);
  } else {
    MpiTransportOptions o = options(1 << 20);  // one chunk of 80 KB, beyond any eager size
    o.peer_timeout_s = 0.5;
    MpiTransport t(session(), o);
    post_state(t, 1, 1, kParams);
    while (t.queued(1) > 0)
      std::this_thread::yield();  // on its way, not superseded by finish()
    try {
      t.finish(false);
      ADD_FAILURE() << "finish() returned although rank 1 never took the message";
    } catch (const std::exception& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("ranks [1] finished but have not taken this rank's last messages"),
                std::string::npos)
          << what;
    }
    gone.release();  // rank 1 may take it now, while t settles
  }
  ASGD_CHECK_MPI(MPI_Barrier(session().comm()));
}

TEST(MpiTransportFault, BackedUpSendsKeepExactAccountingForEveryKind) {
  constexpr std::int64_t kPosts = 200;
  constexpr std::int64_t kEvery = 2;
  const int rank = session().rank();
  const int size = session().size();
  const std::pair<WireFaultKind, WireError> kinds[] = {
      {WireFaultKind::kCorrupt, WireError::kChecksumMismatch},
      {WireFaultKind::kForgeOffset, WireError::kRangeOutOfBounds},
      {WireFaultKind::kForgeLength, WireError::kLengthMismatch},
      {WireFaultKind::kForgeFingerprint, WireError::kWrongFingerprint},
      {WireFaultKind::kReplay, WireError::kStale}};
  for (const auto& [kind, reason] : kinds) {
    SCOPED_TRACE(std::string(to_string(kind)));
    MpiTransportOptions o = options();
    if (rank == kFaultySender) o.fault = {kind, kEvery};
    MpiTransport t(session(), o);
    // Messages that went on the wire from rank 1 to each rank, sent from rank 1 to all.
    std::vector<std::int64_t> sent(static_cast<std::size_t>(size), 0);
    if (rank == kFaultySender) {
      for (std::int64_t step = 1; step <= kPosts; ++step) {
        post_to_all(t, step);
        // The first half at most two ahead (both may be in flight), the rest as fast as posted.
        if (step <= kPosts / 2) t.flush(1);
      }
      t.flush();
      std::int64_t damaged = 0;
      for (int peer = 0; peer < size; ++peer) {
        if (peer == kFaultySender) continue;
        const LinkStats s = t.stats(kFaultySender, peer);
        EXPECT_EQ(s.delivered + s.superseded, kPosts);
        sent[static_cast<std::size_t>(peer)] = s.delivered;
        damaged += s.delivered / kEvery;
      }
      EXPECT_EQ(t.faults_injected(), damaged);
    }
    ASGD_CHECK_MPI(MPI_Bcast(sent.data(), size, MPI_INT64_T, kFaultySender, session().comm()));
    if (rank == kFaultySender) {
      t.finish(false);
      continue;
    }
    wait_for_done(t, kFaultySender);
    const std::int64_t on_wire = sent[static_cast<std::size_t>(rank)];
    const WireRejections r = t.rejections();
    for (int e = 0; e < kWireErrorCount; ++e)
      EXPECT_EQ(r[static_cast<std::size_t>(e)],
                static_cast<WireError>(e) == reason ? on_wire / kEvery : 0)
          << to_string(static_cast<WireError>(e)) << " on rank " << rank;
    EXPECT_EQ(t.stats(kFaultySender, rank).delivered, on_wire - on_wire / kEvery);
    const Message* got[2];
    const int n = t.collect(rank, got, 2);
    EXPECT_EQ(n, 1);
    if (n >= 1) {  // the latest undamaged message, intact
      const Message& m = *got[0];
      const Range want_range = fault_range(m.header.sender_step);
      EXPECT_EQ(m.header.offset, want_range.offset);
      EXPECT_EQ(m.header.length, want_range.length);
      if (m.header.length == want_range.length) {
        const std::vector<float> want =
            payload(kFaultySender, m.header.sender_step, m.header.length);
        EXPECT_EQ(std::memcmp(m.payload.data(), want.data(), want.size() * sizeof(float)), 0);
      }
    }
    t.finish(false);
  }
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
