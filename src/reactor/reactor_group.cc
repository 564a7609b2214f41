#include "reactor/reactor_group.h"

#include <pthread.h>
#include <sched.h>

#include <future>

#include "common/log.h"
#include "common/os_util.h"

namespace spd {

unsigned ReactorGroup::AvailableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
  unsigned n = std::thread::hardware_concurrency();
  return n ? n : 1;
}

Result<std::unique_ptr<ReactorGroup>> ReactorGroup::Start(Reactor* main, unsigned count,
                                                          ReactorOptions options) {
  SPD_ASSERT(count >= 1);
  std::unique_ptr<ReactorGroup> g(new ReactorGroup());
  g->reactors_.push_back(main);
  options.force_epoll = options.force_epoll || main->engine() == ReactorEngine::kEpoll;
  // The CPUs this process may use, by number: under a cpuset (say 4-7) reactor i goes to the
  // i-th of them, not to CPU i.
  std::vector<int> cpus;
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  for (unsigned i = 1; i < count; ++i) {
    const int cpu = cpus.empty() ? -1 : cpus[i % cpus.size()];
    std::promise<Result<Reactor*>> made;
    auto made_f = made.get_future();
    options.name = std::to_string(i);
    g->threads_.emplace_back([cpu, options, &made] {
      NameThisThread(("spd-reactor" + options.name).c_str());
      // Pinning is a preference: a failure must not stop the daemon.
      if (options.pin_threads && cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
      }
      // The ring is created on its own thread: SINGLE_ISSUER binds it to the creating task.
      auto r = Reactor::Create(options);
      if (!r.ok()) {
        made.set_value(r.status());
        return;
      }
      std::unique_ptr<Reactor> reactor = std::move(r).value();
      Reactor* raw = reactor.get();
      made.set_value(raw);
      raw->Run();
      // The reactor object is destroyed by the group, after join.
      reactor.release();
    });
    Result<Reactor*> r = made_f.get();
    if (!r.ok()) {
      g->threads_.back().join();
      g->threads_.pop_back();
      return r.status().WithContext("reactor " + std::to_string(i));
    }
    g->reactors_.push_back(r.value());
    g->owned_.emplace_back(r.value());
  }
  return g;
}

ReactorGroup::~ReactorGroup() { StopThreads(); }

void ReactorGroup::StopThreads() {
  for (auto& r : owned_) r->Stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

}  // namespace spd
