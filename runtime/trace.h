// A timeline recorder for `--trace FILE.json`: compute steps, copies, sends and receives of
// every worker, written as a Chrome/Perfetto trace (Trace Event Format: a JSON object with
// "traceEvents" and "displayTimeUnit") so that overlap, message latency and stragglers show.
//
// Lanes. A lane is one thread's timeline (a worker's compute thread, its copy stream, the
// communication thread); it appears as thread `thread` of process `process` in the viewer.
// Lanes are added at set-up with add_lane(); afterwards each lane is written by exactly one
// thread at a time, with no lock and no atomic read-modify-write: an event is a fixed-size
// POD appended to the lane's own storage. Event and argument names are NOT copied: they must
// be string literals (or otherwise outlive the recorder).
//
// Time. Timestamps are nanoseconds of the steady clock since the recorder's epoch (its
// construction), written as microseconds. set_time_offset_us() shifts everything this
// recorder writes, to align the ranks of an MPI run: each rank records in its own process,
// ships events_json() to rank 0 as a string, and rank 0 passes the strings to write().
// Process and thread ids must be unique across all recorders whose output is merged.
//
// Bounded memory. A lane holds at most Options::max_events_per_lane events, stored in chunks
// of up to kChunkEvents that are allocated as the lane fills (the first one by add_lane) and
// never moved; further events are counted as dropped, and the count is written into the
// lane's thread_name metadata. Recording never throws and never allocates more than the cap.
//
// Disabled. A recorder built with enabled = false records nothing, writes no file, and its
// add_lane() returns -1; a default TraceLane, a TraceScope on a disabled lane and a
// TraceScope on a null recorder cost one branch.
//
// Ownership and thread-safety: the recorder owns all events and lane names. add_lane() and
// set_process_name() are thread-safe (they take a lock) and may run while other lanes record.
// The hot-path calls (complete, instant, flow_begin, flow_end, and TraceLane / TraceScope)
// on one lane must come from one thread at a time; different lanes may be written
// concurrently. events_json(), write(), recorded() and dropped() read every lane: call them
// only once the recording threads have stopped (joined), and set_time_offset_us() before.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace asgd {

// Up to two named integer arguments of an event (bytes, peer, step...), shown in the viewer's
// details pane. A null name leaves the slot out. Names must be string literals.
struct TraceArgs {
  const char* name0 = nullptr;
  std::int64_t value0 = 0;
  const char* name1 = nullptr;
  std::int64_t value1 = 0;
};

class TraceLane;

class TraceRecorder {
 public:
  struct Options {
    bool enabled = true;
    std::int64_t max_events_per_lane = std::int64_t{1} << 20;  // 64 MiB of events per lane
    int max_lanes = 1024;  // the lane table is allocated once, so add_lane never moves a lane
  };
  static constexpr std::int64_t kChunkEvents = 4096;

  TraceRecorder() : TraceRecorder(Options{}) {}
  explicit TraceRecorder(Options options);
  ~TraceRecorder();
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

  bool enabled() const { return enabled_; }

  // Adds a lane shown as thread `thread` of process `process`, named `name`, and returns its
  // id (-1 on a disabled recorder). Thread-safe. Throws asgd::Error when the pair (process,
  // thread) already has a lane or when Options::max_lanes lanes exist.
  int add_lane(int process, int thread, std::string name);
  // A handle on lane `id` for the thread that writes it; a disabled handle for id -1.
  TraceLane lane(int id);
  // Names process `process` in the viewer (default: "process <process>"). Thread-safe.
  void set_process_name(int process, std::string name);

  // Nanoseconds since the recorder's epoch, on the steady clock.
  std::int64_t now_ns() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                                epoch_)
        .count();
  }
  std::chrono::steady_clock::time_point epoch() const { return epoch_; }
  // Added to every timestamp this recorder writes (not to those of extra chunks).
  void set_time_offset_us(double offset_us);

  // The hot path. `lane` is an id from add_lane() on this recorder (or -1, which records
  // nothing); one thread per lane. A complete event ("ph":"X") spans [begin_ns, end_ns] from
  // now_ns(); an end before the begin is recorded as a zero duration.
  void complete(int lane, const char* name, std::int64_t begin_ns, std::int64_t end_ns,
                TraceArgs args = {}) noexcept {
    push(lane, {name, args, begin_ns,
                static_cast<std::uint64_t>(end_ns > begin_ns ? end_ns - begin_ns : 0), 'X'});
  }
  // A point in time on the lane ("ph":"i", thread scope).
  void instant(int lane, const char* name, TraceArgs args = {}) noexcept {
    push(lane, {name, args, now_ns(), 0, 'i'});
  }
  // An arrow from the slice enclosing flow_begin ("ph":"s") to the slice enclosing the
  // flow_end ("ph":"f") with the same `name` and `id`, possibly on another lane or rank: use
  // them inside a send and a receive TraceScope to show a message's latency. Each id is used
  // by one begin and one end; flow_id() makes one from the message's identity.
  void flow_begin(int lane, const char* name, std::uint64_t id) noexcept {
    push(lane, {name, {}, now_ns(), id, 's'});
  }
  void flow_end(int lane, const char* name, std::uint64_t id) noexcept {
    push(lane, {name, {}, now_ns(), id, 'f'});
  }
  // A flow id unique per (sender, receiver, sequence) for sender and receiver below 4096 and
  // sequence (a message counter or the sender's step) below 2^40.
  static constexpr std::uint64_t flow_id(int sender, int receiver, std::int64_t sequence) {
    return (static_cast<std::uint64_t>(sender) & 0xfffu) << 52 |
           (static_cast<std::uint64_t>(receiver) & 0xfffu) << 40 |
           (static_cast<std::uint64_t>(sequence) & ((std::uint64_t{1} << 40) - 1));
  }

  // Events kept and dropped on `lane` so far. Not while the lane records.
  std::int64_t recorded(int lane) const;
  std::int64_t dropped(int lane) const;

  // This recorder's events as comma-separated JSON objects without the enclosing brackets:
  // metadata ("ph":"M": process_name, thread_name with the dropped count, sort indices) for
  // every lane, then each lane's events in timestamp order (enclosing slices first). Empty
  // on a disabled recorder. Not while any lane records.
  std::string events_json() const;
  // Writes one trace file: this recorder's events followed by `extra_event_chunks` (other
  // ranks' events_json(); empty chunks are skipped). Writes nothing on a disabled recorder.
  // Throws InputError when `path` cannot be created, Error when writing fails.
  void write(const std::string& path,
             const std::vector<std::string>& extra_event_chunks = {}) const;

 private:
  // One event: 64 bytes, trivially copyable, never constructed (chunks are raw storage).
  struct Event {
    const char* name;
    TraceArgs args;
    std::int64_t ts_ns;
    std::uint64_t extra;  // 'X': duration in ns; 's' and 'f': flow id
    char phase;
  };
  // Aligned so that two lanes written by two threads share no cache line.
  struct alignas(64) Lane {
    Event* cursor = nullptr;     // next free event in the current chunk
    Event* chunk_end = nullptr;  // end of the current chunk
    std::int64_t allocated = 0;  // events of storage over all chunks
    std::int64_t dropped = 0;
    std::vector<std::unique_ptr<Event[]>> chunks;
    int process = 0;
    int thread = 0;
    std::string name;
  };

  void push(int lane, const Event& event) noexcept {
    if (lane < 0) return;
    Lane& l = lanes_[static_cast<std::size_t>(lane)];
    if (l.cursor == l.chunk_end && !grow(l)) return;
    *l.cursor++ = event;
  }
  // Opens the lane's next chunk; counts the event as dropped and returns false at the cap.
  bool grow(Lane& lane) noexcept;
  // Appends events_json() to `out`, calling flush(out) whenever it grows large; returns
  // whether it appended any event.
  template <typename Flush>
  bool serialize(std::string& out, Flush&& flush) const;

  const bool enabled_;
  const std::int64_t max_events_per_lane_;
  const int max_lanes_;
  const std::chrono::steady_clock::time_point epoch_;
  std::int64_t offset_ns_ = 0;
  std::unique_ptr<Lane[]> lanes_;
  mutable std::mutex mutex_;  // guards lane_count_, the set-up fields of lanes, process_names_
  int lane_count_ = 0;
  std::vector<std::pair<int, std::string>> process_names_;
};

// A lane as its writing thread sees it: a recorder and a lane id, or disabled (default).
// Cheap to copy; every call costs one branch when disabled. Not thread-safe: one thread.
class TraceLane {
 public:
  TraceLane() = default;
  TraceLane(TraceRecorder* recorder, int id)
      : recorder_(recorder != nullptr && id >= 0 ? recorder : nullptr), id_(id) {}

  bool enabled() const { return recorder_ != nullptr; }
  TraceRecorder* recorder() const { return recorder_; }
  int id() const { return recorder_ != nullptr ? id_ : -1; }
  // 0 when disabled.
  std::int64_t now_ns() const { return recorder_ != nullptr ? recorder_->now_ns() : 0; }

  void complete(const char* name, std::int64_t begin_ns, std::int64_t end_ns,
                TraceArgs args = {}) const noexcept {
    if (recorder_ != nullptr) recorder_->complete(id_, name, begin_ns, end_ns, args);
  }
  void instant(const char* name, TraceArgs args = {}) const noexcept {
    if (recorder_ != nullptr) recorder_->instant(id_, name, args);
  }
  void flow_begin(const char* name, std::uint64_t id) const noexcept {
    if (recorder_ != nullptr) recorder_->flow_begin(id_, name, id);
  }
  void flow_end(const char* name, std::uint64_t id) const noexcept {
    if (recorder_ != nullptr) recorder_->flow_end(id_, name, id);
  }

 private:
  TraceRecorder* recorder_ = nullptr;
  int id_ = -1;
};

// Records a complete event ("ph":"X") from construction to destruction on one lane:
//   TraceScope scope(compute_lane_, "forward", {"batch", batch});
// Arguments known only at the end (bytes received) go in with set_args(). Not thread-safe:
// built and destroyed on the lane's thread.
class TraceScope {
 public:
  TraceScope(const TraceLane& lane, const char* name, TraceArgs args = {}) noexcept
      : recorder_(lane.recorder()), lane_(lane.id()), name_(name), args_(args) {
    if (recorder_ != nullptr) begin_ns_ = recorder_->now_ns();
  }
  // `recorder` may be null or disabled.
  TraceScope(TraceRecorder* recorder, int lane, const char* name, TraceArgs args = {}) noexcept
      : TraceScope(TraceLane(recorder != nullptr && recorder->enabled() ? recorder : nullptr, lane),
                   name, args) {}
  ~TraceScope() {
    if (recorder_ != nullptr)
      recorder_->complete(lane_, name_, begin_ns_, recorder_->now_ns(), args_);
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

  void set_args(TraceArgs args) noexcept { args_ = args; }

 private:
  TraceRecorder* recorder_;
  int lane_;
  const char* name_;
  TraceArgs args_;
  std::int64_t begin_ns_ = 0;
};

}  // namespace asgd
