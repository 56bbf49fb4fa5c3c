// The receive slot and the in-process transport: latest wins, consume once, bounded queues.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "comm/local/local_transport.h"
#include "comm/message_slot.h"
#include "comm/rank_transport.h"
#include "runtime/error.h"

namespace asgd {
namespace {

void write(MessageSlot& slot, int sender, std::int64_t seq, std::int64_t length) {
  MessageSlot::Writer w(slot);
  Message& m = w.message(length);
  m.header.sender = sender;
  m.header.sender_step = seq;
  m.header.length = length;
  for (std::int64_t i = 0; i < length; ++i)
    m.payload[static_cast<std::size_t>(i)] = static_cast<float>(sender * 1000003 + seq + i);
  w.publish();
}

TEST(MessageSlotTest, LatestWinsAndConsumeOnce) {
  MessageSlot slot(8);
  EXPECT_EQ(slot.acquire(), nullptr);
  write(slot, 1, 10, 8);
  write(slot, 1, 11, 8);  // replaces the unread 10
  const Message* m = slot.acquire();
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->header.sender_step, 11);
  EXPECT_EQ(slot.acquire(), nullptr);  // consumed once
  write(slot, 1, 12, 4);
  m = slot.acquire();
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->header.sender_step, 12);
  EXPECT_EQ(m->header.length, 4);
  EXPECT_EQ(slot.published(), 3);
  EXPECT_EQ(slot.overwritten(), 1);
}

// A slot allocates on demand: its buffers grow to the messages written into them (by at least
// half each time), never past the slot's capacity, and a grown buffer carries whole messages.
TEST(MessageSlotTest, BuffersGrowToTheMessagesWrittenUpToTheCapacity) {
  MessageSlot slot(1000);
  EXPECT_EQ(slot.reserved(), 0);
  write(slot, 1, 0, 100);
  EXPECT_EQ(slot.reserved(), 100);
  EXPECT_EQ(slot.acquire()->header.sender_step, 0);
  write(slot, 1, 1, 100);
  write(slot, 1, 2, 100);  // the third buffer: the reader holds the first
  EXPECT_EQ(slot.reserved(), 300);
  EXPECT_EQ(slot.acquire()->header.sender_step, 2);
  write(slot, 1, 3, 120);  // grows by half: 150
  write(slot, 1, 4, 900);  // 900
  write(slot, 1, 5, 999);  // 999, not 1.5 x 150
  EXPECT_EQ(slot.reserved(), 100 + 900 + 999);
  const Message* m = slot.acquire();
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(m->header.length, 999);
  for (std::int64_t i = 0; i < 999; ++i)
    ASSERT_EQ(m->payload[static_cast<std::size_t>(i)], static_cast<float>(1000003 + 5 + i));
  write(slot, 1, 6, 1000);
  EXPECT_LE(slot.reserved(), 3 * 1000);
  MessageSlot::Writer w(slot);
  EXPECT_THROW(w.message(1001), Error);
  EXPECT_THROW(w.message(-1), Error);
}

// Several writers and one reader hammer one slot. Every message the reader gets must be whole
// (its payload matches its header), none twice, each writer's in increasing order, and every
// published message is either read or counted as overwritten.
TEST(MessageSlotTest, ConcurrentWritersStress) {
  constexpr int kWriters = 3;
  constexpr std::int64_t kPerWriter = 20000, kLength = 257;
  MessageSlot slot(kLength);
  std::atomic<int> done{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&, w] {
      // Lengths vary, so that buffers grow while the reader holds others.
      for (std::int64_t s = 0; s < kPerWriter; ++s)
        write(slot, w, s, 1 + (s * 37 + w) % kLength);
      ++done;
    });
  std::set<std::pair<int, std::int64_t>> seen;
  std::vector<std::int64_t> last(kWriters, -1);
  std::int64_t read = 0, torn = 0, repeated = 0, out_of_order = 0;
  auto drain = [&] {
    while (const Message* m = slot.acquire()) {
      ++read;
      const int s = m->header.sender;
      const std::int64_t q = m->header.sender_step;
      if (m->header.length != 1 + (q * 37 + s) % kLength || m->capacity() < m->header.length) {
        ++torn;
        continue;
      }
      for (std::int64_t i = 0; i < m->header.length; ++i)
        if (m->payload[static_cast<std::size_t>(i)] != static_cast<float>(s * 1000003 + q + i)) {
          ++torn;
          break;
        }
      if (!seen.insert({s, q}).second) ++repeated;
      if (q <= last[static_cast<std::size_t>(s)]) ++out_of_order;
      last[static_cast<std::size_t>(s)] = q;
    }
  };
  while (done.load() < kWriters) drain();
  for (auto& t : writers) t.join();
  drain();
  EXPECT_EQ(torn, 0);
  EXPECT_EQ(repeated, 0);
  EXPECT_EQ(out_of_order, 0);
  EXPECT_GT(read, 0);
  EXPECT_EQ(slot.published(), kWriters * kPerWriter);
  EXPECT_EQ(read + slot.overwritten(), slot.published());
}

TEST(LocalTransportTest, IdealLinksDeliverInsidePost) {
  LocalTransport t(3, {16, 2, false});
  std::vector<float> data{1, 2, 3, 4};
  MessageHeader h;
  h.sender = 0;
  h.offset = 5;
  h.length = 4;
  t.post(2, h, data.data());
  h.sender = 1;
  t.post(2, h, data.data());
  const Message* got[4];
  EXPECT_EQ(t.collect(1, got, 4), 0);
  ASSERT_EQ(t.collect(2, got, 4), 2);
  EXPECT_NE(got[0]->header.sender, got[1]->header.sender);
  EXPECT_EQ(got[0]->header.offset, 5);
  EXPECT_EQ(got[1]->payload[3], 4.0f);
  EXPECT_EQ(t.collect(2, got, 4), 0);
  EXPECT_EQ(t.stats(0, 2).delivered, 1);
  EXPECT_EQ(t.stats(0, 2).bytes_delivered, 16);
}

TEST(LocalTransportTest, CollectHonoursItsLimitAndServesEverySender) {
  LocalTransport t(4, {4, 2, true});
  std::vector<float> data(4, 1.0f);
  const Message* got[4];
  std::set<int> served;
  for (int round = 0; round < 3; ++round) {
    for (int s = 1; s < 4; ++s) {
      MessageHeader h;
      h.sender = s;
      h.length = 4;
      t.post(0, h, data.data());
    }
    ASSERT_EQ(t.collect(0, got, 1), 1);
    served.insert(got[0]->header.sender);
  }
  EXPECT_EQ(served.size(), 3u);  // the starting sender rotates
}

// Emulated links: arrived messages are published by the receiver's collect() or, failing
// that, by the communication thread; either way each sender's messages come whole and in
// order, and every one is delivered or superseded.
TEST(LocalTransportTest, EmulatedLinksPublishInOrderWhileTheReceiverCollects) {
  constexpr int kPosts = 3000;
  constexpr std::int64_t kLength = 256;
  LocalTransport t(3, {kLength, 2, false});
  for (int from : {0, 1})
    t.set_link(from, 2, {1e9, 20e-6});
  std::vector<std::thread> senders;
  for (int from : {0, 1})
    senders.emplace_back([&t, from] {
      std::vector<float> data(kLength);
      MessageHeader h;
      h.sender = from;
      h.length = kLength;
      for (int step = 1; step <= kPosts; ++step) {
        std::fill(data.begin(), data.end(), static_cast<float>(step * 2 + from));
        h.sender_step = step;
        t.post(2, h, data.data());
      }
    });
  std::int64_t last[2] = {0, 0};
  int torn = 0, out_of_order = 0;
  while (last[0] < kPosts || last[1] < kPosts) {
    const Message* got[2];
    const int n = t.collect(2, got, 2);
    for (int i = 0; i < n; ++i) {
      const MessageHeader& h = got[i]->header;
      const float want = static_cast<float>(h.sender_step * 2 + h.sender);
      for (std::int64_t k = 0; k < kLength; ++k)
        if (got[i]->payload[static_cast<std::size_t>(k)] != want) {
          ++torn;
          break;
        }
      if (h.sender_step <= last[h.sender]) ++out_of_order;
      last[h.sender] = h.sender_step;
    }
  }
  for (auto& s : senders)
    s.join();
  EXPECT_EQ(torn, 0);
  EXPECT_EQ(out_of_order, 0);
  for (int from : {0, 1}) {
    const LinkStats s = t.stats(from, 2);
    EXPECT_EQ(s.posted, kPosts);
    EXPECT_EQ(s.delivered + s.superseded, s.posted);
  }
}

// Worker 0 posts `posts` messages of 1024 elements to worker 1, steps 0, 1, ...
void post_to_worker_1(LocalTransport& t, int posts) {
  const std::vector<float> data(1024, 0.5f);
  MessageHeader h;
  h.sender = 0;
  h.length = 1024;
  for (int i = 0; i < posts; ++i) {
    h.sender_step = i;
    t.post(1, h, data.data());
  }
}

TEST(LocalTransportTest, FullQueueSupersedesTheOldestUnsentMessage) {
  LocalTransport t(2, {1024, 2, false});
  t.set_link(0, 1, {1.0, 0.0});  // one byte per second: nothing arrives during the test
  const int posts = 6;
  post_to_worker_1(t, posts);
  const LinkStats s = t.stats(0, 1);
  EXPECT_EQ(s.posted, posts);
  EXPECT_EQ(s.delivered, 0);
  // At most one message is on the wire and two wait; all others were superseded.
  EXPECT_GE(s.superseded, posts - 3);
  EXPECT_LE(s.superseded, posts - 2);
  const Message* got[1];
  EXPECT_EQ(t.collect(1, got, 1), 0);
}

// A link of long latency holds at most kMaxInFlight messages (each a buffer); the rest wait
// in the bounded queue, where newer ones supersede them.
TEST(LocalTransportTest, ALongLatencyLinkCarriesAWindowOfMessages) {
  LocalTransport t(2, {1024, 2, false});
  t.set_link(0, 1, {1e12, 1000.0});  // nothing arrives during the test
  const int posts = 20;
  post_to_worker_1(t, posts);
  const LinkStats s = t.stats(0, 1);
  EXPECT_EQ(s.delivered, 0);
  EXPECT_EQ(s.superseded, posts - static_cast<int>(LocalTransport::kMaxInFlight) - 2);
}

// A link made ideal while a message is still on it delivers the newer message after that
// one, not over it.
TEST(LocalTransportTest, ALinkMadeIdealKeepsTheOrderOfItsMessages) {
  LocalTransport t(2, {16, 2, false});
  t.set_link(0, 1, {1e12, 1000.0});
  std::vector<float> data(16, 1.0f);
  MessageHeader h;
  h.sender = 0;
  h.length = 16;
  h.sender_step = 1;
  t.post(1, h, data.data());
  t.set_link(0, 1, LinkModel{});  // ideal
  h.sender_step = 2;
  t.post(1, h, data.data());
  const Message* got[1];
  EXPECT_EQ(t.collect(1, got, 1), 0);  // step 2 waits behind step 1, 1000 s out
  EXPECT_EQ(t.stats(0, 1).delivered, 0);
}

// A clock the test advances by hand: emulated links in exact virtual time.
struct ManualClock {
  std::atomic<double> t{0};
  std::function<double()> function() {
    return [this] { return t.load(); };
  }
};

// Collects until a message comes: the communication thread may hold the transport's lock at
// the moment, and then publishes the message itself. Bounded, so that a failing test ends.
const Message* collect_one(LocalTransport& t, int receiver) {
  const Message* got[1];
  for (int tries = 0; tries < 1000000; ++tries) {
    if (t.collect(receiver, got, 1) == 1) return got[0];
    std::this_thread::yield();
  }
  ADD_FAILURE() << "no message for worker " << receiver;
  return nullptr;
}

// A link changed while messages wait for it: what the old link had started by the change (in
// virtual time) travels at the old speed, what it had not starts on the new link.
TEST(LocalTransportTest, ALinkChangeRetimesOnlyWhatTheOldLinkHadNotStarted) {
  ManualClock clock;
  LocalTransport t(2, {1024, 4, false}, clock.function());
  t.set_link(0, 1, {1000.0, 0.0});  // 1,000 bytes/s: a 4,096-byte message takes 4.096 s
  std::vector<float> data(1024, 1.0f);
  MessageHeader h;
  h.sender = 0;
  h.length = 1024;
  for (int step = 1; step <= 3; ++step) {
    h.sender_step = step;
    t.post(1, h, data.data());  // at 0: step 1 on the wire until 4.096, then 2, then 3
  }
  clock.t = 5.0;  // step 2 started at 4.096 on the old link: it arrives at 8.192
  t.set_link(0, 1, {1e12, 0.0});
  EXPECT_EQ(t.stats(0, 1).delivered, 1) << "only step 1 has arrived";
  const Message* m = collect_one(t, 1);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->header.sender_step, 1);
  // Step 3 started at 8.192 on the new link. Within the grace period of both arrivals, so that
  // the collect below publishes steps 2 and 3 itself, in order: past it the communication thread
  // may be publishing them and the collect could take step 2 before step 3 lands (3 in 100
  // runs under TSan).
  clock.t = 8.192 + LocalTransport::kPullGrace_s / 2;
  // Steps 2 and 3 have both arrived: latest wins, the slot holds step 3.
  m = collect_one(t, 1);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->header.sender_step, 3);
  const LinkStats s = t.stats(0, 1);
  EXPECT_EQ(s.delivered, 3);
  EXPECT_NEAR(s.busy_seconds, 4.096 + 4.096 + 4096e-12, 1e-12);
}

TEST(LocalTransportTest, RejectsBadMessagesAndLinks) {
  LocalTransport t(2, {8, 2, false});
  std::vector<float> data(16);
  MessageHeader h;
  h.sender = 0;
  h.length = 9;  // larger than the transport carries
  EXPECT_THROW(t.post(1, h, data.data()), Error);
  h.length = 4;
  EXPECT_THROW(t.post(0, h, data.data()), Error);  // to itself
  EXPECT_THROW(t.post(2, h, data.data()), Error);  // no such worker
  EXPECT_THROW(t.set_link(0, 1, {0.0, 0.0}), Error);
}

// The wait under flush() and wait_delivered(): ends when done, and with an error naming what it
// waited for when nothing moves for the timeout; progress from another thread resets it.
TEST(WaitForProgressTest, EndsWhenDoneAndThrowsWhenNothingMoves) {
  std::mutex mutex;
  std::condition_variable cv;
  std::int64_t count = 0;
  bool finished = true;
  auto done = [&] { return finished; };
  auto progress = [&] { return count; };
  auto describe = [] { return std::string("waiting for message 3 from rank 1"); };
  wait_for_progress(mutex, cv, 1e-3, done, progress, describe);  // done at once

  finished = false;
  try {
    wait_for_progress(mutex, cv, 0.05, done, progress, describe);
    FAIL() << "a wait with nothing moving ended without an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("waiting for message 3 from rank 1"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("peer timeout"), std::string::npos) << e.what();
  }

  // Completions arrive one by one from another thread; the last one ends the wait. An
  // infinite timeout (--peer-timeout inf) waits as long as it takes.
  std::thread completer([&] {
    for (int i = 0; i < 5; ++i) {
      std::lock_guard<std::mutex> lock(mutex);
      ++count;
      finished = count == 5;
      cv.notify_all();
    }
  });
  wait_for_progress(mutex, cv, std::numeric_limits<double>::infinity(), done, progress, describe);
  completer.join();
  EXPECT_EQ(count, 5);
}

TEST(LocalTransportTest, LendsNoBuffersAndSaysToPost) {
  LocalTransport t(2, {8, 2, false});
  EXPECT_FALSE(t.lends_buffers());
  try {
    t.lend(1, 4);
    FAIL() << "lend() on a transport that does not lend";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use post()"), std::string::npos) << e.what();
  }
  MessageHeader h;
  h.sender = 0;
  h.length = 4;
  EXPECT_THROW(t.post_lent(LentBuffer(), h), Error);
  EXPECT_EQ(t.stats(0, 1).posted, 0);
}

}  // namespace
}  // namespace asgd
