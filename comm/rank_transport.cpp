#include "comm/rank_transport.h"

#include <algorithm>
#include <chrono>

#include "runtime/error.h"

namespace asgd {

void wait_for_progress(std::mutex& mutex, std::condition_variable& cv, double timeout_s,
                       const std::function<bool()>& done,
                       const std::function<std::int64_t()>& progress,
                       const std::function<std::string()>& describe) {
  using Clock = std::chrono::steady_clock;
  // An infinite or enormous timeout (--peer-timeout inf) is a year: the clock's arithmetic
  // overflows beyond about 292 years of nanoseconds.
  constexpr double kLongest_s = 365.0 * 24 * 3600;
  const auto timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::min(timeout_s, kLongest_s)));
  std::unique_lock<std::mutex> lock(mutex);
  std::int64_t seen = progress();
  auto since = Clock::now();
  while (!done()) {
    cv.wait_until(lock, since + timeout);
    if (const std::int64_t now_seen = progress(); now_seen != seen) {
      seen = now_seen;
      since = Clock::now();
    } else if (Clock::now() - since >= timeout && !done()) {
      ASGD_THROW("{}: nothing completed for {} s (the peer timeout); a peer is stalled or gone",
                 describe(), timeout_s);
    }
  }
}

}  // namespace asgd
