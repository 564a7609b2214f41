#include "cluster/etcd_client.h"

#include <nlohmann/json.hpp>

#include "cluster/etcd_codec.h"
#include "cluster/etcd_http.h"

namespace spd {

using etcd_codec::Base64Encode;
using etcd_internal::HttpLoop;
using etcd_internal::HttpPost;
using etcd_internal::HttpRequest;
using etcd_internal::HttpResponse;
using json = nlohmann::json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

// The first key of a prefix range: etcd refuses an empty key, and "\0" to "\0" is everything.
std::string RangeStart(std::string_view prefix) {
  return prefix.empty() ? std::string(1, '\0') : std::string(prefix);
}

Status Malformed(std::string_view what) {
  return Internal("etcd answered with a malformed " + std::string(what));
}

Status ParseKvs(const json& resp, std::vector<KeyValue>* out, size_t* bytes, size_t max_bytes) {
  auto it = resp.find("kvs");
  if (it == resp.end()) return Status::Ok();
  if (!it->is_array()) return Malformed("kvs list");
  for (const json& j : *it) {
    KeyValue kv;
    if (!etcd_codec::ParseKeyValue(j, &kv)) return Malformed("key-value");
    if (bytes != nullptr) {
      *bytes += kv.key.size() + kv.value.size() + sizeof(KeyValue);
      if (*bytes > max_bytes)
        return ResourceExhausted("etcd range: the keys read exceed " + std::to_string(max_bytes) +
                                 " bytes (max_response_bytes)");
    }
    out->push_back(std::move(kv));
  }
  return Status::Ok();
}

const char* TargetName(Compare::Target t) {
  switch (t) {
    case Compare::Target::kCreateRevision:
      return "CREATE";
    case Compare::Target::kModRevision:
      return "MOD";
    case Compare::Target::kVersion:
      return "VERSION";
    case Compare::Target::kValue:
      return "VALUE";
  }
  return "CREATE";
}

const char* OpName(Compare::Op op) {
  switch (op) {
    case Compare::Op::kEqual:
      return "EQUAL";
    case Compare::Op::kNotEqual:
      return "NOT_EQUAL";
    case Compare::Op::kLess:
      return "LESS";
    case Compare::Op::kGreater:
      return "GREATER";
  }
  return "EQUAL";
}

json CompareJson(const Compare& c) {
  json j = {
      {"key", Base64Encode(c.key)}, {"target", TargetName(c.target)}, {"result", OpName(c.op)}};
  switch (c.target) {
    case Compare::Target::kCreateRevision:
      j["create_revision"] = std::to_string(c.number);
      break;
    case Compare::Target::kModRevision:
      j["mod_revision"] = std::to_string(c.number);
      break;
    case Compare::Target::kVersion:
      j["version"] = std::to_string(c.number);
      break;
    case Compare::Target::kValue:
      j["value"] = Base64Encode(c.value);
      break;
  }
  return j;
}

json OpJson(const TxnOp& op, int64_t page) {
  json r = {{"key", Base64Encode(op.prefix ? RangeStart(op.key) : op.key)}};
  if (op.prefix) r["range_end"] = Base64Encode(etcd_codec::PrefixEnd(op.key));
  switch (op.kind) {
    case TxnOp::Kind::kPut: {
      json p = {{"key", Base64Encode(op.key)}, {"value", Base64Encode(op.value)}};
      if (op.lease != 0) p["lease"] = std::to_string(op.lease);
      return {{"request_put", std::move(p)}};
    }
    case TxnOp::Kind::kDelete:
      return {{"request_delete_range", std::move(r)}};
    case TxnOp::Kind::kGet:
      r["limit"] = std::to_string(page);
      return {{"request_range", std::move(r)}};
  }
  return json::object();
}

}  // namespace

Compare Compare::CreateRevision(std::string key, Op op, int64_t rev) {
  return {std::move(key), Target::kCreateRevision, op, rev, {}};
}
Compare Compare::ModRevision(std::string key, Op op, int64_t rev) {
  return {std::move(key), Target::kModRevision, op, rev, {}};
}
Compare Compare::Version(std::string key, Op op, int64_t version) {
  return {std::move(key), Target::kVersion, op, version, {}};
}
Compare Compare::Value(std::string key, Op op, std::string value) {
  return {std::move(key), Target::kValue, op, 0, std::move(value)};
}

TxnOp TxnOp::Put(std::string key, std::string value, int64_t lease) {
  return {Kind::kPut, std::move(key), std::move(value), lease, false};
}
TxnOp TxnOp::Delete(std::string key) { return {Kind::kDelete, std::move(key), {}, 0, false}; }
TxnOp TxnOp::DeletePrefix(std::string prefix) {
  return {Kind::kDelete, std::move(prefix), {}, 0, true};
}
TxnOp TxnOp::Get(std::string key) { return {Kind::kGet, std::move(key), {}, 0, false}; }

EtcdClient::EtcdClient(EtcdOptions o) : o_(std::move(o)) {}
EtcdClient::~EtcdClient() = default;

Result<std::unique_ptr<EtcdClient>> EtcdClient::Create(EtcdOptions o) {
  if (o.endpoints.empty()) return InvalidArgument("etcd: no endpoints");
  for (std::string& ep : o.endpoints) {
    if (ep.rfind("http://", 0) != 0 && ep.rfind("https://", 0) != 0)
      return InvalidArgument("etcd endpoint '" + ep +
                             "' is not an http:// or https:// URL (http://HOST:PORT)");
    while (!ep.empty() && ep.back() == '/') ep.pop_back();
  }
  if (o.connect_timeout.count() <= 0 || o.request_timeout.count() <= 0)
    return InvalidArgument("etcd: connect_timeout and request_timeout must be positive");
  if (o.max_response_bytes == 0 || o.range_page_keys <= 0)
    return InvalidArgument("etcd: max_response_bytes and range_page_keys must be positive");
  if (o.watch_backoff_min.count() <= 0 || o.watch_backoff_max < o.watch_backoff_min)
    return InvalidArgument("etcd: watch backoff wants 0 < min <= max");
  SPD_RETURN_IF_ERROR(etcd_internal::HttpGlobalInit());
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(o)));
}

Status EtcdClient::Call(std::string_view path, const json& request, Retry retry, json* response,
                        HttpLoop* loop, const std::atomic<bool>* stop) {
  std::unique_ptr<HttpLoop> own;
  if (loop == nullptr) {
    own = std::make_unique<HttpLoop>();
    loop = own.get();
  }
  const std::string body = request.dump();
  const auto deadline = steady_clock::now() + o_.request_timeout;
  const size_t n = o_.endpoints.size();
  const size_t first = preferred_.load(std::memory_order_relaxed) % n;
  std::string failures;  // one "endpoint: what failed" per endpoint tried
  bool timed_out = false;
  // The next call starts elsewhere; unless another thread already moved on.
  auto move_on = [&](size_t idx) {
    size_t expected = idx;
    preferred_.compare_exchange_strong(expected, (idx + 1) % n, std::memory_order_relaxed);
  };
  auto note = [&](const std::string& ep, std::string_view what) {
    if (!failures.empty()) failures += "; ";
    failures += ep;
    failures += ": ";
    failures += what;
  };
  for (size_t i = 0; i < n; ++i) {
    const size_t idx = (first + i) % n;
    const std::string& ep = o_.endpoints[idx];
    const std::string where = "etcd " + ep + std::string(path);
    const auto remaining = duration_cast<milliseconds>(deadline - steady_clock::now());
    if (remaining.count() <= 0) {
      timed_out = true;
      break;
    }
    HttpRequest req;
    req.url = ep + std::string(path);
    req.body = body;
    req.connect_timeout = std::min(o_.connect_timeout, remaining);
    req.total_timeout = remaining;
    req.max_body = o_.max_response_bytes;
    if (stop != nullptr) req.keep_going = [stop] { return !stop->load(); };
    HttpResponse r = HttpPost(loop, req);
    using O = HttpResponse::Outcome;
    switch (r.outcome) {
      case O::kAborted:
        return Status(StatusCode::kCancelled, where + ": stopped");
      case O::kTooLarge:
        return ResourceExhausted(where + ": " + r.error);
      case O::kNoConnect:
        note(ep, "cannot connect: " + r.error);
        if (steady_clock::now() >= deadline) timed_out = true;
        move_on(idx);
        continue;
      case O::kTimeout:
      case O::kBroken: {
        const bool timeout = r.outcome == O::kTimeout;
        const std::string what =
            (timeout ? "no answer within " + std::to_string(remaining.count()) + " ms"
                     : std::string("connection broke")) +
            " (" + r.error + ")";
        move_on(idx);
        if (retry == Retry::kWrite)
          return Status(timeout ? StatusCode::kDeadlineExceeded : StatusCode::kUnavailable,
                        where + ": " + what +
                            "; the request was sent, so it may or may not have been applied");
        note(ep, what);
        timed_out = timed_out || timeout;
        continue;
      }
      case O::kDone:
        break;
    }
    json j = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      if (r.http_status != 200)
        return Status(StatusCode::kUnknown, where + ": HTTP " + std::to_string(r.http_status) +
                                                " with a body that is not JSON");
      return Internal(where + ": the answer is not a JSON object");
    }
    Status es = etcd_codec::ErrorStatus(j, where);
    if (!es.ok()) {
      if (es.code() == StatusCode::kUnavailable && retry == Retry::kRead) {
        note(ep, es.message());
        move_on(idx);
        continue;
      }
      return es;
    }
    if (r.http_status != 200)
      return Status(StatusCode::kUnknown, where + ": HTTP " + std::to_string(r.http_status));
    preferred_.store(idx, std::memory_order_relaxed);
    *response = std::move(j);
    return Status::Ok();
  }
  return Status(timed_out ? StatusCode::kDeadlineExceeded : StatusCode::kUnavailable,
                "etcd " + std::string(path) + ": no endpoint answered within " +
                    std::to_string(o_.request_timeout.count()) + " ms (" + failures + ")");
}

Result<GetResult> EtcdClient::Get(std::string_view key) {
  json resp;
  SPD_RETURN_IF_ERROR(Call("/v3/kv/range", {{"key", Base64Encode(key)}}, Retry::kRead, &resp));
  GetResult out;
  out.revision = etcd_codec::HeaderRevision(resp);
  std::vector<KeyValue> kvs;
  SPD_RETURN_IF_ERROR(ParseKvs(resp, &kvs, nullptr, 0));
  if (!kvs.empty()) out.kv = std::move(kvs.front());
  return out;
}

Result<RangeResult> EtcdClient::Range(std::string_view prefix) {
  return RangeImpl(RangeStart(prefix), etcd_codec::PrefixEnd(prefix), nullptr, nullptr);
}

Result<RangeResult> EtcdClient::RangeImpl(std::string_view key, std::string_view range_end,
                                          HttpLoop* loop, const std::atomic<bool>* stop) {
  RangeResult out;
  size_t bytes = 0;
  std::string from(key);
  while (true) {
    json req = {{"key", Base64Encode(from)},
                {"range_end", Base64Encode(range_end)},
                {"limit", std::to_string(o_.range_page_keys)}};
    // Later pages at the first page's revision: one consistent view, or an error (compacted).
    if (out.revision != 0) req["revision"] = std::to_string(out.revision);
    json resp;
    SPD_RETURN_IF_ERROR(Call("/v3/kv/range", req, Retry::kRead, &resp, loop, stop));
    if (out.revision == 0) out.revision = etcd_codec::HeaderRevision(resp);
    const size_t before = out.kvs.size();
    SPD_RETURN_IF_ERROR(ParseKvs(resp, &out.kvs, &bytes, o_.max_response_bytes));
    if (!etcd_codec::Bool(resp, "more") || out.kvs.size() == before) break;
    from = out.kvs.back().key;
    from.push_back('\0');  // the next key after the last one read
  }
  return out;
}

Result<int64_t> EtcdClient::Put(std::string_view key, std::string_view value, int64_t lease) {
  json req = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) req["lease"] = std::to_string(lease);
  json resp;
  SPD_RETURN_IF_ERROR(Call("/v3/kv/put", req, Retry::kWrite, &resp));
  return etcd_codec::HeaderRevision(resp);
}

Result<DeleteResult> EtcdClient::DeleteImpl(std::string_view key, std::string_view range_end) {
  json req = {{"key", Base64Encode(key)}};
  if (!range_end.empty()) req["range_end"] = Base64Encode(range_end);
  json resp;
  SPD_RETURN_IF_ERROR(Call("/v3/kv/deleterange", req, Retry::kWrite, &resp));
  DeleteResult out;
  out.revision = etcd_codec::HeaderRevision(resp);
  auto deleted = etcd_codec::Int(resp, "deleted");
  if (!deleted) return Malformed("delete answer");
  out.deleted = *deleted;
  return out;
}

Result<DeleteResult> EtcdClient::Delete(std::string_view key) { return DeleteImpl(key, {}); }

Result<DeleteResult> EtcdClient::DeletePrefix(std::string_view prefix) {
  return DeleteImpl(RangeStart(prefix), etcd_codec::PrefixEnd(prefix));
}

Result<TxnResult> EtcdClient::Txn(const struct Txn& txn) {
  json req = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  bool writes = false;
  for (const Compare& c : txn.compare) req["compare"].push_back(CompareJson(c));
  for (const TxnOp& op : txn.then) {
    req["success"].push_back(OpJson(op, o_.range_page_keys));
    writes = writes || op.kind != TxnOp::Kind::kGet;
  }
  for (const TxnOp& op : txn.otherwise) {
    req["failure"].push_back(OpJson(op, o_.range_page_keys));
    writes = writes || op.kind != TxnOp::Kind::kGet;
  }
  json resp;
  SPD_RETURN_IF_ERROR(Call("/v3/kv/txn", req, writes ? Retry::kWrite : Retry::kRead, &resp));
  TxnResult out;
  out.succeeded = etcd_codec::Bool(resp, "succeeded");
  out.revision = etcd_codec::HeaderRevision(resp);
  const size_t want = (out.succeeded ? txn.then : txn.otherwise).size();
  auto it = resp.find("responses");
  if (it != resp.end() && !it->is_array()) return Malformed("transaction answer");
  if (it != resp.end()) {
    for (const json& r : *it) {
      TxnResult::OpResult op;
      if (auto rr = r.find("response_range"); r.is_object() && rr != r.end()) {
        SPD_RETURN_IF_ERROR(ParseKvs(*rr, &op.kvs, nullptr, 0));
      } else if (auto rd = r.find("response_delete_range"); r.is_object() && rd != r.end()) {
        op.deleted = etcd_codec::Int(*rd, "deleted").value_or(0);
      }
      out.results.push_back(std::move(op));
    }
  }
  if (out.results.size() != want) return Malformed("transaction answer (operation count)");
  return out;
}

Status EtcdClient::Compact(int64_t revision) {
  json resp;
  // physical: the answer waits until the old revisions are really gone.
  return Call("/v3/kv/compaction", {{"revision", std::to_string(revision)}, {"physical", true}},
              Retry::kWrite, &resp);
}

Result<Lease> EtcdClient::LeaseGrant(int64_t ttl_seconds) {
  json resp;
  SPD_RETURN_IF_ERROR(
      Call("/v3/lease/grant", {{"TTL", std::to_string(ttl_seconds)}}, Retry::kWrite, &resp));
  Lease out;
  auto id = etcd_codec::Int(resp, "ID");
  auto ttl = etcd_codec::Int(resp, "TTL");
  if (!id || !ttl || *id == 0) return Malformed("lease grant answer");
  out.id = *id;
  out.ttl = *ttl;
  return out;
}

Result<int64_t> EtcdClient::LeaseKeepAliveOnce(int64_t lease_id) {
  // A stream in etcd's API: one request in, one {"result": ...} line out, then the gateway
  // closes it since the request body has ended.
  json resp;
  SPD_RETURN_IF_ERROR(
      Call("/v3/lease/keepalive", {{"ID", std::to_string(lease_id)}}, Retry::kRead, &resp));
  auto it = resp.find("result");
  if (it == resp.end() || !it->is_object()) return Malformed("lease keepalive answer");
  auto ttl = etcd_codec::Int(*it, "TTL");
  if (!ttl) return Malformed("lease keepalive TTL");
  if (*ttl <= 0)
    return NotFound("etcd lease " + std::to_string(lease_id) + " has expired or was revoked");
  return *ttl;
}

Status EtcdClient::LeaseRevoke(int64_t lease_id) {
  json resp;
  return Call("/v3/lease/revoke", {{"ID", std::to_string(lease_id)}}, Retry::kWrite, &resp);
}

}  // namespace spd
