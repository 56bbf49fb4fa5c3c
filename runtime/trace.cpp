#include "runtime/trace.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <utility>

#include <fmt/format.h>

#include "runtime/error.h"

namespace asgd {
namespace {

// The category of every event; flow begin and end are matched on (category, name, id).
constexpr const char* kCategory = "asgd";
// write() hands its text to the file in pieces of about this size.
constexpr std::size_t kFlushBytes = std::size_t{1} << 20;

void append_escaped(std::string& out, const char* text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char* p = text; *p != '\0'; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// Nanoseconds as microseconds with three decimals, exactly (no floating point).
void append_us(std::string& out, std::int64_t ns) {
  const bool negative = ns < 0;
  const std::uint64_t magnitude =
      negative ? std::uint64_t{0} - static_cast<std::uint64_t>(ns) : static_cast<std::uint64_t>(ns);
  fmt::format_to(std::back_inserter(out), "{}{}.{:03}", negative ? "-" : "", magnitude / 1000,
                 magnitude % 1000);
}

void append_args(std::string& out, const TraceArgs& args) {
  if (args.name0 == nullptr && args.name1 == nullptr) return;
  out += ",\"args\":{";
  bool first = true;
  for (const auto& [name, value] :
       {std::pair{args.name0, args.value0}, {args.name1, args.value1}}) {
    if (name == nullptr) continue;
    if (!first) out += ',';
    first = false;
    append_escaped(out, name);
    fmt::format_to(std::back_inserter(out), ":{}", value);
  }
  out += '}';
}

bool blank(const std::string& text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; });
}

}  // namespace

TraceRecorder::TraceRecorder(Options options)
    : enabled_(options.enabled),
      max_events_per_lane_(options.max_events_per_lane),
      max_lanes_(options.max_lanes),
      epoch_(std::chrono::steady_clock::now()) {
  ASGD_CHECK(max_events_per_lane_ >= 0, "max_events_per_lane is {}", max_events_per_lane_);
  ASGD_CHECK(max_lanes_ >= 0, "max_lanes is {}", max_lanes_);
  if (enabled_) lanes_.reset(new Lane[static_cast<std::size_t>(max_lanes_)]);
}

TraceRecorder::~TraceRecorder() = default;

int TraceRecorder::add_lane(int process, int thread, std::string name) {
  if (!enabled_) return -1;
  std::lock_guard<std::mutex> lock(mutex_);
  for (int i = 0; i < lane_count_; ++i) {
    const Lane& other = lanes_[static_cast<std::size_t>(i)];
    ASGD_CHECK(other.process != process || other.thread != thread,
               "trace lane '{}' reuses process {} thread {} of lane '{}'", name, process, thread,
               other.name);
  }
  ASGD_CHECK(lane_count_ < max_lanes_, "trace lane '{}': all {} lanes are taken", name, max_lanes_);
  Lane& lane = lanes_[static_cast<std::size_t>(lane_count_)];
  lane.process = process;
  lane.thread = thread;
  lane.name = std::move(name);
  lane.chunks.reserve(
      static_cast<std::size_t>((max_events_per_lane_ + kChunkEvents - 1) / kChunkEvents));
  // The first chunk now, so that short runs never allocate while recording. No event is lost
  // if it fails (cap 0, no memory): the first push tries again and counts the drop.
  grow(lane);
  lane.dropped = 0;
  return lane_count_++;
}

TraceLane TraceRecorder::lane(int id) {
  return TraceLane(this, id);
}

void TraceRecorder::set_process_name(int process, std::string name) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [p, n] : process_names_) {
    if (p == process) {
      n = std::move(name);
      return;
    }
  }
  process_names_.emplace_back(process, std::move(name));
}

void TraceRecorder::set_time_offset_us(double offset_us) {
  offset_ns_ = std::llround(offset_us * 1000.0);
}

bool TraceRecorder::grow(Lane& lane) noexcept {
  const std::int64_t room = max_events_per_lane_ - lane.allocated;
  if (room <= 0) {
    ++lane.dropped;
    return false;
  }
  const std::int64_t size = std::min(room, kChunkEvents);
  // Raw storage: Event is trivial, so new[] leaves the pages untouched until they are written.
  std::unique_ptr<Event[]> chunk(new (std::nothrow) Event[static_cast<std::size_t>(size)]);
  if (chunk == nullptr) {
    ++lane.dropped;
    return false;
  }
  lane.cursor = chunk.get();
  lane.chunk_end = chunk.get() + size;
  lane.allocated += size;
  lane.chunks.push_back(std::move(chunk));  // within the capacity reserved by add_lane
  return true;
}

std::int64_t TraceRecorder::recorded(int lane) const {
  if (lane < 0) return 0;
  const Lane& l = lanes_[static_cast<std::size_t>(lane)];
  if (l.chunks.empty()) return 0;
  return l.allocated - (l.chunk_end - l.cursor);
}

std::int64_t TraceRecorder::dropped(int lane) const {
  return lane < 0 ? 0 : lanes_[static_cast<std::size_t>(lane)].dropped;
}

template <typename Flush>
bool TraceRecorder::serialize(std::string& out, Flush&& flush) const {
  if (!enabled_) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  bool first = true;
  auto begin_object = [&] {
    if (!first) out += ',';
    first = false;
    out += '{';
  };

  // Metadata: one process_name per process, then each lane's thread_name.
  std::vector<int> processes;
  for (int i = 0; i < lane_count_; ++i) {
    const int p = lanes_[static_cast<std::size_t>(i)].process;
    if (std::find(processes.begin(), processes.end(), p) == processes.end()) processes.push_back(p);
  }
  for (const int p : processes) {
    std::string name = fmt::format("process {}", p);
    for (const auto& [q, n] : process_names_)
      if (q == p) name = n;
    begin_object();
    fmt::format_to(
        std::back_inserter(out),
        "\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,\"args\":{{\"name\":", p);
    append_escaped(out, name.c_str());
    out += "}}";
    begin_object();
    fmt::format_to(std::back_inserter(out),
                   "\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{},\"tid\":0,"
                   "\"args\":{{\"sort_index\":{}}}}}",
                   p, p);
  }
  for (int i = 0; i < lane_count_; ++i) {
    const Lane& lane = lanes_[static_cast<std::size_t>(i)];
    std::string name = lane.name;
    if (lane.dropped > 0) name += fmt::format(" ({} events dropped)", lane.dropped);
    begin_object();
    fmt::format_to(
        std::back_inserter(out),
        "\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{},\"args\":{{\"name\":",
        lane.process, lane.thread);
    append_escaped(out, name.c_str());
    fmt::format_to(std::back_inserter(out), ",\"lane\":");
    append_escaped(out, lane.name.c_str());
    fmt::format_to(std::back_inserter(out), ",\"dropped_events\":{}}}}}", lane.dropped);
    begin_object();
    fmt::format_to(std::back_inserter(out),
                   "\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":{},\"tid\":{},"
                   "\"args\":{{\"sort_index\":{}}}}}",
                   lane.process, lane.thread, lane.thread);
  }

  // Events, lane by lane, in timestamp order; at equal timestamps the longer complete event
  // first, so that a viewer nests the inner slice inside the outer one.
  std::vector<const Event*> order;
  for (int i = 0; i < lane_count_; ++i) {
    const Lane& lane = lanes_[static_cast<std::size_t>(i)];
    order.clear();
    for (std::size_t c = 0; c < lane.chunks.size(); ++c) {
      const Event* chunk = lane.chunks[c].get();
      const Event* end =
          c + 1 == lane.chunks.size()
              ? lane.cursor
              : chunk + std::min(kChunkEvents, max_events_per_lane_ -
                                                   static_cast<std::int64_t>(c) * kChunkEvents);
      for (const Event* e = chunk; e != end; ++e)
        order.push_back(e);
    }
    std::stable_sort(order.begin(), order.end(), [](const Event* a, const Event* b) {
      if (a->ts_ns != b->ts_ns) return a->ts_ns < b->ts_ns;
      const std::uint64_t da = a->phase == 'X' ? a->extra : 0;
      const std::uint64_t db = b->phase == 'X' ? b->extra : 0;
      return da > db;
    });
    for (const Event* e : order) {
      begin_object();
      fmt::format_to(std::back_inserter(out), "\"ph\":\"{}\",\"cat\":\"{}\",\"name\":", e->phase,
                     kCategory);
      append_escaped(out, e->name);
      fmt::format_to(std::back_inserter(out), ",\"pid\":{},\"tid\":{},\"ts\":", lane.process,
                     lane.thread);
      append_us(out, e->ts_ns + offset_ns_);
      switch (e->phase) {
        case 'X':
          out += ",\"dur\":";
          append_us(out, static_cast<std::int64_t>(e->extra));
          break;
        case 'i':
          out += ",\"s\":\"t\"";
          break;
        case 's':
          fmt::format_to(std::back_inserter(out), ",\"id\":\"0x{:x}\"", e->extra);
          break;
        case 'f':
          fmt::format_to(std::back_inserter(out), ",\"id\":\"0x{:x}\",\"bp\":\"e\"", e->extra);
          break;
        default:
          break;
      }
      append_args(out, e->args);
      out += '}';
      if (out.size() >= kFlushBytes) flush(out);
    }
  }
  return !first;
}

std::string TraceRecorder::events_json() const {
  std::string out;
  serialize(out, [](std::string&) {});
  return out;
}

void TraceRecorder::write(const std::string& path,
                          const std::vector<std::string>& extra_event_chunks) const {
  if (!enabled_) return;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "wb"),
                                                       &std::fclose);
  if (file == nullptr)
    ASGD_INPUT_ERROR("cannot create trace file '{}': {}", path, std::strerror(errno));
  int error = 0;  // the first errno of a failed write
  auto put = [&](const std::string& text) {
    if (error == 0 && !text.empty() &&
        std::fwrite(text.data(), 1, text.size(), file.get()) != text.size())
      error = errno != 0 ? errno : EIO;
  };
  auto flush = [&](std::string& text) {
    put(text);
    text.clear();
  };
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  bool empty = !serialize(out, flush);
  for (const std::string& chunk : extra_event_chunks) {
    if (blank(chunk)) continue;
    if (!empty) out += ",\n";
    empty = false;
    flush(out);
    put(chunk);
  }
  out += "\n]}\n";
  flush(out);
  if (std::fflush(file.get()) != 0 && error == 0) error = errno;
  if (std::fclose(file.release()) != 0 && error == 0) error = errno != 0 ? errno : EIO;
  if (error != 0) ASGD_THROW("writing trace file '{}' failed: {}", path, std::strerror(error));
}

}  // namespace asgd
