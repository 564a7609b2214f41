// PrefixMirror: a local copy of every key under an etcd prefix, kept current by a watch, so that
// readers (the control API listing nodes, a volume's primary looked up on the data path's
// slow side) ask memory instead of etcd and never block on it.
//
// Start returns at once, whether etcd answers or not. A thread of its own lists the prefix,
// retrying until etcd answers, then watches from the listed revision + 1 (EtcdWatcher: a broken
// stream resumes where it stopped; a compaction makes it re-list, and the copy is replaced by the
// snapshot). Until the first list the copy is empty and `listed` false; while the stream is
// broken the copy is what it was, and `watch_error` says why.
//
// Thread-safety: every method from any thread; `on_change` runs on the mirror's threads, one
// call at a time, after the copy changed, and must not call Stop.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/etcd_client.h"
#include "common/status.h"

namespace spd {

class PrefixMirror {
 public:
  struct Options {
    std::string prefix;
    std::chrono::milliseconds list_retry{500};  // between failed first lists
  };
  struct Snapshot {
    bool listed = false;   // the first list succeeded
    int64_t revision = 0;  // the copy is etcd's state at this revision
    Status watch_error;    // why the stream last broke (OK if it never did)
    uint64_t reconnects = 0;
    std::map<std::string, KeyValue> kvs;  // by key
  };

  // `client` outlives the mirror.
  static std::unique_ptr<PrefixMirror> Start(EtcdClient* client, Options o,
                                             std::function<void()> on_change = {});
  ~PrefixMirror();  // Stop()
  PrefixMirror(const PrefixMirror&) = delete;
  PrefixMirror& operator=(const PrefixMirror&) = delete;

  // Ends the list loop and the watch; no on_change runs after it returns.
  void Stop();
  Snapshot Get() const;

 private:
  PrefixMirror(EtcdClient* client, Options o, std::function<void()> on_change)
      : client_(client), o_(std::move(o)), on_change_(std::move(on_change)) {}
  void ListThenWatch();
  void Apply(const WatchUpdate& u);

  EtcdClient* client_;
  Options o_;
  std::function<void()> on_change_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                     // guarded by mu_
  Snapshot copy_;                         // guarded by mu_
  std::unique_ptr<EtcdWatcher> watcher_;  // set once by the thread; read after it is joined
  std::thread thread_;
};

}  // namespace spd
