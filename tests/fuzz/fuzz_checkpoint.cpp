// Fuzzes the checkpoint decoder: decode_checkpoint over arbitrary bytes, with and without the
// checksum check. Random bytes almost never carry a right XXH3-64 or a body size that matches
// the file, so each input is also decoded with its header made right (magic, version, header
// size, body size) and the checksum skipped: that is how a crafted file with a valid checksum
// reaches the parser, which must then hold on its own.
//
// Input: a checkpoint file (32-byte header, then the body; see runtime/checkpoint.h).
//
// Oracles: an accepted checkpoint satisfies what the decoder promises its callers (ranks,
// parameter counts, message ranges inside the state) and re-encodes to the same bytes (the
// format has one encoding per checkpoint, so anything else means a field was read wrongly;
// a version-1 file, which the decoder still reads, re-encodes as the current version), and
// that re-encoding passes the checked decoder and is its own re-encoding. Whatever passes the
// checked decoder passes the unchecked one with the same result.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "runtime/checkpoint.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace asgd;

constexpr std::size_t kHeaderBytes = 32;
constexpr std::size_t kChecksumAt = 24;  // the u64 checksum is the header's last field

std::optional<Checkpoint> decode(const std::string& bytes, bool verify_checksum) {
  try {
    return decode_checkpoint(bytes, "'fuzz'", verify_checksum);
  } catch (const InputError& e) {
    ASGD_FUZZ_EXPECT(std::strstr(e.what(), "'fuzz'") != nullptr);  // names the file
    return std::nullopt;
  }
}

// The format version the input's header claims (0 when it has none).
std::uint32_t version_of(const std::string& bytes) {
  std::uint32_t version = 0;
  if (bytes.size() >= 12) std::memcpy(&version, bytes.data() + 8, 4);
  return version;
}

// What the decoder promises of a checkpoint it returns.
void check_checkpoint(const Checkpoint& c) {
  ASGD_FUZZ_EXPECT(c.ranks >= 1 && c.rank >= 0 && c.rank < c.ranks);
  ASGD_FUZZ_EXPECT(c.parameters >= 0);
  for (const WorkerState& w : c.workers) {
    ASGD_FUZZ_EXPECT(static_cast<std::int64_t>(w.params.size()) == c.parameters);
    ASGD_FUZZ_EXPECT(w.good_params.empty() ||
                     static_cast<std::int64_t>(w.good_params.size()) == c.parameters);
  }
  for (const UnreadMessage& m : c.unread) {
    ASGD_FUZZ_EXPECT(m.header.length == static_cast<std::int64_t>(m.payload.size()));
    ASGD_FUZZ_EXPECT(m.header.offset >= 0 && m.header.offset <= c.parameters - m.header.length);
  }
}

// Checks an accepted checkpoint against `bytes`, the input it came from.
void check_accepted(const Checkpoint& c, const std::string& bytes) {
  check_checkpoint(c);
  const std::string again = encode_checkpoint(c);
  if (version_of(bytes) == Checkpoint::kVersion) {
    ASGD_FUZZ_EXPECT(again.size() == bytes.size());
    ASGD_FUZZ_EXPECT(std::memcmp(again.data(), bytes.data(), kChecksumAt) == 0);
    ASGD_FUZZ_EXPECT(std::memcmp(again.data() + kHeaderBytes, bytes.data() + kHeaderBytes,
                                 bytes.size() - kHeaderBytes) == 0);
  }
  const std::optional<Checkpoint> checked = decode(again, true);
  ASGD_FUZZ_EXPECT(checked.has_value());
  ASGD_FUZZ_EXPECT(encode_checkpoint(*checked) == again);
}

// The input with a right header in front of its body: the first 32 bytes are replaced, except
// the checksum, which the unchecked decoder ignores.
std::string repair(const std::uint8_t* data, std::size_t size) {
  std::string out(reinterpret_cast<const char*>(data), size);
  if (size < kHeaderBytes) out.resize(kHeaderBytes, '\0');
  const std::uint32_t version = Checkpoint::kVersion;
  const std::uint32_t header_bytes = kHeaderBytes;
  const std::uint64_t body_bytes = out.size() - kHeaderBytes;
  std::memcpy(out.data(), "ASGDCKPT", 8);  // x86: the host's byte order is the file's
  std::memcpy(out.data() + 8, &version, 4);
  std::memcpy(out.data() + 12, &header_bytes, 4);
  std::memcpy(out.data() + 16, &body_bytes, 8);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::optional<Checkpoint> checked = decode(bytes, true);
  const std::optional<Checkpoint> unchecked = decode(bytes, false);
  ASGD_FUZZ_EXPECT(!checked || unchecked);
  if (checked) {
    ASGD_FUZZ_EXPECT(encode_checkpoint(*checked) == encode_checkpoint(*unchecked));
    if (version_of(bytes) == Checkpoint::kVersion)
      ASGD_FUZZ_EXPECT(encode_checkpoint(*checked) == bytes);
  }
  if (unchecked) check_accepted(*unchecked, bytes);

  const std::string repaired = repair(data, size);
  if (repaired != bytes) {
    const std::optional<Checkpoint> parsed = decode(repaired, false);
    if (parsed) check_accepted(*parsed, repaired);
  }
  return 0;
}
