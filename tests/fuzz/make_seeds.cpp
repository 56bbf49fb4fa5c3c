// Writes the seed corpora of the fuzz targets: small valid inputs and edge cases in each
// target's input layout (see the comment at the top of each fuzz_<target>.cpp). Run once after
// changing a layout, and commit what it writes:
//   build-fuzz/bin/asgd_fuzz_make_seeds tests/fuzz/corpus
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "comm/wire_format.h"
#include "runtime/checkpoint.h"

namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

fs::path g_root;

void write(const std::string& target, const std::string& name, const Bytes& bytes) {
  const fs::path dir = g_root / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

// --- IDX ------------------------------------------------------------------------------------

void put_be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

Bytes idx(unsigned type, std::initializer_list<std::uint32_t> dims, std::size_t payload_bytes,
          unsigned modulo) {
  Bytes out = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (std::uint32_t d : dims)
    put_be32(out, d);
  for (std::size_t i = 0; i < payload_bytes; ++i)
    out.push_back(static_cast<char>((i * 37) % modulo));
  return out;
}

Bytes gzip(const Bytes& raw) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::exit(1);
  Bytes out(deflateBound(&z, raw.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::exit(1);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The fuzz_idx layout: u16 little-endian image-file size, the image file, the label file.
Bytes idx_pair(const Bytes& images, const Bytes& labels) {
  Bytes out = {static_cast<char>(images.size() & 0xff), static_cast<char>(images.size() >> 8)};
  return out + images + labels;
}

void idx_seeds() {
  const Bytes images = idx(0x08, {2, 3, 3}, 18, 256);
  const Bytes labels = idx(0x08, {2}, 2, 10);
  write("idx", "valid_3d", idx_pair(images, labels));
  write("idx", "valid_2d", idx_pair(idx(0x08, {3, 4}, 12, 256), idx(0x08, {3}, 3, 3)));
  write("idx", "valid_gz_images", idx_pair(gzip(images), labels));
  write("idx", "valid_gz_both", idx_pair(gzip(images), gzip(labels)));
  write("idx", "count_mismatch", idx_pair(images, idx(0x08, {3}, 3, 10)));
  write("idx", "truncated_payload", idx_pair(images.substr(0, images.size() - 1), labels));
  write("idx", "trailing_byte", idx_pair(images + Bytes(1, '\x07'), labels));
  write("idx", "int_type", idx_pair(idx(0x0c, {2, 3, 3}, 72, 256), labels));
  write("idx", "zero_dim", idx_pair(idx(0x08, {2, 0, 3}, 0, 256), labels));
  write("idx", "labels_as_images", idx_pair(labels, labels));
  write("idx", "huge_header", idx_pair(idx(0x08, {60000, 28, 28}, 16, 256), labels));
  write("idx", "truncated_gz", idx_pair(gzip(images).substr(0, 20), labels));
}

// --- LIBSVM and CSV: an option byte, then the text (see fuzz_libsvm.cpp, fuzz_csv.cpp) -------

void libsvm_seeds() {
  const char infer = 0x3f;   // index limit 1009, dimension inferred
  const char fixed1 = 0x40;  // dimension fixed at 1
  auto seed = [](const char* name, char flags, const Bytes& text) {
    write("libsvm", name, Bytes(1, flags) + text);
  };
  seed("basic", infer, "+1 1:0.5 3:-2\n-1 2:1e-3 # a comment\n");
  seed("multiclass_qid", infer, "1 qid:3 1:1 2:2\n2 qid:3 4:0\n3 1:+7 5:.25\n");
  seed("crlf_tabs_blank", infer,
       "\xEF\xBB\xBF"
       "1\t1:1\r\n\r\n# only a comment\n-1 2:3e0\r\n");
  seed("fixed_dim", fixed1, "1 1:2\n0 1:-1\n");
  seed("test_file", static_cast<char>(0x80 | infer), "-1 1:1\n+1 2:2\n");
  seed("test_file_unknown_label", static_cast<char>(0x80 | infer), "2 1:1\n");
  seed("decreasing_index", infer, "1 3:1 2:1\n");
  seed("zero_index", infer, "1 0:1\n");
  seed("not_finite", infer, "1 1:nan\n1 2:inf\n");
  seed("huge_index", infer, "1 99999999999999999999:1\n");
  seed("float_overflow_underflow", infer, "1e300 1:1e39\n1 1:1e-400\n");
  seed("no_features", infer, "1\n-1\n");
  seed("limit_exceeded", 0x00, "1 2:1\n");
}

void csv_seeds() {
  auto seed = [](const char* name, char flags, const Bytes& text) {
    write("csv", name, Bytes(1, flags) + text);
  };
  seed("header_comma", 0x00, "label,a,b\n0,1.5,2\n1,-3,4e2\n");
  seed("semicolon_no_header", 0x09, "1;2;3\n4;5;6\n");
  seed("tab", 0x02, "1\t0.5\t0.25\n0\t-1\t+2\n");
  seed("space_aligned", 0x03, "  1   2.0   3\n  0  -1.5   4\n");
  seed("quoted_header", 0x00, "\"name, with comma\",x\n1,2\n");
  seed("label_last", 0x40, "a,b,label\n1,2,7\n3,4,8\n");
  seed("bom_crlf", 0x00,
       "\xEF\xBB\xBF"
       "y,x\r\n1,2\r\n\r\n0,3\r\n");
  seed("empty_field", 0x00, "1,,2\n");
  seed("not_finite", 0x00, "1,nan\n0,1e39\n");
  seed("test_file", static_cast<char>(0x80), "0,1\n1,2\n");
  seed("test_file_unknown_label", static_cast<char>(0x80), "2,1\n");
  seed("field_count_mismatch", 0x00, "1,2,3\n4,5\n");
  seed("unterminated_quote", 0x00, "\"a,b\n1,2\n");
  seed("quote_then_junk", 0x00, "\"a\"x,b\n");
  seed("one_field", 0x00, "1\n2\n");
  seed("header_only", 0x04, "a,b\n");
  seed("label_column_2", 0x20, "1,2,3\n4,5,6\n");
}

// --- TOML configuration files ------------------------------------------------------------------

void config_seeds() {
  write("config", "readme", R"(dataset = "fashion-mnist"
model = "mlp"
hidden = [256, 256]
lr = 0.05
target-accuracy = 0.85
)");
  write("config", "everything", R"(# every key once, each with a valid value
dataset = "libsvm:/tmp/train.svm"
test-dataset = "libsvm:/tmp/test.svm"
test-fraction = 0.2
normalize = "standard"
libsvm-dim = 100
libsvm-max-dim = 4096
csv-label-column = -1
model = "softmax"
hidden = []
clusters = 10
batch = 32
lr = 0.1
epochs = 2.5
max-seconds = 60
target-accuracy = 0.9
eval-every = 100
backend = "host"
device = 0
threads = 2
seed = 7
metrics = "run.jsonl"
summary = "run.json"
workers = 4
algo = "asgd"
message-size = 1024
send-interval = 2
queue-capacity = 3
merge = "elastic:0.3"
window = "inf"
direction-margin = 0.5
window-history = 32
window-warmup = 4
link-bandwidth = 1e9
link-latency = 0.0001
straggler = "1:3"
adversary = "2:noise:0.1"
deterministic = false
transport = "local"
peer-timeout = 30
balance = "off"
rho = 0.5
link-change = "1.5:1e6:0.001"
min-message = 16
max-message = 0
min-interval = 0
max-interval = 100
peers = "uniform"
trace = "run.trace.json"
progress = false
eval-workers = "first"
step-order = "shuffled"
comm-poll = 0.002
on-divergence = "restore"
divergence-lr-factor = 0.5
max-restores = 3
checkpoint-dir = "ckpt"
checkpoint-every = 500
checkpoint = "all"
resume = "ckpt"
fault = ["nan:1:300", "corrupt:2:5"]
)");
  write("config", "link_matrix", R"(workers = 2
link-bandwidth = [[0, 1e9], [5e8, 0]]
link-latency = [[0, 0.001], [0.002, 0]]
)");
  write("config", "kmeans_average",
        "model = \"kmeans\"\nclusters = 3\nmerge = \"average\"\n"
        "window = 2.5\nalgo = \"sync\"\n");
  write("config", "deterministic", "deterministic = true\nbalance = \"auto\"\n");
  write("config", "unknown_key", "lr = 0.1\nlearning_rate = 0.1\n");
  write("config", "wrong_type", "batch = \"64\"\nhidden = [1.5]\n");
  write("config", "malformed", "lr = \nmodel = [\n");
  write("config", "straggler_bad", "straggler = \"1e300:2\"\n");
  write("config", "adversary_nan", "workers = 3\nadversary = \"2:nan\"\n");
  write("config", "table", "[section]\nlr = 1\n");
  write("config", "empty", "");
}

// --- wire frames: the 80-byte header, then the payload ------------------------------------------

// The receiver of fuzz_wire.cpp.
constexpr asgd::ModelFingerprint kModel{1000, 0x5eed5eed12345678ull};
constexpr int kSource = 3;

Bytes frame(asgd::WireHeader h, std::int64_t payload_floats, bool right_checksum = true) {
  Bytes payload;
  for (std::int64_t i = 0; i < payload_floats; ++i) {
    const float v = 0.5f * static_cast<float>(i) - 1.0f;
    payload.append(reinterpret_cast<const char*>(&v), sizeof v);  // x86: little-endian
  }
  if (right_checksum) h.payload_checksum = asgd::payload_checksum(payload.data(), payload.size());
  const asgd::EncodedHeader encoded = asgd::encode_header(h);
  return Bytes(reinterpret_cast<const char*>(encoded.data()), encoded.size()) + payload;
}

void wire_seeds() {
  asgd::WireHeader h;
  h.kind = asgd::FrameKind::kState;
  h.model = kModel;
  h.sender = kSource;
  h.sender_step = 42;
  h.send_time_s = 1.25;
  h.offset = 0;
  h.length = 4;
  write("wire", "state_4", frame(h, 4));
  h.offset = 990;
  h.length = 10;
  write("wire", "state_tail", frame(h, 10));
  h.offset = 0;
  h.length = 1000;
  write("wire", "state_whole", frame(h, 1000));
  h.offset = 10;
  h.length = 4;
  write("wire", "state_bad_checksum", frame(h, 4, false));
  write("wire", "state_short_payload", frame(h, 3).substr(0, asgd::kWireHeaderBytes + 12));
  h.length = 0;
  write("wire", "state_empty_range", frame(h, 0));
  asgd::WireHeader done = h;
  done.kind = asgd::FrameKind::kDone;
  done.offset = 0;
  done.length = 0;
  write("wire", "done", frame(done, 0));
  done.flags = asgd::kFlagStop;
  write("wire", "done_stop", frame(done, 0));
  asgd::WireHeader other = h;
  other.length = 4;
  other.model.parameters = 999;
  write("wire", "wrong_model", frame(other, 4));
  other = h;
  other.length = 4;
  other.sender = 2;
  write("wire", "wrong_sender", frame(other, 4));
  write("wire", "truncated_header", frame(h, 0).substr(0, asgd::kWireHeaderBytes - 1));
}


// --- checkpoints: the file as read_checkpoint reads it -------------------------------------------

// A tiny model keeps each seed small (a few hundred bytes), so that libFuzzer's input length
// stays short. The generator fields hold short stand-ins: the decoder does not parse them (the
// workers do), so the 5 KB text of a real std::mt19937_64 would only slow the fuzzer.
asgd::WorkerState checkpoint_worker(int id, std::int64_t parameters, bool pending) {
  asgd::WorkerState w;
  w.id = id;
  w.steps = 100 + id;
  w.steps_at_last_eval = 96;
  w.lr_scale = 0.5f;
  w.restores = 1;
  for (std::int64_t i = 0; i < parameters; ++i)
    w.params.push_back(0.25f * static_cast<float>(i + id) - 1.5f);
  w.sampler_rng = "5489 " + std::to_string(id);
  w.peer_rng = "42";
  w.adversary_rng = "7 7";
  w.sampler_order = {3, 1, 0, 2};
  w.sampler_position = 2;
  w.sampler_epoch = 1;
  w.send_cursor = 8;
  w.peer_cursor = {0, 4, 12};
  w.train_loss_sum = 3.75;
  w.parzen_history = {0.5f, 0.125f};
  w.parzen_history_seen = 2;
  w.parzen_counters = {5, 1};
  w.sent = 9;
  w.bytes_sent = 9 * 16;
  w.received = 7;
  w.malformed = 1;
  w.staleness_sum_s = 0.03125;
  w.step_gap_sum = 11;
  if (id % 2 == 0) {  // --on-divergence restore: the last good state, from the step before
    for (const float v : w.params)
      w.good_params.push_back(v + 0.125f);
    w.good_step = 96;
  }
  if (pending) {
    w.send_pending = true;
    w.pending_peer = (id + 1) % 3;
    w.pending_header = {id, w.steps, 4, 4, 12.5};
    w.pending_payload = {1, 2, 3, 4};
  }
  return w;
}

void checkpoint_seeds() {
  constexpr std::int64_t kParameters = 16;
  write("checkpoint", "empty", asgd::encode_checkpoint(asgd::Checkpoint{}));

  asgd::Checkpoint one;
  one.identity = {{"model", "softmax"}, {"workers", "1"}};
  one.fingerprint = 0x5eed5eed12345678ull;
  one.parameters = kParameters;
  one.elapsed_s = 1.5;
  one.workers.push_back(checkpoint_worker(0, kParameters, false));
  one.settings = R"({"model": "softmax", "workers": 1})";
  write("checkpoint", "one_worker", asgd::encode_checkpoint(one));

  // Deterministic mode across ranks: pending sends, unread messages, the receive order.
  asgd::Checkpoint three = one;
  three.identity = {{"model", "softmax"}, {"workers", "3"}, {"deterministic", "true"}};
  three.rank = 1;
  three.ranks = 2;
  three.run_rng = "1 2 3";
  three.workers.clear();
  for (int id = 0; id < 3; ++id) three.workers.push_back(checkpoint_worker(id, kParameters, true));
  three.unread.push_back({1, {0, 99, 0, 2, 12.25}, {0.5f, -0.5f}});
  three.unread.push_back({2, {1, 98, 14, 2, 12.0}, {1.0f, -1.0f}});
  three.collect_starts = {1, 2, 0};
  three.settings = R"({"model": "softmax", "workers": 3, "deterministic": true})";
  const std::string bytes = asgd::encode_checkpoint(three);
  write("checkpoint", "three_workers", bytes);

  // Damaged copies: each stops at a different check.
  Bytes bad_checksum = bytes;
  bad_checksum[bytes.size() / 2] ^= 0x10;
  write("checkpoint", "bad_checksum", bad_checksum);
  write("checkpoint", "truncated", bytes.substr(0, bytes.size() - 5));
  write("checkpoint", "header_only", bytes.substr(0, 32));
  Bytes version = bytes;
  version[8] = 2;
  write("checkpoint", "newer_version", version);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR   (e.g. tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  idx_seeds();
  libsvm_seeds();
  csv_seeds();
  config_seeds();
  wire_seeds();
  checkpoint_seeds();
  return 0;
}
