// qos_engine_bench: the CPU cost of the QoS tag engine (src/qos/engine.h) per request, one
// Enqueue plus one Dequeue, with 1 to 1000 active volumes, on a virtual clock: a device that
// serves one item at a time for its cost, every volume kept backlogged (2 items queued: each
// released item is queued again at once). The budget is 200 ns per request at 1000 flows. Time
// is the thread's CPU time (the machine may be shared), divided by the requests released.
//
//   qos_engine_bench [--requests N] [--flows 1,10,100,1000]
//
// Scenarios (each with N volumes):
//   weights   one tenant; weights only (the weight phase: one heap of N at the tenant's level)
//   tenants   N tenants of one volume each (the root's heaps hold N)
//   full      sqrt(N) tenants; every volume and tenant with a reservation, a limit above what it
//             gets, a weight and a priority class (constraint and weight phases, both levels)
//   limited   as full, but limits binding (their sum half the device): the held-by-limit heaps
//             and the device idling until the wake time Dequeue reports
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "qos/engine.h"

namespace {

using spd::qos::Engine;
using spd::qos::FlowPolicy;
using spd::qos::Item;
using spd::qos::Priority;

// CPU time of this thread: the machine may be shared, and wall time would count the time the
// bench waited for a core.
uint64_t ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

struct BenchReq : Item {
  Engine::FlowId volume = 0;
};

struct Result {
  double ns_per_request;
  uint64_t released;
  uint64_t idle_wakes;
};

enum class Scenario { kWeights, kTenants, kFull, kLimited };

Result Run(Scenario s, uint32_t flows, uint64_t requests) {
  Engine e;
  std::mt19937_64 rng(flows);
  std::vector<Engine::FlowId> volumes;
  std::vector<uint64_t> cost;  // per volume: 5-50 us
  uint32_t tenants = 1;
  if (s == Scenario::kTenants) tenants = flows;
  if (s == Scenario::kFull || s == Scenario::kLimited) {
    tenants = std::max<uint32_t>(1, static_cast<uint32_t>(std::sqrt(flows)));
  }
  // The device's capacity: ~36,000 items/s at the mean cost of 27.5 us.
  const double capacity = 36'000;
  std::vector<Engine::FlowId> tenant_ids;
  for (uint32_t t = 0; t < tenants; t++) {
    FlowPolicy p;
    p.weight = static_cast<uint32_t>(1 + rng() % 1000);
    if (s == Scenario::kFull) {
      p.reservation.iops = 1 + static_cast<uint64_t>(capacity / 4 / tenants);
      p.limit.iops = static_cast<uint64_t>(capacity * 2);
    } else if (s == Scenario::kLimited) {
      p.limit.iops = 1 + static_cast<uint64_t>(capacity / tenants);
    }
    tenant_ids.push_back(e.AddTenant(p));
  }
  for (uint32_t v = 0; v < flows; v++) {
    FlowPolicy p;
    p.weight = static_cast<uint32_t>(1 + rng() % 1000);
    if (s == Scenario::kFull || s == Scenario::kLimited) {
      p.priority = static_cast<Priority>(rng() % 3);
      p.reservation.iops = 1 + static_cast<uint64_t>(capacity / 4 / flows);
      p.reservation.bytes_per_second = p.reservation.iops * 4096;
      double limit = s == Scenario::kFull ? capacity * 2 : capacity / 2 / flows;
      p.limit.iops = 1 + static_cast<uint64_t>(limit);
      p.limit.bytes_per_second = p.limit.iops * 65536;
    }
    volumes.push_back(e.AddVolume(tenant_ids[v % tenants], p));
    cost.push_back(5'000 + rng() % 45'000);
  }
  std::vector<BenchReq> reqs(2 * flows);
  uint64_t now = 1'000'000'000;
  for (size_t i = 0; i < reqs.size(); i++) {
    BenchReq& r = reqs[i];
    r.volume = volumes[i % flows];
    r.cost_ns = cost[i % flows];
    r.bytes = 4096u << (i % 5);
    e.Enqueue(r.volume, &r, now);
  }
  // Warm up, then measure.
  Result res{0, 0, 0};
  for (int pass = 0; pass < 2; pass++) {
    uint64_t n = pass == 0 ? requests / 10 : requests;
    uint64_t released = 0, idle = 0;
    uint64_t t0 = ThreadCpuNs();
    while (released < n) {
      uint64_t wake;
      Item* it = e.Dequeue(now, &wake);
      if (!it) {
        now = wake;
        idle++;
        continue;
      }
      now += it->cost_ns;
      BenchReq* r = static_cast<BenchReq*>(it);
      e.Enqueue(r->volume, r, now);
      released++;
    }
    res.ns_per_request = static_cast<double>(ThreadCpuNs() - t0) / static_cast<double>(n);
    res.released = released;
    res.idle_wakes = idle;
  }
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t requests = 5'000'000;
  std::vector<uint32_t> flows = {1, 10, 100, 1000};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--requests") {
      requests = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--flows") {
      flows.clear();
      for (size_t pos = 0; pos < v.size();) {
        size_t comma = v.find(',', pos);
        if (comma == std::string::npos) comma = v.size();
        flows.push_back(static_cast<uint32_t>(std::stoul(v.substr(pos, comma - pos))));
        pos = comma + 1;
      }
    } else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  struct {
    Scenario s;
    const char* name;
  } scenarios[] = {{Scenario::kWeights, "weights"},
                   {Scenario::kTenants, "tenants"},
                   {Scenario::kFull, "full"},
                   {Scenario::kLimited, "limited"}};
  std::printf("%-8s %8s %14s %12s\n", "scenario", "volumes", "ns/request", "idle wakes");
  for (auto& sc : scenarios) {
    for (uint32_t f : flows) {
      Result r = Run(sc.s, f, requests);
      std::printf("%-8s %8u %14.1f %12llu\n", sc.name, f, r.ns_per_request,
                  static_cast<unsigned long long>(r.idle_wakes));
    }
  }
  return 0;
}
