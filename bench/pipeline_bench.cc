// pipeline_bench: drives the request pipeline (in-process frontend -> dispatcher -> scheduler
// stage -> volume -> backend) with no sockets and prints IOPS and CPU per I/O. On the null
// backend the figure is the cost of everything above the backend. bench/pipeline runs it in
// interleaved rounds; `pipeline_bench --help` lists the options. With --qos 1 the scheduler stage
// is the QoS scheduler (src/qos/qos_scheduler.h, no intents) instead of the pass-through:
// bench/qos (scenario 6) and bench/pipeline --qos compare the two.
#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <vector>

#include "common/log.h"
#include "dispatch/dispatcher.h"
#include "frontend/inproc/inproc_frontend.h"
#include "io/io_backend.h"
#include "qos/cost_model.h"
#include "qos/qos_scheduler.h"
#include "reactor/reactor_group.h"
#include "volume/pool.h"

namespace spd {
namespace {

struct Config {
  std::string backend = "null";
  unsigned reactors = 1;  // 1: the client runs on the pool's reactor; 2: on a second one
  uint32_t qd = 32;
  uint32_t bs = 4096;
  bool write = false;
  double seconds = 2;
  uint64_t ios = 0;                    // stop after this many measured I/Os instead (0: time-based)
  uint64_t span_bytes = 256ull << 20;  // the range the random offsets fall in (pre-written)
  bool remote_io = true;
  bool stamp_stages = false;
  bool owner_client = false;  // the volume is the client reactor's (Pool::SetVolumeReactors)
  bool qos = false;           // the QoS scheduler stage instead of the pass-through
  double qos_budget_factor = 2.0;
};

void Usage() {
  std::printf(
      "usage: pipeline_bench [options]\n"
      "Drives spd2's request pipeline with an in-process frontend (no sockets) in a closed loop\n"
      "and prints one line: IOPS and process CPU time per I/O (all threads).\n"
      "  --backend null|sim   device under the pool (default null: completes at once, keeps\n"
      "                       nothing, so the figure is everything above the backend)\n"
      "  --reactors 1|2       1: client on the pool's reactor; 2: client on a second reactor\n"
      "                       (requests take the fast path or hop to the owner)\n"
      "  --qd N               requests in flight (default 32)\n"
      "  --bs BYTES           request size (default 4096)\n"
      "  --rw randread|randwrite  (default randread)\n"
      "  --seconds S          measured time (default 2)\n"
      "  --ios N              stop after N measured I/Os instead (repeatable instruction\n"
      "                       counts under valgrind --tool=callgrind)\n"
      "  --span BYTES         offsets fall in [0, span), written once before (default 256M)\n"
      "  --remote-io 0|1      the fast path for a second reactor (default 1)\n"
      "  --stamp-stages 0|1   stamp every request at each stage (default 0)\n"
      "  --owner pool|client  the volume's owning reactor: the pool's (default) or the\n"
      "                       client's (with --reactors 2: the owner's path, which asks the\n"
      "                       pool's reactor by message for chunks and commits)\n"
      "  --qos 0|1            1: the QoS scheduler stage (qos::QosScheduler over every\n"
      "                       reactor, the built-in cost model CostModel::Default(), no\n"
      "                       intents: every volume weight 100) instead of the pass-through\n"
      "                       (default 0). Requests beyond its device budget wait in it\n"
      "  --qos-budget-factor F  the scheduler's budget_factor (default 2: with the built-in\n"
      "                       model about 10 reads of 4 KiB outstanding; 1024: nothing held)\n");
}

uint64_t ProcessCpuNs() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1'000'000'000ull +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

// The closed loop: keeps qd requests in flight on its reactor until the deadline.
struct Loop {
  Config cfg;
  Dispatcher* dispatcher = nullptr;
  Volume* volume = nullptr;
  Reactor* reactor = nullptr;
  Reactor* main = nullptr;
  std::unique_ptr<InprocFrontend> fe;
  std::mt19937_64 rng{42};
  uint64_t deadline_ns = 0;
  uint64_t done = 0;
  uint64_t errors = 0;
  uint64_t prefill_next = 0;  // offset of the next pre-fill write
  bool measuring = false;
  uint64_t t0_ns = 0, t1_ns = 0, cpu0_ns = 0, cpu1_ns = 0, count1 = 0;
  Task start, finished;

  uint64_t prefill_outstanding = 0;
  bool issue_deferred = false;

  void Issue() {
    // The range is written once first (tenant 1), so that reads find data to read; the clock
    // starts when the last of those writes is back.
    if (prefill_next >= cfg.span_bytes && prefill_outstanding > 0) return;
    while (IoRequest* r = fe->Take()) {
      r->volume = volume;
      r->length_bytes = cfg.bs;
      if (prefill_next < cfg.span_bytes) {
        r->tenant = 1;
        r->op = RequestOp::kWrite;
        r->offset_bytes = prefill_next;
        r->length_bytes = 1u << 20;
        prefill_next += 1u << 20;
        ++prefill_outstanding;
      } else {
        r->op = cfg.write ? RequestOp::kWrite : RequestOp::kRead;
        r->offset_bytes = (rng() % (cfg.span_bytes / cfg.bs)) * cfg.bs;
      }
      fe->Submit(r, &Loop::OnDone, this);
      if (prefill_next >= cfg.span_bytes && prefill_outstanding > 0) return;
    }
  }

  static void OnDone(void* arg, IoRequest* r) {
    auto* self = static_cast<Loop*>(arg);
    if (r->result != 0) ++self->errors;
    const uint64_t now = MonotonicNs();
    if (r->tenant == 1) {
      if (--self->prefill_outstanding == 0 && self->prefill_next >= self->cfg.span_bytes) {
        self->measuring = true;
        self->t0_ns = now;
        self->cpu0_ns = ProcessCpuNs();
        self->deadline_ns = now + static_cast<uint64_t>(self->cfg.seconds * 1e9);
      }
    } else {
      ++self->done;
    }
    const bool over = self->cfg.ios ? self->done >= self->cfg.ios : now >= self->deadline_ns;
    if (self->measuring && over) {
      if (self->t1_ns == 0) {
        self->t1_ns = now;
        self->cpu1_ns = ProcessCpuNs();
        self->count1 = self->done;
      }
      if (self->fe->inflight() == 1) {  // the last one (its slot is freed after this returns)
        // Tear down on this reactor at the end of the tick, then tell the main reactor.
        self->finished.fn = [](Task* t) {
          Loop* l = reinterpret_cast<Loop*>(reinterpret_cast<char*>(t) - offsetof(Loop, finished));
          l->fe.reset();
          l->main->Stop();
        };
        self->reactor->Defer(&self->finished);
      }
      return;
    }
    // Refill once per tick, after this slot is back on the free list.
    if (!self->issue_deferred) {
      self->issue_deferred = true;
      self->reactor->Defer(&self->start);
    }
  }
};

int Run(const Config& cfg) {
  SetLogLevel(LogLevel::kWarn);
  auto main_or = Reactor::Create(ReactorOptions{});
  if (!main_or.ok()) return std::fprintf(stderr, "%s\n", main_or.status().ToString().c_str()), 1;
  auto main = std::move(main_or).value();
  BackendOptions bo;
  auto kind = ParseBackendKind(cfg.backend);
  if (!kind.ok() || (kind.value() != BackendKind::kNull && kind.value() != BackendKind::kSim))
    return std::fprintf(stderr, "--backend must be null or sim\n"), 2;
  bo.kind = kind.value();
  bo.size_bytes = cfg.span_bytes + (256ull << 20);
  auto backend = OpenBackend(bo, main.get());
  if (!backend.ok()) return std::fprintf(stderr, "%s\n", backend.status().ToString().c_str()), 1;
  auto pool_or = Pool::Create(std::move(backend).value(), main.get(), PoolOptions{});
  if (!pool_or.ok()) return std::fprintf(stderr, "%s\n", pool_or.status().ToString().c_str()), 1;
  auto pool = std::move(pool_or).value();
  auto vol = pool->CreateVolume("bench", cfg.span_bytes);
  if (!vol.ok()) return std::fprintf(stderr, "%s\n", vol.status().ToString().c_str()), 1;
  auto group_or = ReactorGroup::Start(main.get(), cfg.reactors, ReactorOptions{});
  if (!group_or.ok()) return std::fprintf(stderr, "%s\n", group_or.status().ToString().c_str()), 1;
  auto group = std::move(group_or).value();
  if (cfg.owner_client) {
    if (Status s = pool->SetVolumeReactors({group->at(cfg.reactors - 1)}); !s.ok())
      return std::fprintf(stderr, "%s\n", s.ToString().c_str()), 1;
  }
  DispatcherOptions dopt;
  dopt.remote_io = cfg.remote_io;
  dopt.stamp_stages = cfg.stamp_stages;
  // The QoS stage: a shard on every reactor of the group, as the daemon makes it. Made after
  // the group and destroyed before it, after the dispatcher (see the end of Run).
  std::unique_ptr<qos::QosScheduler> qos;
  if (cfg.qos) {
    qos::QosScheduler::Options qo;
    qo.cost = qos::CostModel::Default();
    qo.budget_factor = cfg.qos_budget_factor;
    std::vector<Reactor*> shards;
    for (unsigned i = 0; i < group->size(); ++i) shards.push_back(group->at(i));
    qos = std::make_unique<qos::QosScheduler>(std::move(shards), std::move(qo));
  }
  // After the group and destroyed before it: it holds a channel on the owning reactor.
  auto dispatcher = std::make_unique<Dispatcher>(pool.get(), dopt, qos.get());

  Loop loop;
  loop.cfg = cfg;
  loop.dispatcher = dispatcher.get();
  loop.volume = vol.value();
  loop.reactor = group->at(cfg.reactors - 1);
  loop.main = main.get();
  loop.start.fn = [](Task* t) {
    Loop* l = reinterpret_cast<Loop*>(reinterpret_cast<char*>(t) - offsetof(Loop, start));
    if (!l->fe) {
      InprocFrontend::Options fo;
      fo.queue_depth = l->cfg.qd;
      fo.buffer_bytes = std::max<uint32_t>(l->cfg.bs, 1u << 20);
      l->fe = std::make_unique<InprocFrontend>(l->dispatcher, l->reactor, fo);
    }
    l->issue_deferred = false;
    if (l->t1_ns == 0) l->Issue();
  };
  loop.reactor->Post(&loop.start);
  main->Run();
  dispatcher.reset();
  if (qos && cfg.reactors > 1) {
    // ~QosScheduler cancels its shards' timers: each reactor stopped (main is) or on its
    // thread, so the client reactor's own thread runs it.
    struct Drop : Task {
      std::unique_ptr<qos::QosScheduler>* qos;
      std::promise<void> done;
    } drop;
    drop.qos = &qos;
    drop.fn = [](Task* t) {
      auto* d = static_cast<Drop*>(t);
      d->qos->reset();
      d->done.set_value();
    };
    std::future<void> dropped = drop.done.get_future();
    group->at(cfg.reactors - 1)->Post(&drop);
    dropped.wait();
  }
  qos.reset();
  group.reset();
  if (Status s = pool->SyncAll(); !s.ok()) std::fprintf(stderr, "sync: %s\n", s.ToString().c_str());

  const uint64_t ios = loop.count1;
  const double secs = (loop.t1_ns - loop.t0_ns) / 1e9;
  std::printf(
      "backend=%s reactors=%u rw=%s bs=%u qd=%u remote_io=%d stamps=%d owner=%s qos=%d: %.0f "
      "IOPS, "
      "%.4f us CPU "
      "per I/O "
      "(%llu I/Os, %llu errors)\n",
      cfg.backend.c_str(), cfg.reactors, cfg.write ? "randwrite" : "randread", cfg.bs, cfg.qd,
      cfg.remote_io ? 1 : 0, cfg.stamp_stages ? 1 : 0, cfg.owner_client ? "client" : "pool",
      cfg.qos ? 1 : 0, ios / secs, ios ? (loop.cpu1_ns - loop.cpu0_ns) / 1e3 / ios : 0.0,
      static_cast<unsigned long long>(ios), static_cast<unsigned long long>(loop.errors));
  return loop.errors ? 1 : 0;
}

}  // namespace
}  // namespace spd

int main(int argc, char** argv) {
  spd::Config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      spd::Usage();
      return 0;
    } else if (a == "--backend") {
      cfg.backend = next();
    } else if (a == "--reactors") {
      cfg.reactors = static_cast<unsigned>(std::stoul(next()));
    } else if (a == "--qd") {
      cfg.qd = static_cast<uint32_t>(std::stoul(next()));
    } else if (a == "--bs") {
      cfg.bs = static_cast<uint32_t>(std::stoul(next()));
    } else if (a == "--rw") {
      std::string rw = next();
      if (rw != "randread" && rw != "randwrite") {
        std::fprintf(stderr, "--rw: randread or randwrite\n");
        return 2;
      }
      cfg.write = rw == "randwrite";
    } else if (a == "--ios") {
      cfg.ios = std::stoull(next());
    } else if (a == "--seconds") {
      cfg.seconds = std::stod(next());
    } else if (a == "--span") {
      cfg.span_bytes = std::stoull(next());
    } else if (a == "--remote-io") {
      cfg.remote_io = next() != "0";
    } else if (a == "--stamp-stages") {
      cfg.stamp_stages = next() != "0";
    } else if (a == "--qos") {
      cfg.qos = next() != "0";
    } else if (a == "--qos-budget-factor") {
      cfg.qos_budget_factor = std::stod(next());
    } else if (a == "--owner") {
      std::string o = next();
      if (o != "pool" && o != "client") {
        std::fprintf(stderr, "--owner: pool or client\n");
        return 2;
      }
      cfg.owner_client = o == "client";
    } else {
      std::fprintf(stderr, "unknown option %s (--help)\n", a.c_str());
      return 2;
    }
  }
  if (cfg.reactors < 1 || cfg.reactors > 2 || cfg.qd == 0 || cfg.qd > 1024 || cfg.bs == 0 ||
      cfg.bs % 512 != 0 || cfg.bs > (1u << 20) || cfg.span_bytes < (1u << 20) ||
      cfg.span_bytes % (1u << 20) != 0 || !(cfg.qos_budget_factor >= 0.25) ||
      cfg.qos_budget_factor > 1024) {
    std::fprintf(stderr, "bad options (--help)\n");
    return 2;
  }
  return spd::Run(cfg);
}
