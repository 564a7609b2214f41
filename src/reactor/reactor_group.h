// ReactorGroup: one reactor per core. Reactor 0 is the caller's (it runs on the main thread and
// owns the pool); reactors 1..N-1 each run on a thread of their own, pinned to a core, and sleep
// in the kernel when idle. Work reaches them only through Reactor::Post.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include "reactor/reactor.h"

namespace spd {

class ReactorGroup {
 public:
  // Starts `count - 1` reactor threads beside `main`. Each extra reactor uses the same engine as
  // `main` (epoll when main fell back). REQUIRES: count >= 1.
  static Result<std::unique_ptr<ReactorGroup>> Start(Reactor* main, unsigned count,
                                                     ReactorOptions options);
  ~ReactorGroup();  // StopThreads()
  // Stops and joins the extra reactors' threads; the reactors themselves stay (their timers and
  // channels may then be torn down from this thread). Idempotent.
  void StopThreads();

  unsigned size() const { return static_cast<unsigned>(reactors_.size()); }
  Reactor* at(unsigned i) const { return reactors_[i]; }

  // Number of CPUs this process may run on (the default for --cores).
  static unsigned AvailableCores();

 private:
  ReactorGroup() = default;
  std::vector<Reactor*> reactors_;
  std::vector<std::unique_ptr<Reactor>> owned_;
  std::vector<std::thread> threads_;
};

}  // namespace spd
