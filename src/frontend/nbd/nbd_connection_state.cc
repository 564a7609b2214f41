// NbdConnection's place in spd_nbd_connections{state}.
#include <atomic>
#include <string>

#include "common/counters.h"
#include "frontend/nbd/nbd_connection.h"

namespace spd {
namespace {

// Connections now, by state: spd_nbd_connections{state}. Changed at state changes only (not
// per request), by every reactor: shared atomics are fine here.
std::atomic<int64_t> connections_in[4];
const char* const kStateNames[4] = {"", "negotiating", "transmission", "closing"};
MetricsCollector connections_collector([](std::string* out) {
  PromHeader(out, "spd_nbd_connections",
             "NBD connections now, by state: negotiating (accepted, handshake or TLS not "
             "done), transmission (serving requests), closing (replies and I/O draining).",
             "gauge");
  for (int i = 1; i < 4; ++i)
    PromSample(out, "spd_nbd_connections", std::string("state=\"") + kStateNames[i] + "\"",
               static_cast<double>(connections_in[i].load(std::memory_order_relaxed)));
});

}  // namespace

void NbdConnection::SetCountedState(CountedState s) {
  if (s == counted_) return;
  if (counted_ != CountedState::kNone)
    connections_in[static_cast<int>(counted_)].fetch_sub(1, std::memory_order_relaxed);
  if (s != CountedState::kNone)
    connections_in[static_cast<int>(s)].fetch_add(1, std::memory_order_relaxed);
  counted_ = s;
}

}  // namespace spd
