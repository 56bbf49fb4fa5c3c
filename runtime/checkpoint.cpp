#include "runtime/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <type_traits>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

namespace asgd {
namespace {

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoints are written little-endian; this build assumes a little-endian host"
#endif

constexpr char kMagic[8] = {'A', 'S', 'G', 'D', 'C', 'K', 'P', 'T'};
constexpr std::size_t kHeaderBytes = 32;
constexpr std::uint64_t kSeed = 0x41534744434b5054ull;

// Appends plain values and arrays to a byte string.
class Out {
 public:
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_arithmetic_v<T>, "plain values only");
    bytes_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void put_bool(bool v) { put<std::uint8_t>(v ? 1 : 0); }
  void put_string(const std::string& s) {
    put<std::uint64_t>(s.size());
    bytes_.append(s);
  }
  template <typename T>
  void put_vector(const std::vector<T>& v) {
    static_assert(std::is_arithmetic_v<T>, "plain values only");
    put<std::uint64_t>(v.size());
    bytes_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  void put_header(const MessageHeader& h) {
    put(h.sender);
    put(h.sender_step);
    put(h.offset);
    put(h.length);
    put(h.send_time_s);
  }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

// Reads them back; every read is bounds-checked against what is left.
class In {
 public:
  In(const std::string& bytes, std::size_t at, const std::string& origin)
      : bytes_(bytes), at_(at), origin_(origin) {}

  template <typename T>
  T get(const char* what) {
    T v;
    need(sizeof(T), what);
    std::memcpy(&v, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  bool get_bool(const char* what) {
    const auto v = get<std::uint8_t>(what);
    if (v > 1) fail(what, "is neither 0 nor 1");
    return v == 1;
  }
  std::string get_string(const char* what) {
    const auto n = get<std::uint64_t>(what);
    need(n, what);
    std::string s = bytes_.substr(at_, static_cast<std::size_t>(n));
    at_ += static_cast<std::size_t>(n);
    return s;
  }
  template <typename T>
  std::vector<T> get_vector(const char* what) {
    const auto n = get<std::uint64_t>(what);
    if (n > (bytes_.size() - at_) / sizeof(T))
      fail(what, "claims more elements than the file holds");
    std::vector<T> v(static_cast<std::size_t>(n));
    // An empty vector's data() may be null, and memcpy's pointers must not be even for 0 bytes.
    if (!v.empty()) std::memcpy(v.data(), bytes_.data() + at_, v.size() * sizeof(T));
    at_ += v.size() * sizeof(T);
    return v;
  }
  MessageHeader get_header(const char* what) {
    MessageHeader h;
    h.sender = get<std::int32_t>(what);
    h.sender_step = get<std::int64_t>(what);
    h.offset = get<std::int64_t>(what);
    h.length = get<std::int64_t>(what);
    h.send_time_s = get<double>(what);
    return h;
  }
  // A count of records that follow, each at least `min_bytes` long.
  std::uint64_t get_count(const char* what, std::size_t min_bytes) {
    const auto n = get<std::uint64_t>(what);
    if (n > (bytes_.size() - at_) / min_bytes)
      fail(what, "claims more records than the file holds");
    return n;
  }
  bool at_end() const { return at_ == bytes_.size(); }
  [[noreturn]] void fail(const char* what, const char* problem) const {
    ASGD_INPUT_ERROR(
        "checkpoint {}: the {} at byte {} {}; the file is damaged or was not "
        "written by asgd",
        origin_, what, at_, problem);
  }

 private:
  void need(std::uint64_t n, const char* what) const {
    if (n > bytes_.size() - at_) fail(what, "runs past the end of the file");
  }
  const std::string& bytes_;
  std::size_t at_;
  const std::string& origin_;
};

void put_worker(Out& o, const WorkerState& w) {
  o.put<std::int32_t>(w.id);
  o.put(w.steps);
  o.put(w.steps_at_last_eval);
  o.put(w.lr_scale);
  o.put(w.restores);
  o.put_vector(w.params);
  o.put_string(w.sampler_rng);
  o.put_string(w.peer_rng);
  o.put_string(w.adversary_rng);
  o.put_vector(w.sampler_order);
  o.put(w.sampler_position);
  o.put(w.sampler_epoch);
  o.put(w.send_cursor);
  o.put_vector(w.peer_cursor);
  o.put(w.train_loss_sum);
  o.put_vector(w.parzen_history);
  o.put(w.parzen_history_seen);
  o.put_vector(w.parzen_counters);
  o.put(w.sent);
  o.put(w.bytes_sent);
  o.put(w.received);
  o.put(w.malformed);
  o.put(w.staleness_sum_s);
  o.put(w.step_gap_sum);
  o.put_bool(w.send_pending);
  o.put<std::int32_t>(w.pending_peer);
  o.put_header(w.pending_header);
  o.put_vector(w.pending_payload);
  o.put_vector(w.good_params);
  o.put(w.good_step);
}

WorkerState get_worker(In& in, std::uint32_t version) {
  WorkerState w;
  w.id = in.get<std::int32_t>("worker id");
  w.steps = in.get<std::int64_t>("step count");
  w.steps_at_last_eval = in.get<std::int64_t>("step of the last evaluation");
  w.lr_scale = in.get<float>("step-size scale");
  w.restores = in.get<std::int64_t>("restore count");
  w.params = in.get_vector<float>("model state");
  w.sampler_rng = in.get_string("sampler generator");
  w.peer_rng = in.get_string("peer generator");
  w.adversary_rng = in.get_string("adversary generator");
  w.sampler_order = in.get_vector<std::int32_t>("sampler order");
  w.sampler_position = in.get<std::int64_t>("sampler position");
  w.sampler_epoch = in.get<std::int64_t>("sampler epoch");
  w.send_cursor = in.get<std::int64_t>("send cursor");
  w.peer_cursor = in.get_vector<std::int64_t>("peer cursors");
  w.train_loss_sum = in.get<double>("training loss");
  w.parzen_history = in.get_vector<float>("filter history");
  w.parzen_history_seen = in.get<std::int64_t>("filter history count");
  w.parzen_counters = in.get_vector<std::int64_t>("filter counters");
  w.sent = in.get<std::int64_t>("sent count");
  w.bytes_sent = in.get<std::int64_t>("bytes sent");
  w.received = in.get<std::int64_t>("received count");
  w.malformed = in.get<std::int64_t>("malformed count");
  w.staleness_sum_s = in.get<double>("staleness");
  w.step_gap_sum = in.get<double>("step gap");
  w.send_pending = in.get_bool("pending-send flag");
  w.pending_peer = in.get<std::int32_t>("pending peer");
  w.pending_header = in.get_header("pending header");
  w.pending_payload = in.get_vector<float>("pending payload");
  if (version >= 2) {
    w.good_params = in.get_vector<float>("last good state");
    w.good_step = in.get<std::int64_t>("step of the last good state");
  }
  return w;
}

[[noreturn]] void fail_io(const std::string& what, const std::string& path) {
  ASGD_THROW("writing checkpoint '{}': {} failed: {}", path, what, std::strerror(errno));
}

void write_all(int fd, const char* data, std::size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io("write", path);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::string directory_of(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
}  // namespace

std::string checkpoint_file(const std::string& dir, int rank, bool per_rank) {
  const std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  return per_rank ? fmt::format("{}checkpoint.rank{}.asgd", base, rank) : base + "checkpoint.asgd";
}

std::string encode_checkpoint(const Checkpoint& c) {
  Out body;
  body.put<std::uint64_t>(c.identity.size());
  for (const auto& [name, value] : c.identity) {
    body.put_string(name);
    body.put_string(value);
  }
  body.put(c.fingerprint);
  body.put(c.parameters);
  body.put<std::int32_t>(c.rank);
  body.put<std::int32_t>(c.ranks);
  body.put(c.elapsed_s);
  body.put_string(c.run_rng);
  body.put<std::uint64_t>(c.workers.size());
  for (const WorkerState& w : c.workers)
    put_worker(body, w);
  body.put<std::uint64_t>(c.unread.size());
  for (const UnreadMessage& m : c.unread) {
    body.put<std::int32_t>(m.receiver);
    body.put_header(m.header);
    body.put_vector(m.payload);
  }
  body.put_vector(c.collect_starts);
  body.put_string(c.settings);

  Out file;
  file.bytes().append(kMagic, sizeof(kMagic));
  file.put<std::uint32_t>(Checkpoint::kVersion);
  file.put<std::uint32_t>(kHeaderBytes);
  file.put<std::uint64_t>(body.bytes().size());
  file.put<std::uint64_t>(XXH3_64bits_withSeed(body.bytes().data(), body.bytes().size(), kSeed));
  file.bytes() += body.bytes();
  return std::move(file.bytes());
}

Checkpoint decode_checkpoint(const std::string& bytes, const std::string& origin,
                             bool verify_checksum) {
  if (bytes.size() >= sizeof(kMagic) && bytes.size() < kHeaderBytes &&
      std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0)
    ASGD_INPUT_ERROR(
        "checkpoint {}: truncated: {} bytes, shorter than the {}-byte header; the "
        "write was cut off: resume from another checkpoint",
        origin, bytes.size(), kHeaderBytes);
  if (bytes.size() < kHeaderBytes || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    ASGD_INPUT_ERROR(
        "checkpoint {}: not an asgd checkpoint (it does not start with "
        "\"ASGDCKPT\"); point --resume at the --checkpoint-dir of an earlier run",
        origin);
  In header(bytes, sizeof(kMagic), origin);
  const auto version = header.get<std::uint32_t>("version");
  const auto header_bytes = header.get<std::uint32_t>("header size");
  const auto body_bytes = header.get<std::uint64_t>("body size");
  const auto checksum = header.get<std::uint64_t>("checksum");
  if (version != Checkpoint::kVersion && version != 1)
    ASGD_INPUT_ERROR(
        "checkpoint {}: format version {}, but this asgd reads version {}; resume "
        "with the asgd that wrote it",
        origin, version, Checkpoint::kVersion);
  if (header_bytes != kHeaderBytes) header.fail("header size", "is not 32");
  if (body_bytes != bytes.size() - kHeaderBytes)
    ASGD_INPUT_ERROR(
        "checkpoint {}: the header announces {} bytes of state but the file holds "
        "{}; the file was truncated or appended to",
        origin, body_bytes, bytes.size() - kHeaderBytes);
  const std::uint64_t actual =
      XXH3_64bits_withSeed(bytes.data() + kHeaderBytes, bytes.size() - kHeaderBytes, kSeed);
  if (verify_checksum && actual != checksum)
    ASGD_INPUT_ERROR(
        "checkpoint {}: checksum mismatch (stored {:016x}, computed {:016x}); the "
        "file is corrupted: resume from another copy or start afresh",
        origin, checksum, actual);

  In in(bytes, kHeaderBytes, origin);
  Checkpoint c;
  c.version = version;
  const std::uint64_t settings = in.get_count("settings count", 16);
  for (std::uint64_t i = 0; i < settings; ++i) {
    std::string name = in.get_string("setting name");
    std::string value = in.get_string("setting value");
    c.identity.emplace_back(std::move(name), std::move(value));
  }
  c.fingerprint = in.get<std::uint64_t>("model fingerprint");
  c.parameters = in.get<std::int64_t>("parameter count");
  // Checked here, not only against the workers' states: with none, a negative count would
  // make the message range check below overflow (parameters - length).
  if (c.parameters < 0) in.fail("parameter count", "is negative");
  c.rank = in.get<std::int32_t>("rank");
  c.ranks = in.get<std::int32_t>("rank count");
  c.elapsed_s = in.get<double>("elapsed time");
  if (!(c.elapsed_s >= 0 && std::isfinite(c.elapsed_s)))
    in.fail("elapsed time", "is not a finite number of seconds >= 0");
  c.run_rng = in.get_string("run generator");
  const std::uint64_t workers = in.get_count("worker count", 64);
  for (std::uint64_t i = 0; i < workers; ++i) {
    c.workers.push_back(get_worker(in, version));
    const WorkerState& w = c.workers.back();
    if (static_cast<std::int64_t>(w.params.size()) != c.parameters)
      in.fail("model state", "does not hold the announced parameter count");
    if (!w.good_params.empty() && static_cast<std::int64_t>(w.good_params.size()) != c.parameters)
      in.fail("last good state", "does not hold the announced parameter count");
  }
  const std::uint64_t unread = in.get_count("message count", 44);
  for (std::uint64_t i = 0; i < unread; ++i) {
    UnreadMessage m;
    m.receiver = in.get<std::int32_t>("message receiver");
    m.header = in.get_header("message header");
    m.payload = in.get_vector<float>("message payload");
    if (m.header.length < 1 || m.header.length != static_cast<std::int64_t>(m.payload.size()) ||
        m.header.offset < 0 || m.header.offset > c.parameters - m.header.length)
      in.fail("message header", "describes a range outside the model state");
    c.unread.push_back(std::move(m));
  }
  c.collect_starts = in.get_vector<std::int32_t>("receive order");
  c.settings = in.get_string("settings");
  if (!in.at_end()) in.fail("end of the state", "is followed by unexpected bytes");
  if (c.ranks < 1 || c.rank < 0 || c.rank >= c.ranks) in.fail("rank", "is out of range");
  return c;
}

void write_checkpoint(const std::string& path, const Checkpoint& c) {
  const std::string bytes = encode_checkpoint(c);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_io(fmt::format("creating '{}'", tmp), path);
  try {
    write_all(fd, bytes.data(), bytes.size(), path);
    if (::fsync(fd) != 0) fail_io("fsync", path);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail_io("close", path);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    errno = error;
    fail_io(fmt::format("renaming '{}'", tmp), path);
  }
  // The rename itself is durable only once the directory is.
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) fail_io("opening its directory", path);
  const int synced = ::fsync(dir);
  ::close(dir);
  if (synced != 0) fail_io("fsync of its directory", path);
}

Checkpoint read_checkpoint(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    ASGD_INPUT_ERROR(
        "no checkpoint at '{}' ({}); give the --checkpoint-dir of a run that "
        "wrote one",
        path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) ASGD_INPUT_ERROR("checkpoint '{}' is not a regular file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) ASGD_INPUT_ERROR("cannot open checkpoint '{}': {}", path, std::strerror(errno));
  std::ostringstream all;
  all << in.rdbuf();
  if (in.bad()) ASGD_INPUT_ERROR("reading checkpoint '{}' failed", path);
  return decode_checkpoint(all.str(), "'" + path + "'");
}

void check_resumable(const Checkpoint& c, const std::string& path,
                     const std::vector<std::pair<std::string, std::string>>& expected) {
  std::string differences;
  for (const auto& [name, value] : expected) {
    std::string stored = "(not recorded)";
    for (const auto& [n, v] : c.identity)
      if (n == name) stored = v;
    if (stored != value)
      differences += fmt::format("\n  {}: checkpoint '{}', this run '{}'", name, stored, value);
  }
  if (!differences.empty())
    ASGD_INPUT_ERROR(
        "--resume: checkpoint '{}' was written by a different run:{}\nresume with "
        "the same settings (epochs, max-seconds, target and step size may change), "
        "or start afresh without --resume",
        path, differences);
}

CheckpointRounds::CheckpointRounds(std::size_t workers,
                                   std::function<void(std::vector<WorkerState>)> complete)
    : workers_(workers), complete_(std::move(complete)), states_(workers), retired_(workers) {
  ASGD_CHECK(workers >= 1 && complete_, "checkpoint rounds of {} workers", workers);
}

void CheckpointRounds::add(std::size_t i, std::int64_t round, WorkerState state) {
  ASGD_CHECK(i < workers_ && round > 0, "checkpoint round {} from worker {} of {}", round, i,
             workers_);
  std::lock_guard<std::mutex> lock(mutex_);
  if (round < round_) return;
  if (round > round_) open(round);
  if (!states_[i]) ++have_;
  states_[i] = std::move(state);
  complete_if_full();
}

void CheckpointRounds::retire(std::size_t i, WorkerState final_state) {
  ASGD_CHECK(i < workers_, "worker {} of {} retires from checkpoint rounds", i, workers_);
  std::lock_guard<std::mutex> lock(mutex_);
  retired_[i] = std::move(final_state);
  if (round_ == 0 || states_[i]) return;  // no round open, or it has this worker's state
  states_[i] = retired_[i];
  ++have_;
  complete_if_full();
}

void CheckpointRounds::complete_if_full() {
  if (have_ < workers_) return;
  std::vector<WorkerState> states;
  states.reserve(workers_);
  for (auto& s : states_)
    states.push_back(std::move(*s));
  // The next round opens at once: a late state for the round just completed is dropped.
  open(round_ + 1);
  complete_(std::move(states));
}

void CheckpointRounds::open(std::int64_t round) {
  round_ = round;
  states_ = retired_;
  have_ = static_cast<std::size_t>(
      std::count_if(states_.begin(), states_.end(), [](const auto& s) { return s.has_value(); }));
}

CheckpointWriter::CheckpointWriter() : thread_([this] { loop(); }) {}

CheckpointWriter::~CheckpointWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void CheckpointWriter::submit(std::string path, Checkpoint checkpoint) {
  error_.rethrow_if_set();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (next_) ++replaced_;
    next_.emplace(std::move(path), std::move(checkpoint));
  }
  wake_.notify_all();
}

void CheckpointWriter::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return (!next_ && !busy_) || error_.has_error(); });
  lock.unlock();
  error_.rethrow_if_set();
}

std::int64_t CheckpointWriter::written() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return written_;
}

std::int64_t CheckpointWriter::replaced() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return replaced_;
}

void CheckpointWriter::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [this] { return stop_ || next_; });
    if (!next_) return;  // stopping with nothing to write
    if (stop_ && error_.has_error()) return;
    auto job = std::move(*next_);
    next_.reset();
    busy_ = true;
    lock.unlock();
    bool ok = true;
    try {
      write_checkpoint(job.first, job.second);
    } catch (...) {
      ok = false;
      error_.capture(std::current_exception());  // the first error is kept and handed back
    }
    lock.lock();
    busy_ = false;
    if (ok) ++written_;  // this write, whatever an earlier one did
    idle_.notify_all();
    // No return on stop_ here: a checkpoint submitted while this one was being written is
    // still waiting, and the destructor promises to write it; the wait above returns at once.
  }
}

}  // namespace asgd
