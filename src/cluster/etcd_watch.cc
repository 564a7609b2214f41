// EtcdWatcher: one /v3/watch stream on a thread of its own (see etcd_client.h).
//
// The stream is a POST whose answer never ends: etcd's gateway writes one JSON object a line,
// {"result": WatchResponse} (or {"error": ...}). The first says "created"; then come messages
// with events, progress notifications (events empty, a header revision: everything up to it
// was sent), or a cancellation — with compact_revision set when the start revision is older
// than the store's compaction.
#include <condition_variable>
#include <mutex>
#include <random>

#include <nlohmann/json.hpp>

#include "cluster/etcd_client.h"
#include "cluster/etcd_codec.h"
#include "cluster/etcd_http.h"
#include "common/log.h"
#include "common/os_util.h"

namespace spd {

using etcd_codec::Base64Encode;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace etcd_internal {

struct WatchState {
  EtcdClient* client = nullptr;
  std::string prefix;
  std::string key;        // the first key of the range
  std::string range_end;  // etcd's end of the prefix
  WatchCallback callback;
  HttpLoop loop;
  std::atomic<bool> stop{false};
  std::mutex mu;  // backoff waits
  std::condition_variable cv;
  std::atomic<int64_t> next{0};  // the revision to resume from; 0: from now
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> resyncs{0};
  mutable std::mutex error_mu;
  Status last_error;
  milliseconds backoff{0};
  std::minstd_rand rng{static_cast<uint32_t>(steady_clock::now().time_since_epoch().count())};

  void Run();
  // One stream from `endpoint`, to its end. Returns why it ended; *compacted when etcd said
  // the revision to resume from was compacted.
  Status Stream(const std::string& endpoint, bool* compacted);
  // A message of the stream. False: end the stream (*error says why).
  bool OnMessage(std::string_view line, const std::string& where, bool* created, bool* compacted,
                 Status* error);
  void Backoff();  // waits the current backoff (or until Stop) and doubles it
  void SetError(const Status& s) {
    std::lock_guard<std::mutex> l(error_mu);
    last_error = s;
  }
};

void WatchState::Backoff() {
  const EtcdOptions& o = client->o_;
  // Half the backoff plus a random part of the other half: watchers of one etcd that went away
  // together do not all come back at the same instant.
  const auto half = backoff.count() / 2;
  const milliseconds wait(half + (half > 0 ? static_cast<int64_t>(rng() % (half + 1)) : 0));
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait_for(l, wait, [this] { return stop.load(); });
  }
  backoff = std::min(backoff * 2, o.watch_backoff_max);
}

void WatchState::Run() {
  const EtcdOptions& o = client->o_;
  const size_t n = o.endpoints.size();
  size_t ep = client->preferred_.load(std::memory_order_relaxed) % n;
  backoff = o.watch_backoff_min;
  bool need_resync = false;
  while (!stop.load()) {
    if (need_resync) {
      Result<RangeResult> r = client->RangeImpl(key, range_end, &loop, &stop);
      if (stop.load()) break;
      if (!r.ok()) {
        SetError(r.status());
        SPD_LOG_WARN("etcd watch '%s': re-list failed: %s", prefix.c_str(),
                     r.status().ToString().c_str());
        Backoff();
        continue;
      }
      WatchUpdate u;
      u.resynced = true;
      u.revision = r->revision;
      u.snapshot = std::move(r->kvs);
      next.store(r->revision + 1);
      resyncs.fetch_add(1);
      need_resync = false;
      callback(u);
    }
    bool compacted = false;
    const Status s = Stream(o.endpoints[ep], &compacted);
    if (stop.load()) break;
    if (compacted) {
      SPD_LOG_WARN("etcd watch '%s': %s", prefix.c_str(), s.ToString().c_str());
      need_resync = true;
      continue;
    }
    SetError(s);
    reconnects.fetch_add(1);
    SPD_LOG_WARN("etcd watch '%s': %s; reconnecting from revision %lld", prefix.c_str(),
                 s.ToString().c_str(), static_cast<long long>(next.load()));
    ep = (ep + 1) % n;
    Backoff();
  }
}

bool WatchState::OnMessage(std::string_view line, const std::string& where, bool* created,
                           bool* compacted, Status* error) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    *error = Internal(where + ": a stream message that is not a JSON object");
    return false;
  }
  Status es = etcd_codec::ErrorStatus(j, where);
  if (!es.ok()) {
    *error = es;
    return false;
  }
  auto it = j.find("result");
  if (it == j.end() || !it->is_object()) {
    *error = Internal(where + ": a stream message without a result");
    return false;
  }
  const json& r = *it;
  const int64_t header_rev = etcd_codec::HeaderRevision(r);
  if (etcd_codec::Bool(r, "canceled")) {
    const int64_t compact = etcd_codec::Int(r, "compact_revision").value_or(0);
    if (compact > 0) {
      *compacted = true;
      *error = OutOfRange(where + ": revision " + std::to_string(next.load()) +
                          " is compacted (etcd keeps revisions from " + std::to_string(compact) +
                          " on); re-listing the prefix");
    } else {
      *error = Status(StatusCode::kAborted,
                      where + ": etcd cancelled the watch: " + etcd_codec::Str(r, "cancel_reason"));
    }
    return false;
  }
  if (etcd_codec::Bool(r, "created")) {
    *created = true;
    backoff = client->o_.watch_backoff_min;  // connected: the next break starts afresh
    if (next.load() == 0) next.store(header_rev + 1);
    // An etcd whose newest revision is below the one to resume from lost its data (restored
    // from an old snapshot, or a new cluster on the same address): it accepts the watch and
    // would wait, silently, until its revisions catch up. List again instead. (A member that
    // lags the one that served the list can do this too; a re-list is harmless then.)
    if (header_rev > 0 && next.load() > header_rev + 1) {
      *compacted = true;
      *error = OutOfRange(where + ": etcd is at revision " + std::to_string(header_rev) +
                          ", below revision " + std::to_string(next.load()) +
                          " to resume from (its data was replaced); re-listing the prefix");
      return false;
    }
  }
  auto evs = r.find("events");
  if (evs == r.end() || !evs->is_array() || evs->empty()) {
    // A progress notification: every event up to header_rev was sent.
    if (*created && !etcd_codec::Bool(r, "created") && header_rev + 1 > next.load())
      next.store(header_rev + 1);
    return true;
  }
  WatchUpdate u;
  u.revision = header_rev;
  const int64_t from = next.load();
  for (const json& e : *evs) {
    WatchEvent ev;
    ev.type =
        etcd_codec::Str(e, "type") == "DELETE" ? WatchEvent::Type::kDelete : WatchEvent::Type::kPut;
    auto kv = e.is_object() ? e.find("kv") : e.end();
    if (kv == e.end() || !etcd_codec::ParseKeyValue(*kv, &ev.kv)) {
      *error = Internal(where + ": a malformed watch event");
      return false;
    }
    if (ev.kv.mod_revision < from) continue;  // delivered before (never expected)
    u.events.push_back(std::move(ev));
  }
  if (u.events.empty()) return true;
  next.store(u.events.back().kv.mod_revision + 1);
  callback(u);
  return !stop.load();
}

Status WatchState::Stream(const std::string& endpoint, bool* compacted) {
  const EtcdOptions& o = client->o_;
  const std::string where = "etcd " + endpoint + "/v3/watch '" + prefix + "'";
  json create = {{"key", Base64Encode(key)},
                 {"range_end", Base64Encode(range_end)},
                 {"progress_notify", true}};
  if (next.load() > 0) create["start_revision"] = std::to_string(next.load());
  HttpRequest req;
  req.url = endpoint + "/v3/watch";
  req.body = json{{"create_request", std::move(create)}}.dump();
  req.connect_timeout = o.connect_timeout;
  req.total_timeout = milliseconds(0);
  req.max_body = o.max_response_bytes;
  req.tcp_keepalive = true;
  req.keepalive_idle = o.watch_keepalive_idle;
  req.keepalive_interval = o.watch_keepalive_interval;
  bool created = false;
  Status error;
  req.on_line = [&](std::string_view line) {
    return OnMessage(line, where, &created, compacted, &error);
  };
  const auto started = steady_clock::now();
  req.keep_going = [&] {
    if (stop.load()) return false;
    if (!created && steady_clock::now() - started > o.request_timeout) {
      error = Status(StatusCode::kDeadlineExceeded,
                     where + ": the watch was not confirmed within " +
                         std::to_string(o.request_timeout.count()) + " ms");
      return false;
    }
    return true;
  };
  HttpResponse r = HttpPost(&loop, req);
  using O = HttpResponse::Outcome;
  switch (r.outcome) {
    case O::kAborted:
      return error.ok() ? Status(StatusCode::kCancelled, where + ": stopped") : error;
    case O::kDone:
      // A last line without '\n' (an error answer, say) still counts.
      if (!r.body.empty() && !OnMessage(r.body, where, &created, compacted, &error)) return error;
      return Unavailable(where + ": the stream ended (HTTP " + std::to_string(r.http_status) + ")");
    case O::kNoConnect:
      return Unavailable(where + ": cannot connect: " + r.error);
    case O::kTooLarge:
      return ResourceExhausted(where + ": a message larger than " +
                               std::to_string(o.max_response_bytes) + " bytes");
    case O::kTimeout:
    case O::kBroken:
      break;
  }
  return Unavailable(where + ": the stream broke: " + r.error);
}

}  // namespace etcd_internal

EtcdWatcher::EtcdWatcher() : s_(std::make_unique<etcd_internal::WatchState>()) {}

EtcdWatcher::~EtcdWatcher() { Stop(); }

void EtcdWatcher::Stop() {
  s_->stop.store(true);
  { std::lock_guard<std::mutex> l(s_->mu); }
  s_->cv.notify_all();
  s_->loop.Wake();
  if (!thread_.joinable()) return;
  SPD_ASSERT_MSG(thread_.get_id() != std::this_thread::get_id(),
                 "EtcdWatcher::Stop called from its own callback");
  thread_.join();
}

int64_t EtcdWatcher::next_revision() const { return s_->next.load(); }
uint64_t EtcdWatcher::reconnects() const { return s_->reconnects.load(); }
uint64_t EtcdWatcher::resyncs() const { return s_->resyncs.load(); }
Status EtcdWatcher::last_error() const {
  std::lock_guard<std::mutex> l(s_->error_mu);
  return s_->last_error;
}

Result<std::unique_ptr<EtcdWatcher>> EtcdClient::Watch(std::string_view prefix,
                                                       WatchCallback callback, WatchOptions opts) {
  if (!callback) return InvalidArgument("etcd watch: no callback");
  if (opts.start_revision < 0) return InvalidArgument("etcd watch: negative start revision");
  std::unique_ptr<EtcdWatcher> w(new EtcdWatcher());
  etcd_internal::WatchState* s = w->s_.get();
  if (!s->loop.ok()) return Internal("etcd watch: libcurl multi handle could not be made");
  s->client = this;
  s->prefix = std::string(prefix);
  s->key = prefix.empty() ? std::string(1, '\0') : std::string(prefix);
  s->range_end = etcd_codec::PrefixEnd(prefix);
  s->callback = std::move(callback);
  s->next.store(opts.start_revision);
  w->thread_ = std::thread([s] {
    NameThisThread("spd-etcd-watch");
    s->Run();
  });
  return w;
}

}  // namespace spd
