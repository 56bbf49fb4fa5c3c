#include "runtime/distributed.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace asgd::distributed {
namespace {

constexpr std::size_t kText = 160;

struct Identity {
  std::int64_t parameters;
  std::uint64_t hash;
  char text[kText];
};

Identity identity(std::int64_t parameters, std::uint64_t hash, const std::string& text) {
  Identity id{};
  id.parameters = parameters;
  id.hash = hash;
  std::strncpy(id.text, text.c_str(), kText - 1);
  return id;
}

std::vector<Identity> all_gather(const MpiSession& s, const Identity& mine) {
  std::vector<Identity> all(static_cast<std::size_t>(s.size()));
  ASGD_CHECK_MPI(MPI_Allgather(&mine, sizeof(Identity), MPI_BYTE, all.data(), sizeof(Identity),
                               MPI_BYTE, s.comm()));
  return all;
}

bool all_equal(const std::vector<Identity>& all) {
  return std::all_of(all.begin(), all.end(), [&](const Identity& x) {
    return x.parameters == all.front().parameters && x.hash == all.front().hash;
  });
}

}  // namespace

void check_same_model(const MpiSession& s, std::int64_t parameters, std::uint64_t fingerprint,
                      const std::string& description) {
  const auto all = all_gather(s, identity(parameters, fingerprint, description));
  if (all_equal(all)) return;
  std::string ranks;
  for (std::size_t r = 0; r < all.size(); ++r)
    ranks += fmt::format("{}rank {}: '{}', {} parameters, fingerprint {:016x}", r ? "; " : "", r,
                         all[r].text, all[r].parameters, all[r].hash);
  throw CollectiveInputError(
      fmt::format("the ranks hold different models ({}); start every rank with the same model "
                  "flags and the same data set",
                  ranks),
      __FILE__, __LINE__);
}

void check_same_settings(const MpiSession& s, const Settings& settings) {
  // Each rank's settings as "name\0value\0...", gathered whole (values such as paths have no
  // useful length limit).
  std::string mine;
  for (const auto& [name, value] : settings) {
    mine += name;
    mine += '\0';
    mine += value;
    mine += '\0';
  }
  const int size = s.size();
  const int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size));
  ASGD_CHECK_MPI(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, s.comm()));
  long total = 0;
  for (int r = 0; r < size; ++r) {
    offsets[static_cast<std::size_t>(r)] = static_cast<int>(total);
    total += lengths[static_cast<std::size_t>(r)];
  }
  ASGD_CHECK(total < (1L << 31), "settings of {} bytes from {} ranks", total, size);
  std::string all(static_cast<std::size_t>(total), '\0');
  ASGD_CHECK_MPI(MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(),
                                offsets.data(), MPI_CHAR, s.comm()));
  auto of_rank = [&](int r) {
    return std::string_view(all).substr(
        static_cast<std::size_t>(offsets[static_cast<std::size_t>(r)]),
        static_cast<std::size_t>(lengths[static_cast<std::size_t>(r)]));
  };
  auto decode = [](std::string_view text) {
    Settings out;
    while (!text.empty()) {
      const std::size_t a = text.find('\0');
      const std::size_t b = text.find('\0', a + 1);
      out.emplace_back(std::string(text.substr(0, a)), std::string(text.substr(a + 1, b - a - 1)));
      text.remove_prefix(std::min(b + 1, text.size()));
    }
    return out;
  };
  const Settings first = decode(of_rank(0));
  std::string differences;
  int differing = 0;
  for (int r = 1; r < size; ++r) {
    if (of_rank(r) == of_rank(0)) continue;
    if (++differing > 4) continue;  // enough to see the pattern; counted below
    const Settings other = decode(of_rank(r));
    std::size_t i = 0;
    while (i < first.size() && i < other.size() && first[i] == other[i])
      ++i;
    const std::string what =
        i < first.size() && i < other.size() && first[i].first == other[i].first
            ? fmt::format("{} '{}' where rank 0 has '{}'", other[i].first, other[i].second,
                          first[i].second)
            : std::string("a different list of settings (another version of asgd?)");
    differences += fmt::format("{}rank {}: {}", differences.empty() ? "" : "; ", r, what);
  }
  if (differing == 0) return;
  if (differing > 4) differences += fmt::format("; and {} more ranks", differing - 4);
  throw CollectiveInputError(
      fmt::format("the ranks were started with different settings ({}); give every rank the "
                  "same flags, config file and data",
                  differences),
      __FILE__, __LINE__);
}

void report_topology(const MpiSession& s, const std::string& device, bool print) {
  struct Place {
    int rank, local_rank;
    char host[64];
    char device[96];
  };
  Place mine{};
  mine.rank = s.rank();
  mine.local_rank = s.local_rank();
  std::strncpy(mine.host, s.host().c_str(), sizeof(mine.host) - 1);
  std::strncpy(mine.device, device.c_str(), sizeof(mine.device) - 1);
  const std::vector<Place> all = gather_to_root(s, mine);
  if (!print || s.rank() != 0) return;
  std::fprintf(stderr, "asgd: %d ranks\n  rank  host                 local  device\n", s.size());
  for (const Place& p : all)
    std::fprintf(stderr, "  %4d  %-20s %5d  %s\n", p.rank, p.host, p.local_rank, p.device);
}

void allreduce_sum(const MpiSession& s, float* data, std::int64_t count) {
  // MPI counts are int: large states go in pieces.
  constexpr std::int64_t kPiece = std::int64_t{1} << 30;
  for (std::int64_t at = 0; at < count; at += kPiece)
    ASGD_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, data + at,
                                 static_cast<int>(std::min(kPiece, count - at)), MPI_FLOAT, MPI_SUM,
                                 s.comm()));
}

double allreduce_max(const MpiSession& s, double value) {
  double out = value;
  ASGD_CHECK_MPI(MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_MAX, s.comm()));
  return out;
}

std::vector<std::string> gather_strings(const MpiSession& s, const std::string& value) {
  const int length = static_cast<int>(value.size());
  const std::vector<int> lengths = gather_to_root(s, length);
  std::vector<int> displacements(lengths.size(), 0);
  std::int64_t total = 0;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    displacements[r] = static_cast<int>(total);
    total += lengths[r];
  }
  ASGD_CHECK(total < (std::int64_t{1} << 31), "{} bytes to gather exceed MPI's int counts", total);
  std::string all(static_cast<std::size_t>(total), '\0');
  ASGD_CHECK_MPI(MPI_Gatherv(value.data(), length, MPI_CHAR, all.data(), lengths.data(),
                             displacements.data(), MPI_CHAR, 0, s.comm()));
  std::vector<std::string> out;
  for (std::size_t r = 0; r < lengths.size(); ++r)
    out.push_back(all.substr(static_cast<std::size_t>(displacements[r]),
                             static_cast<std::size_t>(lengths[r])));
  return out;
}

void barrier(const MpiSession& s) {
  ASGD_CHECK_MPI(MPI_Barrier(s.comm()));
}

std::string broadcast_string(const MpiSession& s, const std::string& value) {
  int length = static_cast<int>(value.size());
  ASGD_CHECK_MPI(MPI_Bcast(&length, 1, MPI_INT, 0, s.comm()));
  std::string out = s.rank() == 0 ? value : std::string(static_cast<std::size_t>(length), '\0');
  ASGD_CHECK_MPI(MPI_Bcast(out.data(), length, MPI_CHAR, 0, s.comm()));
  return out;
}

}  // namespace asgd::distributed
