#include "cluster/prefix_mirror.h"

#include <utility>

#include "common/os_util.h"

namespace spd {

std::unique_ptr<PrefixMirror> PrefixMirror::Start(EtcdClient* client, Options o,
                                                  std::function<void()> on_change) {
  std::unique_ptr<PrefixMirror> m(new PrefixMirror(client, std::move(o), std::move(on_change)));
  m->thread_ = std::thread([p = m.get()] {
    NameThisThread("spd-etcd-mirror");
    p->ListThenWatch();
  });
  return m;
}

PrefixMirror::~PrefixMirror() { Stop(); }

void PrefixMirror::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (watcher_) watcher_->Stop();
}

PrefixMirror::Snapshot PrefixMirror::Get() const {
  std::lock_guard<std::mutex> l(mu_);
  Snapshot s = copy_;
  if (watcher_ != nullptr) {
    s.watch_error = watcher_->last_error();
    s.reconnects = watcher_->reconnects();
  }
  return s;
}

void PrefixMirror::ListThenWatch() {
  while (true) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
    }
    Result<RangeResult> r = client_->Range(o_.prefix);
    if (r.ok()) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stop_) return;
        copy_.kvs.clear();
        for (KeyValue& kv : r->kvs) copy_.kvs[kv.key] = std::move(kv);
        copy_.revision = r->revision;
        copy_.listed = true;
      }
      if (on_change_) on_change_();
      WatchOptions wo;
      wo.start_revision = r->revision + 1;
      Result<std::unique_ptr<EtcdWatcher>> w = client_->Watch(
          o_.prefix, [this](const WatchUpdate& u) { Apply(u); }, wo);
      std::lock_guard<std::mutex> l(mu_);
      if (w.ok()) {
        watcher_ = std::move(*w);
        return;
      }
      copy_.watch_error = w.status();  // only for bad arguments: list again after the wait
    }
    std::unique_lock<std::mutex> l(mu_);
    if (!r.ok()) copy_.watch_error = r.status();
    cv_.wait_for(l, o_.list_retry, [&] { return stop_; });
  }
}

void PrefixMirror::Apply(const WatchUpdate& u) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (u.resynced) {
      copy_.kvs.clear();
      for (const KeyValue& kv : u.snapshot) copy_.kvs[kv.key] = kv;
    }
    for (const WatchEvent& e : u.events) {
      if (e.type == WatchEvent::Type::kPut)
        copy_.kvs[e.kv.key] = e.kv;
      else
        copy_.kvs.erase(e.kv.key);
    }
    if (u.revision > copy_.revision) copy_.revision = u.revision;
  }
  if (on_change_) on_change_();
}

}  // namespace spd
