// Checkpoint files: the codec keeps every field bit for bit, writes are atomic, and every kind
// of damage (flipped, cut or appended bytes, a newer version, hostile lengths behind a valid
// checksum) is an InputError naming the file rather than a crash or a huge allocation; the
// resume check and the background writer.
#include "runtime/checkpoint.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/common/input_error.h"
#include "tests/common/temp_dir.h"

namespace asgd {
namespace {

using testing::expect_input_error;
using testing::TempDir;

constexpr std::int64_t kParameters = 16;

// Random values that are never zero, so a field the codec drops or leaves at its default
// cannot compare equal by luck.
std::int64_t nonzero_i64(std::mt19937_64& rng) {
  return static_cast<std::int64_t>(rng() | 1) >> 1 | 1;  // odd, either sign
}
std::int32_t nonzero_i32(std::mt19937_64& rng) {
  return static_cast<std::int32_t>(rng() | 1);
}
float nonzero_float(std::mt19937_64& rng) {
  return std::uniform_real_distribution<float>(0.5f, 1e4f)(rng) * (rng() % 2 ? 1.0f : -1.0f);
}
double nonzero_double(std::mt19937_64& rng) {
  return std::uniform_real_distribution<double>(0.5, 1e9)(rng) * (rng() % 2 ? 1.0 : -1.0);
}
template <typename T, typename Draw>
std::vector<T> nonzero_vector(std::mt19937_64& rng, std::size_t n, Draw draw) {
  std::vector<T> v(n);
  for (T& x : v)
    x = draw(rng);
  return v;
}
std::vector<float> floats(std::mt19937_64& rng, std::size_t n) {
  return nonzero_vector<float>(rng, n, nonzero_float);
}
std::string text(std::mt19937_64& rng, std::size_t n) {
  std::string s(n, 'x');
  for (char& c : s)
    c = static_cast<char>(1 + rng() % 255);  // any byte but NUL, UTF-8 or not
  return s;
}
// A generator state in the text form the workers store.
std::string generator_state(std::mt19937_64& rng) {
  std::mt19937_64 g(rng());
  g.discard(rng() % 1000);
  std::ostringstream out;
  out << g;
  return out.str();
}
// A float whose bits are a NaN with a payload: a codec that converts or normalises it shows.
float nan_with_payload(std::uint32_t payload) {
  const std::uint32_t bits = 0x7f800000u | (payload & 0x003fffffu) | 0x00000001u;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

MessageHeader random_header(std::mt19937_64& rng, std::int64_t length) {
  MessageHeader h;
  h.sender = 1 + static_cast<std::int32_t>(rng() % 100);
  h.sender_step = 1 + static_cast<std::int64_t>(rng() >> 4);
  h.length = length;
  h.offset =
      1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(kParameters - length));
  h.send_time_s = nonzero_double(rng);
  return h;
}

WorkerState random_worker(std::mt19937_64& rng, int id) {
  WorkerState w;
  w.id = id;
  w.steps = nonzero_i64(rng);
  w.steps_at_last_eval = nonzero_i64(rng);
  w.lr_scale = nonzero_float(rng);
  w.restores = nonzero_i64(rng);
  w.params = floats(rng, kParameters);
  w.sampler_rng = generator_state(rng);
  w.peer_rng = generator_state(rng);
  w.adversary_rng = generator_state(rng);
  w.sampler_order = nonzero_vector<std::int32_t>(rng, 5 + rng() % 20, nonzero_i32);
  w.sampler_position = nonzero_i64(rng);
  w.sampler_epoch = nonzero_i64(rng);
  w.send_cursor = nonzero_i64(rng);
  w.peer_cursor = nonzero_vector<std::int64_t>(rng, 1 + rng() % 5, nonzero_i64);
  w.train_loss_sum = nonzero_double(rng);
  w.parzen_history = floats(rng, 3 + rng() % 10);
  w.parzen_history_seen = nonzero_i64(rng);
  w.parzen_counters = nonzero_vector<std::int64_t>(rng, 2 + rng() % 6, nonzero_i64);
  w.sent = nonzero_i64(rng);
  w.bytes_sent = nonzero_i64(rng);
  w.received = nonzero_i64(rng);
  w.malformed = nonzero_i64(rng);
  w.staleness_sum_s = nonzero_double(rng);
  w.step_gap_sum = nonzero_double(rng);
  w.send_pending = true;
  w.pending_peer = 1 + static_cast<int>(rng() % 50);
  w.pending_header = random_header(rng, 3);
  w.pending_payload = floats(rng, 3);
  w.pending_payload[1] = nan_with_payload(static_cast<std::uint32_t>(rng()));
  w.good_params = floats(rng, kParameters);
  w.good_step = nonzero_i64(rng);
  return w;
}

// A checkpoint with every field set to a random, non-default value.
Checkpoint random_checkpoint(std::uint64_t seed, int workers = 3) {
  std::mt19937_64 rng(seed);
  Checkpoint c;
  c.identity = {{"model", text(rng, 7)}, {"workers", std::to_string(workers)}, {text(rng, 4), ""}};
  c.fingerprint = rng() | 1;
  c.parameters = kParameters;
  c.ranks = 2 + static_cast<int>(rng() % 6);
  c.rank = 1 + static_cast<int>(rng() % static_cast<std::uint64_t>(c.ranks - 1));
  c.elapsed_s = std::abs(nonzero_double(rng));
  c.run_rng = generator_state(rng);
  for (int i = 0; i < workers; ++i)
    c.workers.push_back(random_worker(rng, 1 + i));
  for (int i = 0; i < 2; ++i) {
    UnreadMessage m;
    m.receiver = 1 + i;
    m.header = random_header(rng, 2 + i);
    m.payload = floats(rng, static_cast<std::size_t>(m.header.length));
    c.unread.push_back(m);
  }
  c.unread[0].payload[0] = nan_with_payload(static_cast<std::uint32_t>(rng()));
  c.collect_starts =
      nonzero_vector<std::int32_t>(rng, static_cast<std::size_t>(workers), nonzero_i32);
  c.settings = R"({"lr": )" + std::to_string(nonzero_double(rng)) + R"(, "tag": ")" +
                  std::to_string(rng()) + "\"}";
  return c;
}

// Bitwise, so that NaN payloads and signed zeros count.
template <typename T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

void expect_same_header(const MessageHeader& a, const MessageHeader& b) {
  EXPECT_EQ(a.sender, b.sender);
  EXPECT_EQ(a.sender_step, b.sender_step);
  EXPECT_EQ(a.offset, b.offset);
  EXPECT_EQ(a.length, b.length);
  EXPECT_TRUE(same_bits(a.send_time_s, b.send_time_s));
}

void expect_same(const Checkpoint& a, const Checkpoint& b) {
  EXPECT_EQ(a.identity, b.identity);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_EQ(a.parameters, b.parameters);
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.ranks, b.ranks);
  EXPECT_TRUE(same_bits(a.elapsed_s, b.elapsed_s));
  EXPECT_EQ(a.run_rng, b.run_rng);
  ASSERT_EQ(a.workers.size(), b.workers.size());
  for (std::size_t i = 0; i < a.workers.size(); ++i) {
    SCOPED_TRACE("worker " + std::to_string(i));
    const WorkerState& x = a.workers[i];
    const WorkerState& y = b.workers[i];
    EXPECT_EQ(x.id, y.id);
    EXPECT_EQ(x.steps, y.steps);
    EXPECT_EQ(x.steps_at_last_eval, y.steps_at_last_eval);
    EXPECT_TRUE(same_bits(x.lr_scale, y.lr_scale));
    EXPECT_EQ(x.restores, y.restores);
    EXPECT_TRUE(same_bits(x.params, y.params));
    EXPECT_EQ(x.sampler_rng, y.sampler_rng);
    EXPECT_EQ(x.peer_rng, y.peer_rng);
    EXPECT_EQ(x.adversary_rng, y.adversary_rng);
    EXPECT_EQ(x.sampler_order, y.sampler_order);
    EXPECT_EQ(x.sampler_position, y.sampler_position);
    EXPECT_EQ(x.sampler_epoch, y.sampler_epoch);
    EXPECT_EQ(x.send_cursor, y.send_cursor);
    EXPECT_EQ(x.peer_cursor, y.peer_cursor);
    EXPECT_TRUE(same_bits(x.train_loss_sum, y.train_loss_sum));
    EXPECT_TRUE(same_bits(x.parzen_history, y.parzen_history));
    EXPECT_EQ(x.parzen_history_seen, y.parzen_history_seen);
    EXPECT_EQ(x.parzen_counters, y.parzen_counters);
    EXPECT_EQ(x.sent, y.sent);
    EXPECT_EQ(x.bytes_sent, y.bytes_sent);
    EXPECT_EQ(x.received, y.received);
    EXPECT_EQ(x.malformed, y.malformed);
    EXPECT_TRUE(same_bits(x.staleness_sum_s, y.staleness_sum_s));
    EXPECT_TRUE(same_bits(x.step_gap_sum, y.step_gap_sum));
    EXPECT_EQ(x.send_pending, y.send_pending);
    EXPECT_EQ(x.pending_peer, y.pending_peer);
    expect_same_header(x.pending_header, y.pending_header);
    EXPECT_TRUE(same_bits(x.pending_payload, y.pending_payload));
    EXPECT_TRUE(same_bits(x.good_params, y.good_params));
    EXPECT_EQ(x.good_step, y.good_step);
  }
  ASSERT_EQ(a.unread.size(), b.unread.size());
  for (std::size_t i = 0; i < a.unread.size(); ++i) {
    SCOPED_TRACE("unread message " + std::to_string(i));
    EXPECT_EQ(a.unread[i].receiver, b.unread[i].receiver);
    expect_same_header(a.unread[i].header, b.unread[i].header);
    EXPECT_TRUE(same_bits(a.unread[i].payload, b.unread[i].payload));
  }
  EXPECT_EQ(a.collect_starts, b.collect_starts);
  EXPECT_EQ(a.settings, b.settings);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream all;
  all << in.rdbuf();
  return all.str();
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

template <typename T>
T load(const std::string& bytes, std::size_t at) {
  T v;
  std::memcpy(&v, bytes.data() + at, sizeof(T));
  return v;
}
template <typename T>
void store(std::string& bytes, std::size_t at, T v) {
  std::memcpy(bytes.data() + at, &v, sizeof(T));
}

// Where the length and count fields of an encoded checkpoint lie, worked out from the format
// (runtime/checkpoint.cpp) for the first worker and message of `c`. The tests check the value
// found at each place first, so a format change fails loudly instead of testing other bytes.
struct Offsets {
  std::size_t settings_count, setting_name_length, run_rng_length, worker_count, params_length,
      sampler_rng_length, sampler_order_length, pending_payload_length, message_count,
      message_offset, message_length, message_payload_length, collect_starts_length, config_length;
  std::vector<std::size_t> good_params_at;  // every worker's last good state's length
};

Offsets offsets_of(const Checkpoint& c) {
  Offsets o{};
  std::size_t p = 32;
  o.settings_count = p;
  p += 8;
  o.setting_name_length = p;
  for (const auto& [name, value] : c.identity)
    p += 16 + name.size() + value.size();
  p += 8 + 8 + 4 + 4 + 8;  // fingerprint, parameters, rank, ranks, elapsed
  o.run_rng_length = p;
  p += 8 + c.run_rng.size();
  o.worker_count = p;
  p += 8;
  for (std::size_t i = 0; i < c.workers.size(); ++i) {
    const WorkerState& w = c.workers[i];
    const std::size_t start = p;
    p += 4 + 8 + 8 + 4 + 8;  // id, steps, steps at evaluation, step-size scale, restores
    if (i == 0) o.params_length = p;
    p += 8 + 4 * w.params.size();
    if (i == 0) o.sampler_rng_length = p;
    p += 24 + w.sampler_rng.size() + w.peer_rng.size() + w.adversary_rng.size();
    if (i == 0) o.sampler_order_length = p;
    p += 8 + 4 * w.sampler_order.size() + 3 * 8 + 8 + 8 * w.peer_cursor.size() + 8 + 8 +
         4 * w.parzen_history.size() + 8 + 8 + 8 * w.parzen_counters.size() + 4 * 8 + 2 * 8 + 1 +
         4 + 36;
    if (i == 0) o.pending_payload_length = p;
    p += 8 + 4 * w.pending_payload.size();
    o.good_params_at.push_back(p);
    p += 8 + 4 * w.good_params.size() + 8;  // the last good state and its step
    (void)start;
  }
  o.message_count = p;
  p += 8;
  for (std::size_t i = 0; i < c.unread.size(); ++i) {
    if (i == 0) {
      o.message_offset = p + 4 + 4 + 8;
      o.message_length = o.message_offset + 8;
      o.message_payload_length = p + 4 + 36;
    }
    p += 4 + 36 + 8 + 4 * c.unread[i].payload.size();
  }
  o.collect_starts_length = p;
  p += 8 + 4 * c.collect_starts.size();
  o.config_length = p;
  return o;
}

// --- the codec -------------------------------------------------------------------------------

TEST(CheckpointCodec, RoundTripKeepsEveryFieldBitForBit) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    const Checkpoint c = random_checkpoint(seed);
    const std::string bytes = encode_checkpoint(c);
    const Checkpoint d = decode_checkpoint(bytes, "memory");
    expect_same(c, d);
    // The NaN payloads went through as bits, not as values.
    std::uint32_t sent_bits, read_bits;
    std::memcpy(&sent_bits, &c.unread[0].payload[0], 4);
    std::memcpy(&read_bits, &d.unread[0].payload[0], 4);
    EXPECT_EQ(sent_bits, read_bits);
    EXPECT_EQ(encode_checkpoint(d), bytes);
  }
}

TEST(CheckpointCodec, EmptyCheckpointRoundTrips) {
  const Checkpoint c;
  expect_same(c, decode_checkpoint(encode_checkpoint(c), "memory"));
}

TEST(CheckpointCodec, HeaderHasTheDocumentedLayout) {
  const Checkpoint c = random_checkpoint(5);
  const std::string bytes = encode_checkpoint(c);
  ASSERT_GT(bytes.size(), 32u);
  EXPECT_EQ(bytes.substr(0, 8), "ASGDCKPT");
  EXPECT_EQ(load<std::uint32_t>(bytes, 8), Checkpoint::kVersion);
  EXPECT_EQ(load<std::uint32_t>(bytes, 12), 32u);
  EXPECT_EQ(load<std::uint64_t>(bytes, 16), bytes.size() - 32);
  // The offsets the hostile-body tests rely on.
  const Offsets o = offsets_of(c);
  EXPECT_EQ(load<std::uint64_t>(bytes, o.settings_count), c.identity.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.setting_name_length), c.identity[0].first.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.run_rng_length), c.run_rng.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.worker_count), c.workers.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.params_length), c.workers[0].params.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.sampler_rng_length), c.workers[0].sampler_rng.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.sampler_order_length), c.workers[0].sampler_order.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.pending_payload_length),
            c.workers[0].pending_payload.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.good_params_at.front()), c.workers[0].good_params.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.message_count), c.unread.size());
  EXPECT_EQ(load<std::int64_t>(bytes, o.message_offset), c.unread[0].header.offset);
  EXPECT_EQ(load<std::int64_t>(bytes, o.message_length), c.unread[0].header.length);
  EXPECT_EQ(load<std::uint64_t>(bytes, o.message_payload_length), c.unread[0].payload.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.collect_starts_length), c.collect_starts.size());
  EXPECT_EQ(load<std::uint64_t>(bytes, o.config_length), c.settings.size());
  EXPECT_EQ(o.config_length + 8 + c.settings.size(), bytes.size());
}

// --- files -------------------------------------------------------------------------------------

TEST(CheckpointFile, WriteThenReadGivesTheSameCheckpoint) {
  const TempDir dir;
  const std::string path = checkpoint_file(dir.str(), 0, false);
  const Checkpoint c = random_checkpoint(11);
  write_checkpoint(path, c);
  expect_same(c, read_checkpoint(path));
  EXPECT_EQ(read_bytes(path), encode_checkpoint(c));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(CheckpointFile, FileNamesPerRankAndShared) {
  EXPECT_EQ(checkpoint_file("/d", 3, false), "/d/checkpoint.asgd");
  EXPECT_EQ(checkpoint_file("/d/", 3, true), "/d/checkpoint.rank3.asgd");
}

TEST(CheckpointFile, SecondWriteReplacesTheFirst) {
  const TempDir dir;
  const std::string path = dir.file("checkpoint.asgd");
  const Checkpoint first = random_checkpoint(21);
  const Checkpoint second = random_checkpoint(22, 2);
  write_checkpoint(path, first);
  write_checkpoint(path, second);
  expect_same(second, read_checkpoint(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // Only the checkpoint itself is left in the directory.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.str()),
                          std::filesystem::directory_iterator()),
            1);
}

// A reader that opens the file while it is being replaced, over and over, sees the old
// checkpoint or the new one, never a mix or a partly written file.
TEST(CheckpointFile, ConcurrentReaderAlwaysSeesAWholeCheckpoint) {
  const TempDir dir;
  const std::string path = dir.file("checkpoint.asgd");
  const Checkpoint a = random_checkpoint(31);
  const Checkpoint b = random_checkpoint(32, 1);
  const std::string a_bytes = encode_checkpoint(a);
  const std::string b_bytes = encode_checkpoint(b);
  write_checkpoint(path, a);
  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, bad{0};
  std::thread reader([&] {
    while (!done.load()) {
      try {
        const std::string seen = encode_checkpoint(read_checkpoint(path));
        if (seen != a_bytes && seen != b_bytes) ++bad;
      } catch (const std::exception&) {
        ++bad;
      }
      ++reads;
    }
  });
  for (int i = 0; i < 40; ++i)
    write_checkpoint(path, i % 2 ? a : b);
  // Keep writing until the reader has had a fair number of chances.
  for (int i = 0; i < 2000 && reads.load() < 50; ++i)
    write_checkpoint(path, i % 2 ? a : b);
  done = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0) << "of " << reads.load() << " reads";
  EXPECT_GE(reads.load(), 1);
}

TEST(CheckpointFile, MissingFileIsAnInputErrorNamingIt) {
  const TempDir dir;
  const std::string path = dir.file("nothing.asgd");
  expect_input_error([&] { read_checkpoint(path); }, {path});
  expect_input_error([&] { read_checkpoint(dir.str()); }, {dir.str(), "not a regular file"});
}

// --- damage ------------------------------------------------------------------------------------

TEST(CheckpointCorruption, EveryFlippedHeaderByteIsRejectedNamingTheFile) {
  const TempDir dir;
  const std::string good = encode_checkpoint(random_checkpoint(41));
  const std::string path = dir.file("checkpoint.asgd");
  for (std::size_t i = 0; i < 32; ++i) {
    for (const unsigned mask : {0x01u, 0x80u, 0xffu}) {
      SCOPED_TRACE("byte " + std::to_string(i) + " ^ " + std::to_string(mask));
      std::string bytes = good;
      bytes[i] = static_cast<char>(static_cast<unsigned char>(bytes[i]) ^ mask);
      write_bytes(path, bytes);
      expect_input_error([&] { read_checkpoint(path); }, {path});
    }
  }
}

TEST(CheckpointCorruption, FlippedBodyBytesFailTheChecksum) {
  const TempDir dir;
  const std::string good = encode_checkpoint(random_checkpoint(42));
  const std::string path = dir.file("checkpoint.asgd");
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 50; ++trial) {
    const std::size_t at = 32 + rng() % (good.size() - 32);
    const auto mask = static_cast<unsigned char>(1 + rng() % 255);
    SCOPED_TRACE("byte " + std::to_string(at));
    std::string bytes = good;
    bytes[at] = static_cast<char>(static_cast<unsigned char>(bytes[at]) ^ mask);
    expect_input_error([&] { decode_checkpoint(bytes, "'in memory'"); },
                       {"'in memory'", "checksum mismatch"});
    if (trial % 10 == 0) {
      write_bytes(path, bytes);
      expect_input_error([&] { read_checkpoint(path); }, {path, "checksum mismatch"});
    }
  }
}

TEST(CheckpointCorruption, TruncatedFileIsRejected) {
  const TempDir dir;
  const std::string good = encode_checkpoint(random_checkpoint(43));
  const std::string path = dir.file("checkpoint.asgd");
  for (const std::size_t size : {std::size_t{0}, std::size_t{7}, std::size_t{31}, std::size_t{32},
                                 good.size() / 2, good.size() - 1}) {
    SCOPED_TRACE("size " + std::to_string(size));
    write_bytes(path, good.substr(0, size));
    expect_input_error([&] { read_checkpoint(path); }, {path});
  }
}

TEST(CheckpointCorruption, AppendedBytesAreRejected) {
  const TempDir dir;
  const std::string good = encode_checkpoint(random_checkpoint(44));
  const std::string path = dir.file("checkpoint.asgd");
  for (const std::string& extra : {std::string(1, '\x01'), std::string(100, 'z'), good}) {
    write_bytes(path, good + extra);
    expect_input_error([&] { read_checkpoint(path); }, {path, "appended"});
  }
}

TEST(CheckpointCorruption, OtherVersionIsRejectedNamingIt) {
  const TempDir dir;
  const std::string path = dir.file("checkpoint.asgd");
  for (const std::uint32_t version : {Checkpoint::kVersion + 1, 0u, 0xffffffffu}) {
    std::string bytes = encode_checkpoint(random_checkpoint(45));
    store<std::uint32_t>(bytes, 8, version);
    write_bytes(path, bytes);
    expect_input_error([&] { read_checkpoint(path); },
                       {path, "version " + std::to_string(version)});
  }
}

// Version 1 had no last good state: such a checkpoint still reads, with none.
TEST(CheckpointCodec, Version1ReadsWithoutALastGoodState) {
  Checkpoint c = random_checkpoint(46);
  for (WorkerState& w : c.workers) {
    w.good_params.clear();
    w.good_step = 0;
  }
  const std::string v2 = encode_checkpoint(c);
  // The same bytes as version 1 wrote them: without each worker's (empty) last good state.
  std::string v1 = v2.substr(0, 32);
  std::size_t from = 32;
  for (const std::size_t at : offsets_of(c).good_params_at) {
    ASSERT_EQ(load<std::uint64_t>(v2, at), 0u);
    v1 += v2.substr(from, at - from);
    from = at + 16;
  }
  v1 += v2.substr(from);
  store<std::uint32_t>(v1, 8, 1u);
  store<std::uint64_t>(v1, 16, v1.size() - 32);
  const Checkpoint d = decode_checkpoint(v1, "'version 1'", /*verify_checksum=*/false);
  EXPECT_EQ(d.version, 1u);
  expect_same(c, d);
  EXPECT_EQ(decode_checkpoint(v2, "'version 2'").version, Checkpoint::kVersion);
}

TEST(CheckpointCorruption, ForeignFileIsRejected) {
  const TempDir dir;
  const std::string path = dir.file("checkpoint.asgd");
  write_bytes(path, std::string(4096, 'A'));
  expect_input_error([&] { read_checkpoint(path); }, {path, "not an asgd checkpoint"});
}

// --- hostile bodies: well-formed framing, lying fields -----------------------------------------

// Decodes without the checksum, as a crafted file with a matching checksum would be decoded.
// Only an InputError is acceptable; std::bad_alloc would mean a length was trusted.
void expect_rejected_unchecked(const std::string& bytes, std::initializer_list<std::string> parts) {
  expect_input_error([&] { decode_checkpoint(bytes, "'hostile'", false); }, parts);
}

TEST(CheckpointHostile, HugeLengthsAndCountsAreRejectedWithoutAllocating) {
  const Checkpoint c = random_checkpoint(51);
  const std::string good = encode_checkpoint(c);
  ASSERT_NO_THROW(decode_checkpoint(good, "'good'", false));
  const Offsets o = offsets_of(c);
  const std::uint64_t huge[] = {std::uint64_t{1} << 62, std::uint64_t{1} << 63, ~std::uint64_t{0},
                                (std::uint64_t{1} << 62) + 1, good.size()};
  for (const std::size_t at :
       {o.settings_count, o.setting_name_length, o.run_rng_length, o.worker_count, o.params_length,
        o.sampler_rng_length, o.sampler_order_length, o.pending_payload_length,
        o.good_params_at.front(), o.message_count, o.message_payload_length,
        o.collect_starts_length, o.config_length}) {
    for (const std::uint64_t value : huge) {
      SCOPED_TRACE("byte " + std::to_string(at) + " = " + std::to_string(value));
      std::string bytes = good;
      store(bytes, at, value);
      expect_rejected_unchecked(bytes, {"'hostile'"});
    }
  }
}

// Every 8-byte window of the body overwritten with a huge value: whatever field it hits (or
// straddles), the decoder either accepts or throws InputError, never anything else.
TEST(CheckpointHostile, HugeValueAnywhereNeverCrashes) {
  const std::string good = encode_checkpoint(random_checkpoint(52, 2));
  int rejected = 0;
  for (std::size_t at = 32; at + 8 <= good.size(); ++at) {
    for (const std::uint64_t value : {std::uint64_t{1} << 62, ~std::uint64_t{0}}) {
      std::string bytes = good;
      store(bytes, at, value);
      try {
        decode_checkpoint(bytes, "'hostile'", false);
      } catch (const InputError&) {
        ++rejected;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "byte " << at << ": " << e.what();
      }
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(CheckpointHostile, MessageRangeOutsideTheStateIsRejected) {
  const Checkpoint c = random_checkpoint(53);
  const std::string good = encode_checkpoint(c);
  const Offsets o = offsets_of(c);
  const std::int64_t length = c.unread[0].header.length;
  for (const std::int64_t offset :
       {std::int64_t{-1}, kParameters - length + 1, kParameters,
        std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::min()}) {
    SCOPED_TRACE("offset " + std::to_string(offset));
    std::string bytes = good;
    store(bytes, o.message_offset, offset);
    expect_rejected_unchecked(bytes, {"'hostile'", "message header"});
  }
  // A length that disagrees with the payload that follows.
  for (const std::int64_t bad_length : {length + 1, length - 1, std::int64_t{-1}}) {
    std::string bytes = good;
    store(bytes, o.message_length, bad_length);
    expect_rejected_unchecked(bytes, {"'hostile'", "message header"});
  }
}

// The same lies written by the encoder itself, so they come with a valid checksum and reach
// the checks through read_checkpoint as a crafted file would.
TEST(CheckpointHostile, InconsistentStateBehindAValidChecksumIsRejected) {
  const TempDir dir;
  const std::string path = dir.file("checkpoint.asgd");
  auto expect_rejected = [&](const Checkpoint& c, const std::string& part) {
    write_checkpoint(path, c);
    expect_input_error([&] { read_checkpoint(path); }, {path, part});
  };
  {
    Checkpoint c = random_checkpoint(54);
    c.unread[1].header.offset = kParameters - c.unread[1].header.length + 1;
    expect_rejected(c, "message header");
  }
  {
    Checkpoint c = random_checkpoint(54);
    c.unread[0].header.length = 1;  // the payload holds 2
    expect_rejected(c, "message header");
  }
  {
    Checkpoint c = random_checkpoint(54);
    c.workers[2].params.pop_back();
    expect_rejected(c, "parameter count");
  }
  for (const double elapsed :
       {-1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    Checkpoint c = random_checkpoint(54);
    c.elapsed_s = elapsed;
    expect_rejected(c, "elapsed time");
  }
  {
    Checkpoint c = random_checkpoint(54);
    c.rank = c.ranks;
    expect_rejected(c, "rank");
  }
  {
    Checkpoint c = random_checkpoint(54);
    c.ranks = 0;
    c.rank = 0;
    expect_rejected(c, "rank");
  }
  {
    Checkpoint c = random_checkpoint(54);
    c.rank = -1;
    expect_rejected(c, "rank");
  }
  {
    // With no worker to pin it down, a negative parameter count must not make the range
    // check of a message wrap around (parameters - length overflowing int64).
    Checkpoint c = random_checkpoint(54, 0);
    c.parameters = std::numeric_limits<std::int64_t>::min();
    expect_rejected(c, "parameter count");
  }
  {
    Checkpoint c = random_checkpoint(54, 0);
    c.parameters = -1;
    c.unread.clear();
    expect_rejected(c, "parameter count");
  }
}

TEST(CheckpointHostile, BooleanOtherThanZeroOrOneIsRejected) {
  const Checkpoint c = random_checkpoint(55);
  std::string bytes = encode_checkpoint(c);
  const Offsets o = offsets_of(c);
  // The pending-send flag is the byte 4 + 36 bytes (peer, header) before the payload length.
  const std::size_t flag = o.pending_payload_length - 36 - 4 - 1;
  ASSERT_EQ(bytes[flag], 1);
  bytes[flag] = 2;
  expect_rejected_unchecked(bytes, {"'hostile'", "pending-send flag"});
}

// --- resuming ----------------------------------------------------------------------------------

TEST(CheckpointResumable, SameSettingsPass) {
  const Checkpoint c = random_checkpoint(61);
  EXPECT_NO_THROW(check_resumable(c, "ck.asgd", c.identity));
  // The order of the settings does not matter.
  auto reversed = c.identity;
  std::reverse(reversed.begin(), reversed.end());
  EXPECT_NO_THROW(check_resumable(c, "ck.asgd", reversed));
}

TEST(CheckpointResumable, EveryDifferingSettingIsNamedWithBothValues) {
  Checkpoint c;
  c.identity = {{"model", "mlp"}, {"workers", "4"}, {"seed", "7"}, {"batch", "64"}};
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"model", "softmax"}, {"workers", "4"}, {"seed", "8"}, {"batch", "64"}};
  try {
    check_resumable(c, "/runs/a/checkpoint.asgd", expected);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    for (const char* part :
         {"/runs/a/checkpoint.asgd", "model", "'mlp'", "'softmax'", "seed", "'7'", "'8'"})
      EXPECT_NE(what.find(part), std::string::npos) << "lacks " << part << ": " << what;
    // Settings that agree are not listed.
    EXPECT_EQ(what.find("workers"), std::string::npos) << what;
    EXPECT_EQ(what.find("batch"), std::string::npos) << what;
  }
}

TEST(CheckpointResumable, SettingTheCheckpointLacksIsADifference) {
  Checkpoint c;
  c.identity = {{"model", "mlp"}};
  try {
    check_resumable(c, "ck.asgd", {{"model", "mlp"}, {"merge", "average"}});
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("merge"), std::string::npos) << what;
    EXPECT_NE(what.find("not recorded"), std::string::npos) << what;
    EXPECT_NE(what.find("'average'"), std::string::npos) << what;
  }
}

// --- the rounds of threaded checkpoints ----------------------------------------------------------

// Worker `id`'s state at `steps`: what the rounds hand back is told apart by these two.
WorkerState state_at(int id, std::int64_t steps) {
  WorkerState s;
  s.id = id;
  s.steps = steps;
  s.params = {static_cast<float>(id), static_cast<float>(steps)};
  return s;
}

// The rounds, with what they completed as (id, steps) of each state, in the order handed on.
using Round = std::vector<std::pair<int, std::int64_t>>;
struct Rounds {
  explicit Rounds(std::size_t workers)
      : rounds(workers, [this](std::vector<WorkerState> states) {
          Round r;
          for (const WorkerState& s : states) {
            EXPECT_EQ(s.params,
                      (std::vector<float>{static_cast<float>(s.id), static_cast<float>(s.steps)}));
            r.emplace_back(s.id, s.steps);
          }
          completed.push_back(r);
        }) {}
  // The rounds completed since the last call.
  std::vector<Round> take() { return std::exchange(completed, {}); }
  std::vector<Round> completed;
  CheckpointRounds rounds;
};

TEST(CheckpointRounds, ARoundCompletesWhenEveryWorkerAddedItsState) {
  Rounds r(3);
  r.rounds.add(2, 1, state_at(2, 9));
  r.rounds.add(0, 1, state_at(0, 10));
  r.rounds.add(0, 1, state_at(0, 10));  // again: still one state of worker 0
  EXPECT_TRUE(r.take().empty());
  r.rounds.add(1, 1, state_at(1, 11));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 10}, {1, 11}, {2, 9}}}));
  // A late state for the round just handed on is dropped, and does not count for the next.
  r.rounds.add(2, 1, state_at(2, 12));
  r.rounds.add(0, 2, state_at(0, 20));
  r.rounds.add(1, 2, state_at(1, 21));
  EXPECT_TRUE(r.take().empty());
  r.rounds.add(2, 2, state_at(2, 22));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 20}, {1, 21}, {2, 22}}}));
}

TEST(CheckpointRounds, ANewerRoundDropsAnIncompleteOne) {
  Rounds r(2);
  r.rounds.add(0, 3, state_at(0, 30));
  r.rounds.add(0, 4, state_at(0, 40));  // worker 1 straggles
  r.rounds.add(1, 3, state_at(1, 31));  // too late for round 3
  EXPECT_TRUE(r.take().empty());
  r.rounds.add(1, 4, state_at(1, 41));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 40}, {1, 41}}}));
}

// A worker with a smaller shard, or a faster one, ends its epochs while worker 0 trains on:
// without it no round would complete again, and the run would write no checkpoint until its end.
TEST(CheckpointRounds, ARetiredWorkersFinalStateCompletesEveryLaterRound) {
  Rounds r(3);
  r.rounds.add(0, 1, state_at(0, 10));
  r.rounds.add(2, 1, state_at(2, 10));
  // Worker 1 retires while round 1 waits for it: its final state completes the round.
  r.rounds.retire(1, state_at(1, 13));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 10}, {1, 13}, {2, 10}}}));
  // And stands in for it in each later round, the next one and one further on.
  r.rounds.add(0, 2, state_at(0, 20));
  r.rounds.add(2, 2, state_at(2, 20));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 20}, {1, 13}, {2, 20}}}));
  r.rounds.add(2, 5, state_at(2, 50));
  // Worker 2 retires too, having added its state for round 5: that state stays in round 5.
  r.rounds.retire(2, state_at(2, 52));
  EXPECT_TRUE(r.take().empty());
  r.rounds.add(0, 5, state_at(0, 50));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 50}, {1, 13}, {2, 50}}}));
  // From then on worker 0 alone completes each round.
  r.rounds.add(0, 6, state_at(0, 60));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 60}, {1, 13}, {2, 52}}}));
}

TEST(CheckpointRounds, AWorkerRetiredBeforeTheFirstRoundTakesPartInIt) {
  Rounds r(2);
  r.rounds.retire(1, state_at(1, 3));  // no round open yet
  EXPECT_TRUE(r.take().empty());
  r.rounds.add(0, 1, state_at(0, 10));
  EXPECT_EQ(r.take(), (std::vector<Round>{{{0, 10}, {1, 3}}}));
}

// Threads complete rounds concurrently; each is handed on under the rounds' lock, so in the
// order of the rounds (a writer keeping the latest must never get an older one last).
TEST(CheckpointRounds, RoundsCompletedOnSeveralThreadsAreHandedOnInOrder) {
  Rounds r(2);
  constexpr int kRounds = 200;
  std::thread other([&] {
    for (int round = 1; round <= kRounds; ++round)
      r.rounds.add(1, round, state_at(1, round));
  });
  for (int round = 1; round <= kRounds; ++round)
    r.rounds.add(0, round, state_at(0, round));
  other.join();
  const std::vector<Round> done = r.take();
  ASSERT_FALSE(done.empty());
  for (std::size_t k = 1; k < done.size(); ++k)
    EXPECT_LT(done[k - 1][0].second, done[k][0].second);
  EXPECT_EQ(done.back(), (Round{{0, kRounds}, {1, kRounds}}));
}

TEST(CheckpointRounds, RefusesWorkersAndRoundsOutOfRange) {
  Rounds r(2);
  EXPECT_THROW(r.rounds.add(2, 1, state_at(2, 1)), Error);
  EXPECT_THROW(r.rounds.add(0, 0, state_at(0, 1)), Error);
  EXPECT_THROW(r.rounds.retire(5, state_at(5, 1)), Error);
  EXPECT_THROW(CheckpointRounds(0, [](std::vector<WorkerState>) {}), Error);
  EXPECT_THROW(CheckpointRounds(2, nullptr), Error);
}

// --- the background writer ---------------------------------------------------------------------

Checkpoint numbered_checkpoint(int i) {
  Checkpoint c = random_checkpoint(1000 + static_cast<std::uint64_t>(i));
  c.workers[0].steps = i + 1;
  return c;
}

TEST(CheckpointWriter, LatestWinsAndEverySubmissionIsCounted) {
  const TempDir dir;
  const std::string path = dir.file("checkpoint.asgd");
  CheckpointWriter writer;
  for (int i = 0; i < 20; ++i)
    writer.submit(path, numbered_checkpoint(i));
  writer.drain();
  EXPECT_EQ(writer.written() + writer.replaced(), 20);
  EXPECT_GE(writer.written(), 1);
  expect_same(numbered_checkpoint(19), read_checkpoint(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // It keeps working after a drain.
  writer.submit(path, numbered_checkpoint(20));
  writer.drain();
  EXPECT_EQ(writer.written() + writer.replaced(), 21);
  expect_same(numbered_checkpoint(20), read_checkpoint(path));
}

TEST(CheckpointWriter, DrainWithNothingSubmittedReturns) {
  CheckpointWriter writer;
  writer.drain();
  EXPECT_EQ(writer.written(), 0);
  EXPECT_EQ(writer.replaced(), 0);
}

// The destructor promises to write what was submitted: a checkpoint still waiting behind one
// being written when the writer goes must reach the disk too.
TEST(CheckpointWriter, DestructorWritesTheLastSubmission) {
  for (int trial = 0; trial < 10; ++trial) {
    const TempDir dir;
    const std::string path = dir.file("checkpoint.asgd");
    {
      CheckpointWriter writer;
      for (int i = 0; i < 20; ++i)
        writer.submit(path, numbered_checkpoint(i));
    }
    ASSERT_EQ(read_checkpoint(path).workers[0].steps, 20) << "trial " << trial;
  }
}

TEST(CheckpointWriter, WriteErrorIsRethrownNamingThePath) {
  const TempDir dir;
  const std::string path = dir.file("no/such/dir/checkpoint.asgd");
  CheckpointWriter writer;
  writer.submit(path, numbered_checkpoint(0));
  auto expect_error = [&](const std::function<void()>& body) {
    try {
      body();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  expect_error([&] { writer.drain(); });
  // The error stays: the next submit reports it too, and nothing was written.
  expect_error([&] { writer.submit(path, numbered_checkpoint(1)); });
  EXPECT_EQ(writer.written(), 0);
  EXPECT_FALSE(std::filesystem::exists(dir.file("no")));
}

}  // namespace
}  // namespace asgd
