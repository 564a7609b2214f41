// An etcd v3 client over etcd's JSON gateway (HTTP POST of JSON to /v3/...), with libcurl.
//
// Blocking calls, meant for a cluster thread (never a reactor: a call may take its whole
// deadline). Thread-safe: several threads may call one client at once; each call uses its own
// connection.
//
// Endpoints: a call starts at the endpoint that answered last and, when an endpoint cannot be
// reached (connection refused, connect timeout) or, for a read, fails in any transport way or
// says etcd is unavailable, moves on to the next one until the call's deadline. A write that
// reached an endpoint and then failed (timed out, connection broken) is NOT sent again
// elsewhere: its outcome is unknown, and the Status says so; the caller re-reads and decides.
//
// Deadlines: each call has request_timeout in all (every endpoint tried included), and each
// connection attempt connect_timeout of it. Response bodies are capped at max_response_bytes.
//
// Watches (Watch) run on a thread of their own each; see EtcdWatcher. docs/cluster.md has the
// whole picture.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace spd {

struct EtcdOptions {
  // http://HOST:PORT of each member (https:// works too, with the system's CAs).
  std::vector<std::string> endpoints;
  std::chrono::milliseconds connect_timeout{1000};  // each connection attempt
  std::chrono::milliseconds request_timeout{3000};  // a whole call, all endpoints tried
  size_t max_response_bytes = size_t{64} << 20;     // one response body (one watch message)
  int64_t range_page_keys = 1000;                   // Range reads pages of this many keys
  // Watch streams: the wait between reconnections doubles from the min up to the max.
  std::chrono::milliseconds watch_backoff_min{50};
  std::chrono::milliseconds watch_backoff_max{2000};
  // TCP keepalive on watch streams, which are silent while nothing changes: a peer that went
  // away without closing is noticed after idle + 9 probes (Linux's default count) * interval.
  std::chrono::seconds watch_keepalive_idle{5};
  std::chrono::seconds watch_keepalive_interval{2};
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;  // the revision that created the key (unchanged by updates)
  int64_t mod_revision = 0;     // the revision of the last change
  int64_t version = 0;          // changes since creation (1 after the first put)
  int64_t lease = 0;            // the lease the key is attached to, 0 for none
};

struct GetResult {
  int64_t revision = 0;        // the store's revision when read (the header revision)
  std::optional<KeyValue> kv;  // empty: no such key
};

struct RangeResult {
  int64_t revision = 0;       // every page was read at this revision
  std::vector<KeyValue> kvs;  // in key order
};

struct DeleteResult {
  int64_t revision = 0;
  int64_t deleted = 0;
};

// One comparison of a transaction.
struct Compare {
  enum class Target { kCreateRevision, kModRevision, kVersion, kValue };
  enum class Op { kEqual, kNotEqual, kLess, kGreater };
  std::string key;
  Target target = Target::kCreateRevision;
  Op op = Op::kEqual;
  int64_t number = 0;  // the revision or version compared with
  std::string value;   // for kValue

  // create_revision == 0 is "the key does not exist".
  static Compare CreateRevision(std::string key, Op op, int64_t rev);
  static Compare ModRevision(std::string key, Op op, int64_t rev);
  static Compare Version(std::string key, Op op, int64_t version);
  static Compare Value(std::string key, Op op, std::string value);
};

// One operation of a transaction's then or else branch.
struct TxnOp {
  enum class Kind { kPut, kDelete, kGet };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;    // kPut
  int64_t lease = 0;    // kPut
  bool prefix = false;  // kDelete, kGet: every key starting with `key`

  static TxnOp Put(std::string key, std::string value, int64_t lease = 0);
  static TxnOp Delete(std::string key);
  static TxnOp DeletePrefix(std::string prefix);
  static TxnOp Get(std::string key);
};

struct Txn {
  std::vector<Compare> compare;  // all must hold for `then`
  std::vector<TxnOp> then;
  std::vector<TxnOp> otherwise;
};

struct TxnResult {
  bool succeeded = false;  // the comparisons held: `then` ran, else `otherwise` did
  int64_t revision = 0;    // the store's revision after the transaction
  // One per operation of the branch that ran: the keys a kGet read (at most one page of
  // range_page_keys), the count a kDelete deleted; empty/0 for a kPut.
  struct OpResult {
    std::vector<KeyValue> kvs;
    int64_t deleted = 0;
  };
  std::vector<OpResult> results;
};

struct Lease {
  int64_t id = 0;
  int64_t ttl = 0;  // seconds, as granted (etcd may raise a small TTL to its minimum)
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  // For kDelete only key and mod_revision (the deletion's revision) are set.
  KeyValue kv;
};

// What a watch callback is handed. Either events, in revision order, or — after etcd compacted
// away revisions the watch still needed — a re-list: `resynced` set and `snapshot` holding
// every key under the prefix at `revision`. The callback replaces what it knew with the
// snapshot (keys missing from it are gone); events resume at revision + 1.
struct WatchUpdate {
  bool resynced = false;
  std::vector<KeyValue> snapshot;  // when resynced
  std::vector<WatchEvent> events;
  int64_t revision = 0;  // the header revision of the message (the snapshot's, when resynced)
};

using WatchCallback = std::function<void(const WatchUpdate&)>;

struct WatchOptions {
  int64_t start_revision = 0;  // deliver changes from this revision on; 0: from now
};

namespace etcd_internal {
struct WatchState;
class HttpLoop;
}  // namespace etcd_internal

// A running watch (EtcdClient::Watch): one thread holding one /v3/watch stream. The callback
// runs on that thread, one update at a time, in revision order. On a broken stream the thread
// reconnects (next endpoint, backoff between watch_backoff_min and _max) and resumes from the
// revision after the last one it delivered, so nothing is lost or repeated; when etcd answers
// that this revision was compacted, it re-lists the prefix and hands the callback a resynced
// update. A stream that does not confirm the watch within request_timeout counts as broken.
class EtcdWatcher {
 public:
  ~EtcdWatcher();  // Stop()
  EtcdWatcher(const EtcdWatcher&) = delete;
  EtcdWatcher& operator=(const EtcdWatcher&) = delete;

  // Ends the watch and joins the thread: within a moment when the thread is waiting on the
  // stream or a backoff, within request_timeout when it is in the middle of a re-list page.
  // No callback runs after Stop returns. Must not be called from the callback.
  void Stop();

  // The revision the watch would resume from (the last one delivered + 1).
  int64_t next_revision() const;
  uint64_t reconnects() const;  // streams that broke and were opened again
  uint64_t resyncs() const;     // re-lists after a compaction
  Status last_error() const;    // why the last stream broke (OK if none has)

 private:
  friend class EtcdClient;
  EtcdWatcher();
  std::unique_ptr<etcd_internal::WatchState> s_;
  std::thread thread_;
};

class EtcdClient {
 public:
  // Checks the options (at least one http:// or https:// endpoint, positive timeouts).
  static Result<std::unique_ptr<EtcdClient>> Create(EtcdOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  const EtcdOptions& options() const { return o_; }

  Result<GetResult> Get(std::string_view key);
  // Every key starting with `prefix` ("" for all), read in pages of range_page_keys at one
  // revision; all of it at most max_response_bytes (else kResourceExhausted).
  Result<RangeResult> Range(std::string_view prefix);
  // The revision of the put, which is the key's new mod_revision. lease 0: no lease.
  Result<int64_t> Put(std::string_view key, std::string_view value, int64_t lease = 0);
  Result<DeleteResult> Delete(std::string_view key);
  Result<DeleteResult> DeletePrefix(std::string_view prefix);
  Result<TxnResult> Txn(const struct Txn& txn);
  // Compacts the store's history up to `revision` (watches from older revisions re-list).
  Status Compact(int64_t revision);

  Result<Lease> LeaseGrant(int64_t ttl_seconds);
  // One keepalive: the TTL (seconds) the lease has again. kNotFound once it has expired or
  // been revoked.
  Result<int64_t> LeaseKeepAliveOnce(int64_t lease_id);
  Status LeaseRevoke(int64_t lease_id);

  // Watches every key starting with `prefix` from opts.start_revision on, on a thread of its
  // own (see EtcdWatcher). The client must outlive the watcher.
  Result<std::unique_ptr<EtcdWatcher>> Watch(std::string_view prefix, WatchCallback callback,
                                             WatchOptions opts = {});

 private:
  friend struct etcd_internal::WatchState;
  explicit EtcdClient(EtcdOptions o);

  enum class Retry { kRead, kWrite };
  // POSTs `request` to `path` with failover (see the header comment) and parses the answer into
  // *response. `loop` and `stop` come from a watcher (so that Stop interrupts the call); null
  // otherwise.
  Status Call(std::string_view path, const nlohmann::json& request, Retry retry,
              nlohmann::json* response, etcd_internal::HttpLoop* loop = nullptr,
              const std::atomic<bool>* stop = nullptr);
  Result<RangeResult> RangeImpl(std::string_view key, std::string_view range_end,
                                etcd_internal::HttpLoop* loop, const std::atomic<bool>* stop);
  Result<DeleteResult> DeleteImpl(std::string_view key, std::string_view range_end);

  EtcdOptions o_;
  std::atomic<size_t> preferred_{0};  // the endpoint that answered last
};

}  // namespace spd
