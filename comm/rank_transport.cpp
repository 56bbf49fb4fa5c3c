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

void RankTransport::wait_for_sends(std::mutex& mutex, std::condition_variable& sent,
                                   double timeout_s, int max_pending,
                                   const std::function<bool()>& failed) const {
  wait_for_progress(
      mutex, sent, timeout_s,
      [&] {
        if (failed()) return true;
        for (int peer = 0; peer < size(); ++peer)
          if (peer != rank() && backlog(rank(), peer) > max_pending) return false;
        return true;
      },
      [&] {
        std::int64_t ended = 0;
        for (int peer = 0; peer < size(); ++peer) {
          if (peer == rank()) continue;
          const LinkStats s = stats(rank(), peer);
          ended += s.delivered + s.superseded;
        }
        return ended;
      },
      [&] {
        std::string waiting;
        for (int peer = 0; peer < size(); ++peer)
          if (peer != rank() && backlog(rank(), peer) > max_pending)
            waiting += fmt::format("{}{}", waiting.empty() ? "" : ", ", peer);
        return fmt::format("rank {}: flush({}) waits for sends to ranks [{}]", rank(), max_pending,
                           waiting);
      });
}

void RankTransport::wait_for_delivery(std::mutex& mutex, std::condition_variable& published,
                                      double timeout_s, int peer, std::int64_t count,
                                      const std::function<bool()>& failed) const {
  auto delivered = [&] { return stats(peer, rank()).delivered; };
  wait_for_progress(
      mutex, published, timeout_s, [&] { return delivered() >= count || failed(); }, delivered,
      [&] {
        return fmt::format("rank {}: waiting for message {} from rank {}, {} arrived", rank(),
                           count, peer, delivered());
      });
}

}  // namespace asgd
