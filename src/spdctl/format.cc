#include "spdctl/format.h"

#include <cstdio>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <ctime>
#include <sstream>

#include "policy/model.h"

namespace spd::ctl {

Doc Header(const char* kind) {
  Doc d;
  d["apiVersion"] = kApiVersion;
  d["kind"] = kind;
  return d;
}

namespace {

// A replicated volume's set in a line: "sync, 3 copies (1 not in sync), primary a", the lag
// where known (the primary answered: else 0), a deletion. `get_line`: volume get's REPLICATION
// line, which names the primary's epoch and lists each copy's state after it (so no count).
std::string ReplicationText(const Doc& r, bool get_line = false) {
  const std::string primary = r["primary"].get<std::string>();
  const uint32_t replicas = r["replicas"].get<uint32_t>();
  std::string t = r["durability"].get<std::string>() + ", " + std::to_string(replicas) + " copies";
  size_t behind = 0;
  for (const Doc& c : r["copies"]) behind += c["state"].get<std::string>() != "in_sync" ? 1 : 0;
  if (!get_line && behind > 0) t += " (" + std::to_string(behind) + " not in sync)";
  t += ", primary ";
  if (primary.empty())
    t += "none now";
  else
    t += get_line ? primary + " (epoch " + std::to_string(r["epoch"].get<uint64_t>()) + ")"
                  : primary;
  if (r["lagBytes"].get<uint64_t>() > 0)
    t += ", lag " + std::to_string(r["lagBytes"].get<uint64_t>()) + " B / " +
         std::to_string(r["lagMs"].get<uint64_t>()) + " ms";
  if (r.value("deleting", false)) t += ", being deleted";
  return t;
}

// Seconds since the epoch as "2026-12-02T01:00:00Z".
std::string UtcTime(int64_t unix_seconds) {
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%FT%TZ", &tm) == 0)
    return std::to_string(unix_seconds);
  return buf;
}

// A replicated volume as ReplicatedVolumeList lists it.
Doc ReplicatedFields(const v1::ReplicatedVolume& v) {
  Doc x;
  x["name"] = v.name();
  x["sizeBytes"] = v.size_bytes();
  x["replicas"] = v.replicas();
  x["nodes"] = Doc::array();
  for (const std::string& n : v.nodes()) x["nodes"].push_back(n);
  x["primary"] = v.primary();
  x["epoch"] = v.epoch();
  x["durability"] = v.durability() == v1::DURABILITY_ASYNC  ? "async"
                    : v.durability() == v1::DURABILITY_SYNC ? "sync"
                    : v.durability() == v1::DURABILITY_NONE ? "none"
                                                            : "flush";
  if (v.deleting()) x["deleting"] = true;  // its copies are "deleting" or "deleted"
  x["lagBytes"] = v.lag_bytes();
  x["lagMs"] = v.lag_ms();
  x["copies"] = Doc::array();
  for (const v1::ReplicaState& s : v.states()) {
    Doc c;
    c["node"] = s.node();
    c["state"] = s.state();
    c["epoch"] = s.epoch();
    c["detail"] = s.detail();
    c["acked"] = s.acked();
    x["copies"].push_back(std::move(c));
  }
  return x;
}

Doc VolumeFields(const v1::Volume& v) {
  Doc d;
  d["name"] = v.name();
  d["id"] = v.id();
  d["pool"] = v.pool();
  d["sizeBytes"] = v.size_bytes();
  d["allocatedBytes"] = v.allocated_bytes();
  d["durability"] = DurabilityText(v.durability());
  d["readOnly"] = v.read_only();
  d["users"] = v.users();
  d["tenant"] = v.tenant();
  d["storageClass"] = v.storage_class();
  if (v.has_intent_status()) {
    const v1::IntentStatus& st = v.intent_status();
    Doc q;
    q["state"] = st.state();
    q["reason"] = st.reason();
    q["windowSeconds"] = st.window_seconds();
    q["iops"] = st.iops();
    q["bytesPerSecond"] = st.bytes_per_second();
    q["latencyPercentile"] = st.latency_percentile();
    q["latencySeconds"] = st.latency_seconds();
    q["queuedSecondsMean"] = st.queued_seconds_mean();
    d["intentStatus"] = q;
  }
  if (v.has_replication()) d["replication"] = ReplicatedFields(v.replication());
  return d;
}

Doc PoolFields(const v1::Pool& p) {
  Doc d;
  d["name"] = p.name();
  d["path"] = p.path();
  d["backend"] = p.backend();
  d["sizeBytes"] = p.size_bytes();
  d["chunkSizeBytes"] = p.chunk_size_bytes();
  d["allocatedBytes"] = p.allocated_bytes();
  d["freeBytes"] = p.free_bytes();
  d["provisionedBytes"] = p.provisioned_bytes();
  d["readOnly"] = p.read_only();
  d["volumes"] = p.volumes();
  d["commits"] = p.commits();
  return d;
}

void EmitYaml(YAML::Emitter& e, const Doc& d) {
  if (d.is_object()) {
    e << YAML::BeginMap;
    for (auto it = d.begin(); it != d.end(); ++it) {
      e << YAML::Key << it.key() << YAML::Value;
      EmitYaml(e, it.value());
    }
    e << YAML::EndMap;
  } else if (d.is_array()) {
    e << YAML::BeginSeq;
    for (const auto& x : d) EmitYaml(e, x);
    e << YAML::EndSeq;
  } else if (d.is_string()) {
    // Quoted when YAML would read it as something else ("true", "10", "null", "").
    const std::string s = d.get<std::string>();
    e << YAML::DoubleQuoted << s;
  } else if (d.is_boolean()) {
    e << (d.get<bool>() ? "true" : "false");
  } else if (d.is_number_unsigned()) {
    e << d.get<uint64_t>();
  } else if (d.is_number_integer()) {
    e << d.get<int64_t>();
  } else if (d.is_number_float()) {
    e << d.get<double>();
  } else {
    e << YAML::Null;
  }
}

// An intent in a table cell: compact JSON, "-" when empty.
std::string Compact(const Doc& d) { return d.empty() ? "-" : d.dump(); }

std::string Cell(const Doc& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_array()) {
    std::string s;
    for (const Doc& x : v) s += (s.empty() ? "" : ",") + Cell(x);
    return s;
  }
  return v.dump();
}

// Columns: (title, key, is_size).
struct Col {
  const char* title;
  const char* key;
  bool size;
};

std::string Table(const std::vector<const Doc*>& rows, const std::vector<Col>& cols) {
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> width;
  for (const Col& c : cols) width.push_back(std::string(c.title).size());
  for (const Doc* r : rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < cols.size(); ++i) {
      const Doc& v = (*r)[cols[i].key];
      std::string s =
          cols[i].size && v.is_number() ? policy::FormatSize(v.get<uint64_t>()) : Cell(v);
      width[i] = std::max(width[i], s.size());
      line.push_back(std::move(s));
    }
    cells.push_back(std::move(line));
  }
  std::ostringstream out;
  auto emit = [&](const std::vector<std::string>& line) {
    for (size_t i = 0; i < line.size(); ++i) {
      out << line[i];
      if (i + 1 < line.size()) out << std::string(width[i] - line[i].size() + 2, ' ');
    }
    out << '\n';
  };
  std::vector<std::string> head;
  for (const Col& c : cols) head.push_back(c.title);
  emit(head);
  for (const auto& l : cells) emit(l);
  return out.str();
}

const std::vector<Col> kVolumeCols = {{"NAME", "name", false},
                                      {"SIZE", "sizeBytes", true},
                                      {"ALLOCATED", "allocatedBytes", true},
                                      {"DURABILITY", "durability", false},
                                      {"READ-ONLY", "readOnly", false},
                                      {"USERS", "users", false}};
const std::vector<Col> kPoolCols = {{"NAME", "name", false},
                                    {"BACKEND", "backend", false},
                                    {"SIZE", "sizeBytes", true},
                                    {"PROVISIONED", "provisionedBytes", true},
                                    {"ALLOCATED", "allocatedBytes", true},
                                    {"FREE", "freeBytes", true},
                                    {"VOLUMES", "volumes", false},
                                    {"READ-ONLY", "readOnly", false},
                                    {"PATH", "path", false}};

}  // namespace

std::string DurabilityText(v1::Durability d) {
  switch (d) {
    case v1::DURABILITY_FLUSH:
      return "flush";
    case v1::DURABILITY_SYNC:
      return "sync";
    case v1::DURABILITY_NONE:
      return "none";
    default:
      return "unspecified";
  }
}

std::string EventTypeText(v1::EventType t) {
  switch (t) {
    case v1::EVENT_TYPE_VOLUME_CREATED:
      return "volume-created";
    case v1::EVENT_TYPE_VOLUME_DELETED:
      return "volume-deleted";
    case v1::EVENT_TYPE_VOLUME_RESIZED:
      return "volume-resized";
    case v1::EVENT_TYPE_VOLUME_DURABILITY_CHANGED:
      return "volume-durability-changed";
    case v1::EVENT_TYPE_BACKEND_FALLBACK:
      return "backend-fallback";
    case v1::EVENT_TYPE_POOL_READ_ONLY:
      return "pool-read-only";
    case v1::EVENT_TYPE_INTENT_VIOLATION:
      return "intent-violation";
    case v1::EVENT_TYPE_EVENTS_LOST:
      return "events-lost";
    case v1::EVENT_TYPE_PRIMARY_CHANGED:
      return "primary-changed";
    case v1::EVENT_TYPE_REPLICA_STATE:
      return "replica-state";
    default:
      return "unspecified";
  }
}

Doc VolumeDoc(const v1::Volume& v) {
  Doc d = Header("Volume");
  const Doc fields = VolumeFields(v);  // a local: items() of a temporary would dangle
  for (auto it = fields.begin(); it != fields.end(); ++it) d[it.key()] = it.value();
  return d;
}

Doc VolumeListDoc(const std::vector<v1::Volume>& vs) {
  Doc d = Header("VolumeList");
  d["items"] = Doc::array();
  for (const v1::Volume& v : vs) d["items"].push_back(VolumeFields(v));
  return d;
}

Doc PoolDoc(const v1::Pool& p) {
  Doc d = Header("Pool");
  const Doc fields = PoolFields(p);  // a local: items() of a temporary would dangle
  for (auto it = fields.begin(); it != fields.end(); ++it) d[it.key()] = it.value();
  return d;
}

Doc PoolListDoc(const std::vector<v1::Pool>& ps) {
  Doc d = Header("PoolList");
  d["items"] = Doc::array();
  for (const v1::Pool& p : ps) d["items"].push_back(PoolFields(p));
  return d;
}

Doc NodeDoc(const v1::NodeInfo& n) {
  Doc d = Header("NodeInfo");
  d["hostname"] = n.hostname();
  d["version"] = n.version();
  d["pid"] = n.pid();
  d["uptimeSeconds"] = n.uptime_seconds();
  d["reactors"] = n.reactors();
  d["engine"] = n.engine();
  d["dataDir"] = n.data_dir();
  d["nbdEndpoints"] = Doc::array();
  for (const std::string& e : n.nbd_endpoints()) d["nbdEndpoints"].push_back(e);
  d["metricsEndpoint"] = n.metrics_endpoint();
  if (!n.node_name().empty()) {  // --cluster only: a lone node's document is unchanged
    d["nodeName"] = n.node_name();
    d["clusterState"] = n.cluster_state();
    if (!n.cluster_detail().empty()) d["clusterDetail"] = n.cluster_detail();
  }
  return d;
}

Doc ReplicaListDoc(const v1::ListReplicasResponse& r) {
  Doc d = Header("ReplicatedVolumeList");
  d["items"] = Doc::array();
  for (const v1::ReplicatedVolume& v : r.volumes()) d["items"].push_back(ReplicatedFields(v));
  return d;
}

Doc ClusterNodeListDoc(const v1::ListClusterNodesResponse& r) {
  Doc d = Header("ClusterNodeList");
  d["listed"] = r.listed();
  d["revision"] = r.revision();
  if (!r.watch_error().empty()) d["watchError"] = r.watch_error();
  d["items"] = Doc::array();
  for (const v1::ClusterNode& n : r.nodes()) {
    Doc x;
    x["name"] = n.name();
    x["hostname"] = n.hostname();
    x["pid"] = n.pid();
    x["version"] = n.version();
    x["nbdEndpoints"] = Doc::array();
    for (const std::string& e : n.nbd_endpoints()) x["nbdEndpoints"].push_back(e);
    x["leaseId"] = n.lease_id();
    x["self"] = n.self();
    d["items"].push_back(std::move(x));
  }
  return d;
}

Doc CalibrationDoc(const v1::CalibrateResponse& c) {
  Doc d = Header("Calibration");
  d["path"] = c.path();
  d["applied"] = c.applied();
  d["elapsedSeconds"] = c.elapsed_seconds();
  d["maxCapacityError"] = c.max_capacity_error();
  d["costModel"] = Doc::parse(c.cost_model_json(), nullptr, false);
  if (d["costModel"].is_discarded()) d["costModel"] = nullptr;
  d["points"] = Doc::array();
  for (const v1::CalibrationPoint& p : c.points()) {
    Doc x;
    x["op"] = p.op();
    x["bytes"] = p.bytes();
    x["qd1LatencySeconds"] = p.qd1_latency_seconds();
    x["queueDepth"] = p.queue_depth();
    x["saturatedIops"] = p.saturated_iops();
    x["saturated"] = p.saturated();
    x["modelIops"] = p.model_iops();
    d["points"].push_back(x);
  }
  return d;
}

Doc EventDoc(const v1::Event& e) {
  Doc d = Header("Event");
  d["seq"] = e.seq();
  d["timeUnixNs"] = e.time_unix_ns();
  d["type"] = EventTypeText(e.type());
  d["volume"] = e.volume();
  if (e.has_volume_info()) d["volumeInfo"] = VolumeFields(e.volume_info());
  d["message"] = e.message();
  return d;
}

std::string ToYaml(const Doc& doc) {
  YAML::Emitter e;
  EmitYaml(e, doc);
  return std::string(e.c_str()) + "\n";
}

std::string Render(const Doc& doc, Output out) {
  if (out == Output::kJson) return doc.dump(2) + "\n";
  if (out == Output::kYaml) return ToYaml(doc);
  const std::string kind = doc.value("kind", "");
  std::vector<const Doc*> rows;
  if (kind == "PoolList") {
    for (const Doc& x : doc["items"]) rows.push_back(&x);
    return Table(rows, kPoolCols);
  }
  if (kind == "VolumeList") {
    // A column more where a volume is replicated: its set in short ("-" for a local volume).
    std::vector<Doc> flat;
    bool any = false;
    for (const Doc& x : doc["items"]) {
      flat.push_back(x);
      any = any || x.contains("replication");
      if (x.contains("replication"))
        flat.back()["replicationText"] = ReplicationText(x["replication"]);
      else
        flat.back()["replicationText"] = "-";
    }
    for (const Doc& f : flat) rows.push_back(&f);
    if (!any) return Table(rows, kVolumeCols);
    std::vector<Col> cols = kVolumeCols;
    cols.push_back({"REPLICATION", "replicationText", false});
    return Table(rows, cols);
  }
  if (kind == "ReplicatedVolumeList") {
    std::vector<Doc> flat;
    for (const Doc& v : doc["items"])
      for (const Doc& c : v["copies"]) {
        Doc f;
        f["volume"] = v["name"];
        f["node"] = c["node"];
        const bool primary = c["node"] == v["primary"];
        f["role"] = primary ? "primary" : "replica";
        f["durability"] = v["durability"];
        // An asynchronous volume's lag, on its primary's row (what the replicas lack).
        f["lag"] = primary && v["durability"] == "async"
                       ? std::to_string(v["lagBytes"].get<uint64_t>()) + " B / " +
                             std::to_string(v["lagMs"].get<uint64_t>()) + " ms"
                       : "";
        f["state"] = c["state"];
        f["epoch"] = c["epoch"];
        f["acked"] = c["acked"];
        f["detail"] = c["detail"];
        flat.push_back(std::move(f));
      }
    std::vector<const Doc*> ptrs;
    for (const Doc& f : flat) ptrs.push_back(&f);
    return Table(ptrs, {{"VOLUME", "volume", false},
                        {"NODE", "node", false},
                        {"ROLE", "role", false},
                        {"DURABILITY", "durability", false},
                        {"STATE", "state", false},
                        {"EPOCH", "epoch", false},
                        {"ACKED", "acked", false},
                        {"LAG", "lag", false},
                        {"DETAIL", "detail", false}});
  }
  if (kind == "ClusterNodeList") {
    for (const Doc& x : doc["items"]) rows.push_back(&x);
    std::string t = Table(rows, {{"NAME", "name", false},
                                 {"HOST", "hostname", false},
                                 {"PID", "pid", false},
                                 {"VERSION", "version", false},
                                 {"SELF", "self", false},
                                 {"NBD", "nbdEndpoints", false}});
    if (!doc["listed"].get<bool>())
      t += "(not known yet: this node has not read the list from etcd)\n";
    else if (doc.contains("watchError"))
      t += "(may be behind: the watch on etcd broke: " + doc["watchError"].get<std::string>() +
           ")\n";
    return t;
  }
  if (kind == "Calibration") {
    std::string t = "OP       SIZE      QD1-LATENCY  QD  IOPS       SATURATED  MODEL-IOPS\n";
    char b[160];
    for (const Doc& x : doc["points"]) {
      std::snprintf(b, sizeof b, "%-8s %-9s %9.1f us  %-3u %-10.0f %-10s %.0f\n",
                    x["op"].get<std::string>().c_str(),
                    policy::FormatSize(x["bytes"].get<uint32_t>()).c_str(),
                    x["qd1LatencySeconds"].get<double>() * 1e6, x["queueDepth"].get<unsigned>(),
                    x["saturatedIops"].get<double>(), x["saturated"].get<bool>() ? "yes" : "no",
                    x["modelIops"].get<double>());
      t += b;
    }
    std::snprintf(b, sizeof b, "model within %.0f%% of the measured points, %.1f s; ",
                  doc["maxCapacityError"].get<double>() * 100, doc["elapsedSeconds"].get<double>());
    t += b;
    t += "stored in " + doc["path"].get<std::string>() +
         (doc["applied"].get<bool>() ? ", applied to the QoS scheduler\n"
                                     : " (spd2 runs --qos off: used when it runs with --qos on)\n");
    return t;
  }
  if (kind == "Volume") {
    std::string t = Table({&doc}, kVolumeCols);
    if (doc.contains("intentStatus")) {
      // One line under the table: how the volume's intent fares (QoS).
      const Doc& q = doc["intentStatus"];
      char b[256];
      std::snprintf(b, sizeof b, "INTENT: %s (p%g %.3g ms, %.0f IOPS, %.3g MB/s over %.1f s)",
                    q["state"].get<std::string>().c_str(), q["latencyPercentile"].get<double>(),
                    q["latencySeconds"].get<double>() * 1e3, q["iops"].get<double>(),
                    q["bytesPerSecond"].get<double>() / 1e6, q["windowSeconds"].get<double>());
      t += b;
      const std::string reason = q["reason"].get<std::string>();
      if (!reason.empty()) t += ": " + reason;
      t += "\n";
    }
    if (doc.contains("replication")) {
      // One line under the table: the replicated volume's set, as this node's mirror has it.
      const Doc& r = doc["replication"];
      t += "REPLICATION: " + ReplicationText(r, true);
      std::string copies;
      for (const Doc& c : r["copies"])
        copies += " " + c["node"].get<std::string>() + "=" + c["state"].get<std::string>();
      t += ";" + copies + "\n";
    }
    return t;
  }
  if (kind == "TenantList" || kind == "Tenant" || kind == "StorageClassList" ||
      kind == "StorageClass" || kind == "VolumePolicyList" || kind == "VolumePolicy") {
    // Tenants and classes alike: a name and an intent.
    const bool classes = kind.rfind("StorageClass", 0) == 0 || kind.rfind("Tenant", 0) == 0;
    std::vector<Doc> rows;
    if (kind.size() > 4 && kind.substr(kind.size() - 4) == "List") {
      for (const Doc& x : doc["items"]) rows.push_back(x);
    } else {
      rows.push_back(doc);
    }
    std::vector<Doc> flat;
    for (const Doc& x : rows) {
      Doc f;
      if (classes) {
        f["name"] = x["name"];
        f["intent"] = Compact(x["intent"]);
      } else {
        f["volume"] = x["volume"];
        f["tenant"] = x["tenant"].get<std::string>().empty() ? "-" : x["tenant"];
        f["storageClass"] = x["storageClass"].get<std::string>().empty() ? "-" : x["storageClass"];
        f["effective"] = Compact(x["effective"]);
      }
      flat.push_back(f);
    }
    std::vector<const Doc*> ptrs;
    for (const Doc& f : flat) ptrs.push_back(&f);
    if (classes) return Table(ptrs, {{"NAME", "name", false}, {"INTENT", "intent", false}});
    return Table(ptrs, {{"VOLUME", "volume", false},
                        {"TENANT", "tenant", false},
                        {"CLASS", "storageClass", false},
                        {"EFFECTIVE INTENT", "effective", false}});
  }
  if (kind == "NewToken") return doc["secret"].get<std::string>() + "\n";
  if (kind == "UidRoleList" || kind == "TokenList") {
    for (const Doc& x : doc["items"]) rows.push_back(&x);
    if (kind == "UidRoleList")
      return Table(rows,
                   {{"UID", "uid", false}, {"ROLE", "role", false}, {"TENANT", "tenant", false}});
    std::vector<Doc> flat;
    for (const Doc* x : rows) {
      Doc f = *x;
      const int64_t exp = (*x)["expiresUnix"].get<int64_t>();
      f["expires"] = exp == 0 ? std::string("never") : UtcTime(exp);
      flat.push_back(std::move(f));
    }
    rows.clear();
    for (const Doc& f : flat) rows.push_back(&f);
    return Table(rows, {{"ID", "id", false},
                        {"ROLE", "role", false},
                        {"TENANT", "tenant", false},
                        {"EXPIRES", "expires", false},
                        {"DESCRIPTION", "description", false}});
  }
  if (kind == "AuditHead")
    return std::to_string(doc["seq"].get<uint64_t>()) + ":" + doc["hash"].get<std::string>() + "\n";
  if (kind == "AuditVerification") {
    if (doc["ok"].get<bool>())
      return "audit log intact: " + std::to_string(doc["entries"].get<uint64_t>()) + " entries\n";
    return "audit log DAMAGED at entry " + std::to_string(doc["badEntry"].get<uint64_t>()) + ": " +
           doc["problem"].get<std::string>() + "\n";
  }
  if (kind == "Deleted") return "deleted " + doc["name"].get<std::string>() + "\n";
  if (kind == "Pool") return Table({&doc}, kPoolCols);
  if (kind == "Event") {
    std::string line =
        "#" + std::to_string(doc["seq"].get<uint64_t>()) + " " + doc["type"].get<std::string>();
    if (!doc["volume"].get<std::string>().empty()) line += " " + doc["volume"].get<std::string>();
    if (!doc["message"].get<std::string>().empty())
      line += ": " + doc["message"].get<std::string>();
    return line + "\n";
  }
  // Anything else (NodeInfo): key: value lines.
  std::ostringstream o;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "apiVersion" || it.key() == "kind") continue;
    o << it.key() << ": ";
    if (it.value().is_array()) {
      std::string sep;
      for (const auto& x : it.value()) {
        o << sep << Cell(x);
        sep = ", ";
      }
    } else {
      o << Cell(it.value());
    }
    o << '\n';
  }
  return o.str();
}

}  // namespace spd::ctl
