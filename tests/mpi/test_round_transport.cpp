// The NCCL transport's round protocol between real ranks, over the MPI payload plane (host
// memory), which runs where there is no GPU: exact delivery and accounting with every rank
// sending to every other at once, latest wins and consume once, the stop flag, link emulation,
// a stress run with random peers and no flushing, and every rejection path, driven by a rank
// that speaks the protocol by hand. Each test is collective: every rank takes part.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "comm/nccl/round_transport.h"
#if ASGD_HAVE_NCCL
#include "comm/nccl/nccl_plane.h"
#endif
#include "runtime/buffer.h"
#include "runtime/distributed.h"
#include "tests/mpi/mpi_test_support.h"

namespace asgd {
namespace {

using test::payload;
using test::session;

constexpr std::int64_t kParams = 20000;
constexpr ModelFingerprint kModel{kParams, 0xC0FFEE0123456789ull};

RoundTransportOptions options(int queue_capacity = 2) {
  RoundTransportOptions o;
  o.max_message = kParams;
  o.model = kModel;
  o.queue_capacity = queue_capacity;
  o.peer_timeout_s = 30;  // a failing test ends instead of hanging
  return o;
}

std::unique_ptr<RoundTransport> make_transport(int queue_capacity = 2) {
  return std::make_unique<RoundTransport>(session(), options(queue_capacity),
                                          std::make_unique<MpiPayloadPlane>(session()));
}

MessageHeader header(int sender, std::int64_t step, std::int64_t offset, std::int64_t length) {
  MessageHeader h;
  h.sender = sender;
  h.sender_step = step;
  h.offset = offset;
  h.length = length;
  return h;
}

// A message's payload as host floats, wherever the transport put it.
std::vector<float> host_copy(const Message& m) {
  std::vector<float> out(static_cast<std::size_t>(m.header.length));
  if (!m.on_device()) {
    std::memcpy(out.data(), m.data(), out.size() * sizeof(float));
    return out;
  }
  const Stream stream = Stream::cuda(m.device_payload.device());
  copy_async(out.data(), m.data(), out.size() * sizeof(float), stream);
  stream.synchronize();
  return out;
}

// Every rank posts to every other at once, never superseding; everything arrives, exactly.
void every_rank_sends_to_every_other(RoundTransport& t, bool on_device) {
  const int rank = session().rank();
  const int size = session().size();
  constexpr std::int64_t kPosts = 12;
  // Ranges differ per receiver, so a payload in the wrong slot would show.
  for (std::int64_t step = 1; step <= kPosts; ++step)
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      const std::int64_t length = 1000 + 100 * peer;
      const std::vector<float> v = payload(rank, step, length);
      t.flush(options().queue_capacity - 1);  // never superseded: every message must arrive
      t.post(peer, header(rank, step, 10 * peer, length), v.data());
    }
  t.flush();
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    t.wait_delivered(peer, kPosts);
    const LinkStats out = t.stats(rank, peer);
    EXPECT_EQ(out.posted, kPosts);
    EXPECT_EQ(out.delivered, kPosts);
    EXPECT_EQ(out.superseded, 0);
    EXPECT_EQ(out.bytes_delivered, kPosts * (1000 + 100 * peer) * 4);
  }
  std::vector<const Message*> got(static_cast<std::size_t>(size));
  ASSERT_EQ(t.collect(rank, got.data(), size), size - 1);
  for (int i = 0; i < size - 1; ++i) {
    const Message& m = *got[static_cast<std::size_t>(i)];
    EXPECT_EQ(m.on_device(), on_device);
    EXPECT_EQ(m.header.sender_step, kPosts) << "the newest state wins";
    EXPECT_EQ(m.header.offset, 10 * rank);
    ASSERT_EQ(m.header.length, 1000 + 100 * rank);
    EXPECT_EQ(host_copy(m), payload(m.header.sender, kPosts, m.header.length));
    const LinkStats in = t.stats(m.header.sender, rank);
    EXPECT_EQ(in.delivered, kPosts);
    EXPECT_EQ(in.overwritten, kPosts - 1);
  }
  EXPECT_EQ(t.collect(rank, got.data(), size), 0) << "consume once";
  for (std::int64_t r : t.rejections())
    EXPECT_EQ(r, 0);
  EXPECT_GE(t.rounds(), kPosts);  // a message per peer per round at most
  t.finish(false);
}

TEST(RoundTransport, EveryRankSendsToEveryOtherAtOnceAndEverythingArrivesExactly) {
  every_rank_sends_to_every_other(*make_transport(), /*on_device=*/false);
}

// The same over NCCL, GPU to GPU, where this machine has a GPU and the build has NCCL (the
// gpu machine's mpi tier, scripts/gpu_checks.sh --mpi). NCCL needs a GPU per rank, so this
// skips where any host runs more ranks than it has GPUs: on every rank together, since a rank
// taking part alone would wait for the others forever.
TEST(RoundTransportNccl, EveryRankSendsToEveryOtherAtOnceAndEverythingArrivesExactly) {
#if ASGD_HAVE_NCCL
  const int gpus = cuda_device_count();
  const double short_of_gpus =
      distributed::allreduce_max(session(), session().local_size() > gpus ? 1.0 : 0.0);
  if (gpus == 0) GTEST_SKIP() << "no GPU";
  if (short_of_gpus > 0) GTEST_SKIP() << "a host has more ranks than GPUs";
  const int device = session().local_rank();
  RoundTransport t(session(), options(), std::make_unique<NcclPayloadPlane>(session(), device));
  ASSERT_TRUE(t.device_payloads());
  every_rank_sends_to_every_other(t, /*on_device=*/true);
#else
  GTEST_SKIP() << "this build has no NCCL";
#endif
}

TEST(RoundTransport, WaitingForAMessageNobodySendsEndsWithAnError) {
  RoundTransportOptions o = options();
  o.peer_timeout_s = 0.5;
  RoundTransport t(session(), o, std::make_unique<MpiPayloadPlane>(session()));
  test::expect_wait_for_unsent_message_fails(t);
}

TEST(RoundTransport, RankZerosDoneFrameAsksEveryoneToStop) {
  const int rank = session().rank();
  auto t = make_transport();
  // Every rank finishes; rank 0 asks the others to stop. The last round has every frame done,
  // so all of them have seen rank 0's by the time finish() returns.
  t->finish(rank == 0);
  EXPECT_EQ(t->stop_requested(), rank != 0);
}

// Destroyed without finish() once everything it sent has arrived, the transport leaves nothing
// behind that a new one on the same ranks could trip over, and frees no buffer MPI still holds
// (the ASan build of this tier checks the latter).
TEST(RoundTransport, DestroyedWithoutFinishLeavesTheRanksUsable) {
  const int rank = session().rank();
  const int size = session().size();
  {
    auto t = make_transport();
    for (int peer = 0; peer < size; ++peer)
      if (peer != rank) {
        const std::vector<float> v = payload(rank, 1, 500);
        t->post(peer, header(rank, 1, 0, 500), v.data());
      }
    t->flush();
    // Every round that carried a payload has completed on its receiver too: nothing is left
    // in flight for the communicators the next transport may reuse.
    for (int peer = 0; peer < size; ++peer)
      if (peer != rank) t->wait_delivered(peer, 1);
    distributed::barrier(session());
  }
  every_rank_sends_to_every_other(*make_transport(), /*on_device=*/false);
}

TEST(RoundTransport, EmulatedLinkDelaysButDeliversEverything) {
  const int rank = session().rank();
  auto t = make_transport();
  LinkModel slow;
  slow.bandwidth_bytes_per_s = 4e6;  // 4 MB/s: a 80 kB state takes 20 ms
  slow.latency_s = 1e-3;
  constexpr std::int64_t kPosts = 5;
  if (rank == 1) {
    t->set_link(0, slow);
    const auto t0 = std::chrono::steady_clock::now();
    for (std::int64_t step = 1; step <= kPosts; ++step) {
      const std::vector<float> v = payload(1, step, kParams);
      t->post(0, header(1, step, 0, kParams), v.data());
      t->flush();  // one at a time, so none is superseded
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const LinkStats s = t->stats(1, 0);
    EXPECT_EQ(s.delivered, kPosts);
    EXPECT_EQ(s.superseded, 0);
    // A lower bound only: the emulation must not deliver early.
    EXPECT_GE(seconds, kPosts * slow.transfer_seconds(kParams * 4.0) * 0.99);
  }
  if (rank == 0) t->wait_delivered(1, kPosts);
  t->finish(false);
}

// A round waits for every rank's frame, so its records say it may hold up to the slowest other
// rank's idle poll of waiting (ranks may poll at different rates: other nodes, --comm-poll).
TEST(RoundTransport, TransferRecordsCarryTheSlowestPeersIdlePoll) {
  const int rank = session().rank();
  const int size = session().size();
  RoundTransportOptions o = options();
  o.idle_poll_s = 1e-3 * (rank + 1);
  RoundTransport t(session(), o, std::make_unique<MpiPayloadPlane>(session()));
  if (rank == 0) {
    const std::vector<float> v = payload(0, 1, 500);
    t.post(1, header(0, 1, 0, 500), v.data());
    t.flush();
    const std::vector<TransferRecord> records = t.take_transfers();
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records[0].to, 1);
    EXPECT_EQ(records[0].bytes, 500 * 4.0);
    EXPECT_EQ(records[0].receiver_wait_s, 1e-3 * size);  // the last rank's
  }
  if (rank == 1) t.wait_delivered(0, 1);
  t.finish(false);
}

// Random peers, a queue of one, no flushing, collect() while posting: every message is either
// delivered or superseded, both sides count the same deliveries, and every payload collected
// is exactly the one its header names.
TEST(RoundTransport, StressRandomPeersKeepsExactAccountingAndIntactPayloads) {
  const int rank = session().rank();
  const int size = session().size();
  auto t = make_transport(/*queue_capacity=*/1);
  std::mt19937 rng(1234u + static_cast<unsigned>(rank));
  constexpr std::int64_t kPosts = 400;
  std::int64_t bad = 0;
  auto check = [&] {
    const Message* got[64];
    const int n = t->collect(rank, got, 64);
    for (int i = 0; i < n; ++i) {
      const MessageHeader& h = got[i]->header;
      const std::vector<float> want = payload(h.sender, h.sender_step, h.length);
      if (std::memcmp(got[i]->data(), want.data(), want.size() * sizeof(float)) != 0) ++bad;
    }
  };
  for (std::int64_t step = 1; step <= kPosts; ++step) {
    int peer = static_cast<int>(rng() % static_cast<unsigned>(size - 1));
    if (peer >= rank) ++peer;
    const std::int64_t length = 1 + static_cast<std::int64_t>(rng() % 5000);
    const std::int64_t offset = static_cast<std::int64_t>(rng() % (kParams - length + 1));
    const std::vector<float> v = payload(rank, step, length);
    t->post(peer, header(rank, step, offset, length), v.data());
    if (step % 50 == 0) t->flush();  // some surely arrive, whatever the timing
    check();
  }
  t->finish(false);
  check();
  EXPECT_EQ(bad, 0);
  // Sent from me to each peer, as I counted it and as each receiver counted it.
  using Matrix = std::array<std::int64_t, 64>;
  ASSERT_LE(size * size, 64);
  Matrix mine{};
  std::int64_t delivered = 0;
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank) continue;
    const LinkStats out = t->stats(rank, peer);
    EXPECT_EQ(out.posted, out.delivered + out.superseded);
    mine[static_cast<std::size_t>(rank * size + peer)] = out.delivered;
    delivered += out.delivered;
  }
  EXPECT_GE(delivered, kPosts / 50);
  Matrix theirs{};
  for (int from = 0; from < size; ++from)
    if (from != rank)
      theirs[static_cast<std::size_t>(from * size + rank)] = t->stats(from, rank).delivered;
  const auto all_mine = distributed::gather_to_root(session(), mine);
  const auto all_theirs = distributed::gather_to_root(session(), theirs);
  if (rank == 0)
    for (int from = 0; from < size; ++from)
      for (int to = 0; to < size; ++to) {
        const auto at = static_cast<std::size_t>(from * size + to);
        EXPECT_EQ(all_mine[static_cast<std::size_t>(from)][at],
                  all_theirs[static_cast<std::size_t>(to)][at])
            << from << " -> " << to;
      }
}

// Rank 1 speaks the protocol by hand to rank 0, which runs the transport: what it sends in each
// round, and what it takes from rank 0. Matches the transport's communicators by creating them
// in the same order (the plane's, then the frames'), and joining the transport's exchange of
// idle polls.
class HandPeer {
 public:
  HandPeer() : plane_(session()) {
    ASGD_CHECK_MPI(MPI_Comm_dup(session().comm(), &frames_));
    all_gather(frames_, options().idle_poll_s);
  }
  ~HandPeer() { MPI_Comm_free(&frames_); }

  // One round: `frame` to rank 0 (and `data` as its payload unless empty), rank 0's frame
  // back. Returns rank 0's frame kind.
  FrameKind round(const EncodedHeader& frame, const std::vector<float>& data) {
    ASGD_CHECK_MPI(MPI_Send(frame.data(), static_cast<int>(kWireHeaderBytes), MPI_BYTE, 0,
                            RoundTransport::kFrameTag, frames_));
    const FrameKind theirs = receive_frame();
    std::vector<float> copy = data;
    std::vector<PayloadPlane::Transfer> sends;
    if (!copy.empty()) sends.push_back({0, copy.data(), static_cast<std::int64_t>(copy.size())});
    plane_.start_round(sends, {});
    while (!plane_.round_complete()) {
    }
    return theirs;
  }
  // Only a frame to rank 0, which then fails; takes rank 0's frame for the round so nothing
  // stays pending.
  void lone_frame(const EncodedHeader& frame) {
    lone_frame(std::vector<std::byte>(frame.begin(), frame.end()));
  }
  // The same with a frame of any size. One of another size than a frame ends rank 0's
  // transport as it arrives, before rank 0 has answered it with a frame of its own.
  void lone_frame(const std::vector<std::byte>& frame) {
    ASGD_CHECK_MPI(MPI_Send(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, 0,
                            RoundTransport::kFrameTag, frames_));
    if (frame.size() == kWireHeaderBytes) receive_frame();
  }
  // Starts sending a frame of any size to rank 0 without waiting for it to leave.
  int start_lone_frame(const std::vector<std::byte>& frame, MPI_Request* request) {
    return MPI_Isend(frame.data(), static_cast<int>(frame.size()), MPI_BYTE, 0,
                     RoundTransport::kFrameTag, frames_, request);
  }

 private:
  FrameKind receive_frame() {
    EncodedHeader theirs;
    ASGD_CHECK_MPI(MPI_Recv(theirs.data(), static_cast<int>(kWireHeaderBytes), MPI_BYTE, 0,
                            RoundTransport::kFrameTag, frames_, MPI_STATUS_IGNORE));
    WireHeader h;
    EXPECT_EQ(decode_header(theirs.data(), theirs.size(), kModel, 0, h), WireError::kNone);
    return h.kind;
  }

  MpiPayloadPlane plane_;
  MPI_Comm frames_ = MPI_COMM_NULL;
};

WireHeader state_frame(std::int64_t step, std::int64_t offset, const std::vector<float>& data) {
  WireHeader h;
  h.kind = FrameKind::kState;
  h.model = kModel;
  h.sender = 1;
  h.sender_step = step;
  h.offset = offset;
  h.length = static_cast<std::int64_t>(data.size());
  h.payload_checksum = payload_checksum(data.data(), data.size() * sizeof(float));
  return h;
}

TEST(RoundTransportHandPeer, EveryRejectionIsCountedItsPayloadDroppedAndTheRoundsStayInStep) {
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  const std::vector<float> v = payload(1, 5, 3000);
  if (session().rank() == 1) {
    HandPeer peer;
    WireHeader h = state_frame(5, 100, v);
    h.model.layout_hash ^= 1;  // another model
    EXPECT_EQ(peer.round(encode_header(h), v), FrameKind::kIdle);
    h = state_frame(5, 100, v);
    h.sender = 0;  // claims to be someone else
    peer.round(encode_header(h), v);
    h = state_frame(5, kParams - 10, v);  // runs past the end of the state
    peer.round(encode_header(h), v);
    peer.round(encode_header(state_frame(5, 100, v)), v);  // valid: published
    peer.round(encode_header(state_frame(5, 100, v)), v);  // the same step again: stale
    std::vector<float> corrupt = payload(1, 6, 3000);
    h = state_frame(6, 100, corrupt);
    corrupt[1234] += 1.0f;  // the payload is not what the checksum says
    peer.round(encode_header(h), corrupt);
    // Payloads of another length than the frame announced: shorter, then longer.
    const std::vector<float> v7 = payload(1, 7, 3000);
    peer.round(encode_header(state_frame(7, 100, v7)),
               std::vector<float>(v7.begin(), v7.begin() + 2000));
    std::vector<float> longer = v7;
    longer.resize(4000, 1.0f);
    peer.round(encode_header(state_frame(7, 100, v7)), longer);
    WireHeader idle;
    idle.kind = FrameKind::kIdle;
    idle.model = kModel;
    idle.sender = 1;
    peer.round(encode_header(idle), {});
    WireHeader done = idle;
    done.kind = FrameKind::kDone;
    done.flags = kFlagStop;
    // Done from here on, until rank 0 (which finishes once it has the valid message) is done
    // too: the first round in which both frames are done is the last.
    while (peer.round(encode_header(done), {}) != FrameKind::kDone) {
    }
    return;
  }
  auto t = make_transport();
  t->wait_delivered(1, 1);
  const Message* got[2];
  ASSERT_EQ(t->collect(0, got, 2), 1);
  EXPECT_EQ(got[0]->header.sender_step, 5);
  EXPECT_EQ(got[0]->header.offset, 100);
  ASSERT_EQ(got[0]->header.length, 3000);
  EXPECT_EQ(std::memcmp(got[0]->data(), v.data(), v.size() * sizeof(float)), 0);
  t->finish(false);
  EXPECT_TRUE(t->stop_requested());
  EXPECT_EQ(t->collect(0, got, 2), 0) << "nothing rejected was published";
  const WireRejections r = t->rejections();
  for (int k = 0; k < kWireErrorCount; ++k) {
    const auto e = static_cast<WireError>(k);
    const bool once = e == WireError::kWrongFingerprint || e == WireError::kBadSender ||
                      e == WireError::kRangeOutOfBounds || e == WireError::kStale ||
                      e == WireError::kChecksumMismatch;
    const int expected = e == WireError::kLengthMismatch ? 2 : once ? 1 : 0;
    EXPECT_EQ(r[static_cast<std::size_t>(k)], expected) << to_string(e);
  }
  EXPECT_EQ(t->stats(1, 0).delivered, 1);
}

// Waits for rank 1's message on rank 0's transport `t`, which must instead end with an error
// naming rank 1 and saying `words`.
void expect_error_from_rank_1(RoundTransport& t, const std::string& words) {
  try {
    t.wait_delivered(1, 1);
    ADD_FAILURE() << "no error";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 1"), std::string::npos) << what;
    EXPECT_NE(what.find(words), std::string::npos) << what;
  }
}

// A frame whose own integrity fails cannot say what follows it: the transport stops with an
// error that names the peer, rather than guess and fall out of step.
template <class Frame>
void expect_fatal_frame(const Frame& frame, const std::string& words) {
  if (session().rank() == 1) {
    HandPeer peer;
    peer.lone_frame(frame);
    return;
  }
  expect_error_from_rank_1(*make_transport(), words);
}

TEST(RoundTransportHandPeer, DamagedFrameEndsTheTransportWithAClearError) {
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  EncodedHeader frame = encode_header(state_frame(5, 0, payload(1, 5, 10)));
  frame[60] ^= std::byte{0x01};  // the length, behind the header checksum's back
  expect_fatal_frame(frame, "damaged (header-checksum)");
}

// A frame far longer than a frame: Open MPI would write it past the end of a receive posted
// for 80 bytes (heap corruption, seen as "double free or corruption" here), so frames are
// probed for their size before they are received.
TEST(RoundTransportHandPeer, OversizedFrameEndsTheTransportWithAClearErrorAndOverwritesNothing) {
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  std::vector<std::byte> frame(1 << 20, std::byte{0x5A});
  const EncodedHeader valid = encode_header(state_frame(5, 0, payload(1, 5, 10)));
  std::copy(valid.begin(), valid.end(), frame.begin());
  expect_fatal_frame(frame, "a round frame of 1048576 bytes from rank 1");
}

// The same from a peer that stops in the middle of sending it. Over TCP a frame that large
// moves only while its sender's MPI makes progress, and the transport used to receive it with
// a blocking MPI_Mrecv: its communication thread, and the run's end, waited for as long as the
// peer stayed stopped. Rank 1 stops until rank 0 has seen the error. Registered as
// mpi.transport_stalled_peer, which runs it over TCP only.
TEST(RoundTransportHandPeer, PeerStoppedInTheMiddleOfAnOversizedFrameDoesNotHoldTheTransport) {
  if (!std::getenv("ASGD_TEST_STALLED_PEER"))
    GTEST_SKIP() << "run by mpi.transport_stalled_peer (Open MPI over TCP)";
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  const test::StopSignal stopped;
  std::vector<std::byte> frame(1 << 20, std::byte{0x5A});  // beyond TCP's eager 64 KiB
  if (session().rank() == 1) {
    HandPeer peer;
    MPI_Request request = MPI_REQUEST_NULL;
    ASGD_CHECK_MPI(peer.start_lone_frame(frame, &request));
    stopped.wait();
    ASGD_CHECK_MPI(MPI_Wait(&request, MPI_STATUS_IGNORE));
  } else {
    auto t = make_transport();
    expect_error_from_rank_1(*t, "a round frame of 1048576 bytes from rank 1");
    stopped.release();  // rank 1 may go on: its frame can land while t settles
  }
  ASGD_CHECK_MPI(MPI_Barrier(session().comm()));
}

TEST(RoundTransportHandPeer, PayloadLargerThanTheModelEndsTheTransportWithAClearError) {
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  WireHeader h = state_frame(5, 0, payload(1, 5, 10));
  h.length = kParams + 1;
  expect_fatal_frame(encode_header(h), "announced a payload of 20001 elements for a model of");
}

TEST(RoundTransportHandPeer, NegativePayloadLengthEndsTheTransportWithAClearError) {
  if (session().size() != 2) GTEST_SKIP() << "needs exactly 2 ranks (run with -np 2)";
  WireHeader h = state_frame(5, 0, payload(1, 5, 10));
  h.length = -3;
  expect_fatal_frame(encode_header(h), "announced a payload of -3 elements");
}

}  // namespace
}  // namespace asgd
