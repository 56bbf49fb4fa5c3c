// The timeline recorder: the file it writes is a valid Chrome/Perfetto trace, lanes written
// by concurrent threads keep every event once and in order, the per-lane cap counts what it
// drops, ranks' chunks merge into one file, and a disabled recorder records nothing.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/error.h"
#include "runtime/trace.h"
#include "tests/common/input_error.h"
#include "tests/common/temp_dir.h"

namespace asgd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using TempDir = testing::TempDir;

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());  // throws, failing the test, on invalid JSON
}

// The events of the trace file at `path` after checking its top-level shape.
json trace_events(const std::string& path) {
  const json trace = read_json(path);
  EXPECT_TRUE(trace.is_object());
  EXPECT_EQ(trace.at("displayTimeUnit"), "ms");
  EXPECT_TRUE(trace.at("traceEvents").is_array());
  return trace.at("traceEvents");
}

using LaneKey = std::pair<int, int>;  // (pid, tid)

// Non-metadata events per lane, in file order.
std::map<LaneKey, std::vector<json>> events_by_lane(const json& events) {
  std::map<LaneKey, std::vector<json>> lanes;
  for (const json& e : events)
    if (e.at("ph") != "M") lanes[{e.at("pid"), e.at("tid")}].push_back(e);
  return lanes;
}

// The metadata event `name` ("thread_name", "process_name") of a lane (tid ignored for
// process metadata), or null.
json metadata(const json& events, const std::string& name, int pid, int tid) {
  for (const json& e : events)
    if (e.at("ph") == "M" && e.at("name") == name && e.at("pid") == pid &&
        (name.rfind("process", 0) == 0 || e.at("tid") == tid))
      return e;
  return nullptr;
}

TEST(TraceRecorder, WritesValidTraceWithMetadataForEveryLane) {
  TempDir dir;
  TraceRecorder recorder;
  const int compute = recorder.add_lane(0, 0, "compute");
  const int copy = recorder.add_lane(0, 1, "copy stream");
  const int comm = recorder.add_lane(7, 0, "comm \"thread\"\\\n");  // escaped on output
  recorder.set_process_name(0, "worker 0");
  {
    TraceScope step(&recorder, compute, "step", {"step", 3});
    recorder.instant(copy, "d2h done", {"bytes", 4096, "peer", 1});
  }
  recorder.lane(comm).instant("poll");
  const std::string path = dir.file("trace.json");
  recorder.write(path);

  const json events = trace_events(path);
  EXPECT_EQ(metadata(events, "process_name", 0, 0).at("args").at("name"), "worker 0");
  EXPECT_EQ(metadata(events, "process_name", 7, 0).at("args").at("name"), "process 7");
  EXPECT_EQ(metadata(events, "thread_name", 0, 0).at("args").at("name"), "compute");
  EXPECT_EQ(metadata(events, "thread_name", 0, 1).at("args").at("name"), "copy stream");
  EXPECT_EQ(metadata(events, "thread_name", 7, 0).at("args").at("name"), "comm \"thread\"\\\n");
  for (const auto& [pid, tid] : std::vector<LaneKey>{{0, 0}, {0, 1}, {7, 0}})
    EXPECT_EQ(metadata(events, "thread_name", pid, tid).at("args").at("dropped_events"), 0);

  auto lanes = events_by_lane(events);
  ASSERT_EQ(lanes.size(), 3u);
  const json& step = lanes.at({0, 0}).at(0);
  EXPECT_EQ(step.at("ph"), "X");
  EXPECT_EQ(step.at("name"), "step");
  EXPECT_EQ(step.at("args").at("step"), 3);
  EXPECT_GE(step.at("dur").get<double>(), 0.0);
  const json& done = lanes.at({0, 1}).at(0);
  EXPECT_EQ(done.at("ph"), "i");
  EXPECT_EQ(done.at("args"), (json{{"bytes", 4096}, {"peer", 1}}));
  EXPECT_EQ(lanes.at({7, 0}).at(0).at("name"), "poll");
  EXPECT_FALSE(lanes.at({7, 0}).at(0).contains("args"));
}

TEST(TraceRecorder, ConcurrentLanesKeepEveryEventOnceInOrder) {
  constexpr int kThreads = 4;
  constexpr int kEvents = 20000;  // several chunks per lane
  TempDir dir;
  TraceRecorder recorder;
  std::promise<void> go;
  std::shared_future<void> start = go.get_future().share();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&recorder, start, t] {
      // Lanes are added while other threads already record on theirs.
      TraceLane lane = recorder.lane(recorder.add_lane(t / 2, t % 2, "lane " + std::to_string(t)));
      start.wait();
      for (int i = 0; i < kEvents; ++i) {
        if (i % 2 == 0) {
          TraceScope scope(lane, "work", {"seq", i});
        } else {
          lane.instant("tick", {"seq", i, "thread", t});
        }
      }
    });
  }
  go.set_value();
  for (std::thread& thread : threads)
    thread.join();

  for (int id = 0; id < kThreads; ++id) {
    EXPECT_EQ(recorder.recorded(id), kEvents);
    EXPECT_EQ(recorder.dropped(id), 0);
  }
  const std::string path = dir.file("trace.json");
  recorder.write(path);
  const auto lanes = events_by_lane(trace_events(path));
  ASSERT_EQ(lanes.size(), static_cast<std::size_t>(kThreads));
  for (const auto& [key, events] : lanes) {
    ASSERT_EQ(events.size(), static_cast<std::size_t>(kEvents)) << key.first << "/" << key.second;
    std::vector<int> seen(kEvents, 0);
    double last_ts = -1;
    for (const json& e : events) {
      const double ts = e.at("ts");
      EXPECT_GE(ts, last_ts);
      last_ts = ts;
      if (e.at("ph") == "X") {
        EXPECT_GE(e.at("dur").get<double>(), 0.0);
      }
      ++seen.at(e.at("args").at("seq").get<std::size_t>());
    }
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  }
}

TEST(TraceRecorder, NestedScopesEncloseInnerAndOuterComesFirst) {
  TempDir dir;
  TraceRecorder recorder;
  TraceLane lane = recorder.lane(recorder.add_lane(0, 0, "compute"));
  {
    TraceScope outer(lane, "step");
    { TraceScope inner(lane, "forward"); }
    TraceScope late(lane, "sgd");
    late.set_args({"accepted", 2});
  }
  // Explicit times (a GPU copy timed with events); an end before the begin is clamped.
  lane.complete("h2d", 5000, 2000);
  const std::string path = dir.file("trace.json");
  recorder.write(path);

  const auto events = events_by_lane(trace_events(path)).at({0, 0});
  ASSERT_EQ(events.size(), 4u);
  std::map<std::string, json> by_name;
  for (const json& e : events)
    by_name[e.at("name")] = e;
  const double step_begin = by_name["step"].at("ts");
  const double step_end = step_begin + by_name["step"].at("dur").get<double>();
  for (const char* name : {"forward", "sgd"}) {
    const double begin = by_name[name].at("ts");
    EXPECT_GE(begin, step_begin) << name;
    EXPECT_LE(begin + by_name[name].at("dur").get<double>(), step_end) << name;
  }
  EXPECT_EQ(by_name["sgd"].at("args").at("accepted"), 2);
  EXPECT_EQ(by_name["h2d"].at("ts"), 5.0);
  EXPECT_EQ(by_name["h2d"].at("dur"), 0.0);
  // "step" was recorded after the slices it encloses but is written before them.
  auto position = [&](const std::string& name) {
    return std::find_if(events.begin(), events.end(),
                        [&](const json& e) { return e.at("name") == name; }) -
           events.begin();
  };
  EXPECT_LT(position("step"), position("forward"));
  EXPECT_LT(position("forward"), position("sgd"));
}

TEST(TraceRecorder, CapCountsDroppedEventsAndWritesTheCount) {
  TempDir dir;
  TraceRecorder::Options options;
  options.max_events_per_lane = TraceRecorder::kChunkEvents + 10;  // two chunks, the last short
  TraceRecorder recorder(options);
  const int full = recorder.add_lane(0, 0, "full");
  const int light = recorder.add_lane(0, 1, "light");
  const std::int64_t attempts = options.max_events_per_lane + 25;
  for (std::int64_t i = 0; i < attempts; ++i)
    recorder.instant(full, "e", {"seq", i});
  recorder.instant(light, "e");
  EXPECT_EQ(recorder.recorded(full), options.max_events_per_lane);
  EXPECT_EQ(recorder.dropped(full), 25);
  EXPECT_EQ(recorder.recorded(light), 1);
  EXPECT_EQ(recorder.dropped(light), 0);

  const std::string path = dir.file("trace.json");
  recorder.write(path);
  const json events = trace_events(path);
  const json name = metadata(events, "thread_name", 0, 0).at("args");
  EXPECT_EQ(name.at("dropped_events"), 25);
  EXPECT_EQ(name.at("lane"), "full");
  EXPECT_NE(name.at("name").get<std::string>().find("25 events dropped"), std::string::npos);
  const auto lanes = events_by_lane(events);
  ASSERT_EQ(lanes.at({0, 0}).size(), static_cast<std::size_t>(options.max_events_per_lane));
  // The first events are kept, the last ones dropped.
  EXPECT_EQ(lanes.at({0, 0}).back().at("args").at("seq"), options.max_events_per_lane - 1);
}

TEST(TraceRecorder, ZeroCapDropsEverything) {
  TraceRecorder::Options options;
  options.max_events_per_lane = 0;
  TraceRecorder recorder(options);
  const int lane = recorder.add_lane(0, 0, "none");
  recorder.instant(lane, "e");
  { TraceScope scope(&recorder, lane, "s"); }
  EXPECT_EQ(recorder.recorded(lane), 0);
  EXPECT_EQ(recorder.dropped(lane), 2);
}

TEST(TraceRecorder, MergesRanksChunksIntoOneFileWithFlows) {
  TempDir dir;
  TraceRecorder rank0;
  TraceRecorder rank1;
  const int sender = rank0.add_lane(0, 2, "comm");
  const int receiver = rank1.add_lane(1, 2, "comm");
  rank1.set_process_name(1, "worker 1");
  const std::uint64_t id = TraceRecorder::flow_id(0, 1, 42);
  {
    TraceScope send(&rank0, sender, "send", {"bytes", 800, "peer", 1});
    rank0.flow_begin(sender, "message", id);
  }
  {
    TraceScope receive(&rank1, receiver, "receive", {"peer", 0});
    rank1.flow_end(receiver, "message", id);
  }
  constexpr double kOffsetUs = 1.0e6;  // rank 1's clock as rank 0 measured it
  rank1.set_time_offset_us(kOffsetUs);
  const std::string path = dir.file("merged.json");
  rank0.write(path, {"", rank1.events_json(), " \n"});

  const json events = trace_events(path);
  EXPECT_EQ(metadata(events, "process_name", 1, 0).at("args").at("name"), "worker 1");
  EXPECT_EQ(metadata(events, "thread_name", 0, 2).at("args").at("name"), "comm");
  EXPECT_EQ(metadata(events, "thread_name", 1, 2).at("args").at("name"), "comm");
  const auto lanes = events_by_lane(events);
  ASSERT_EQ(lanes.size(), 2u);
  json begin, end;
  for (const json& e : lanes.at({0, 2}))
    if (e.at("ph") == "s") begin = e;
  for (const json& e : lanes.at({1, 2})) {
    EXPECT_GE(e.at("ts").get<double>(), kOffsetUs);
    if (e.at("ph") == "f") end = e;
  }
  ASSERT_TRUE(begin.is_object());
  ASSERT_TRUE(end.is_object());
  EXPECT_EQ(begin.at("id"), end.at("id"));
  EXPECT_EQ(begin.at("name"), end.at("name"));
  EXPECT_EQ(begin.at("cat"), end.at("cat"));
  EXPECT_EQ(end.at("bp"), "e");
  EXPECT_NE(TraceRecorder::flow_id(0, 1, 42), TraceRecorder::flow_id(1, 0, 42));
  EXPECT_NE(TraceRecorder::flow_id(0, 1, 42), TraceRecorder::flow_id(0, 1, 43));

  // A recorder with no lanes still writes a valid file around the chunks, or an empty one.
  TraceRecorder empty;
  const std::string only_chunks = dir.file("only_chunks.json");
  empty.write(only_chunks, {rank1.events_json()});
  EXPECT_EQ(events_by_lane(trace_events(only_chunks)).size(), 1u);
  const std::string nothing = dir.file("nothing.json");
  empty.write(nothing);
  EXPECT_TRUE(trace_events(nothing).empty());
}

TEST(TraceRecorder, DisabledRecordsAndWritesNothing) {
  TempDir dir;
  TraceRecorder::Options options;
  options.enabled = false;
  TraceRecorder recorder(options);
  EXPECT_FALSE(recorder.enabled());
  const int id = recorder.add_lane(0, 0, "compute");
  EXPECT_EQ(id, -1);
  TraceLane lane = recorder.lane(id);
  EXPECT_FALSE(lane.enabled());
  lane.instant("e");
  lane.flow_begin("m", 1);
  recorder.instant(id, "e");
  { TraceScope scope(lane, "s"); }
  { TraceScope scope(&recorder, id, "s"); }
  { TraceScope scope(nullptr, 0, "s"); }
  { TraceScope scope(TraceLane{}, "s"); }
  EXPECT_EQ(recorder.recorded(id), 0);
  EXPECT_EQ(recorder.dropped(id), 0);
  EXPECT_TRUE(recorder.events_json().empty());
  const std::string path = dir.file("trace.json");
  recorder.write(path, {"{\"ph\":\"i\"}"});
  EXPECT_FALSE(fs::exists(path));
}

TEST(TraceRecorder, RejectsALaneThatReusesProcessAndThread) {
  TraceRecorder::Options options;
  options.max_lanes = 2;
  TraceRecorder recorder(options);
  recorder.add_lane(0, 0, "compute");
  EXPECT_THROW(recorder.add_lane(0, 0, "again"), Error);
  recorder.add_lane(0, 1, "copy");
  EXPECT_THROW(recorder.add_lane(0, 2, "one too many"), Error);
}

TEST(TraceRecorder, UncreatablePathIsAnInputErrorNamingThePath) {
  TempDir dir;
  TraceRecorder recorder;
  recorder.add_lane(0, 0, "compute");
  const std::string path = dir.file("no_such_dir/trace.json");
  testing::expect_input_error([&] { recorder.write(path); },
                              {path, "cannot create", "No such file or directory"});
}

}  // namespace
}  // namespace asgd
