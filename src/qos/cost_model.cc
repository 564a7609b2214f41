#include "qos/cost_model.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace spd::qos {
namespace {

using json = nlohmann::json;

// A cost model file is a few hundred bytes; anything much larger is not one.
constexpr size_t kFileBytesMax = 64 << 10;

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

Status CheckRange(const char* field, double v, double lo, double hi, const char* unit) {
  if (std::isfinite(v) && v >= lo && v <= hi) return Status::Ok();
  return InvalidArgument(std::string("cost model: ") + field + " = " + Num(v) + " is outside [" +
                         Num(lo) + ", " + Num(hi) + "] " + unit);
}

Status BadFile(std::string_view what) {
  return DataLoss(std::string("not a valid cost model file: ") + std::string(what));
}

// The number at j[key]; `name` is the field's full name for messages ("read.base_ns").
Result<double> NumberField(const json& j, const char* key, const std::string& name) {
  auto it = j.find(key);
  if (it == j.end()) return BadFile("missing field '" + name + "'");
  if (!it->is_number()) return BadFile("field '" + name + "' is not a number");
  return it->get<double>();
}

Status OnlyKnownKeys(const json& j, std::initializer_list<const char*> keys,
                     const std::string& where) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : keys) known = known || it.key() == k;
    if (!known) return BadFile("unknown field '" + where + it.key() + "'");
  }
  return Status::Ok();
}

Result<OpCost> OpField(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return BadFile(std::string("missing field '") + key + "'");
  if (!it->is_object()) return BadFile(std::string("field '") + key + "' is not an object");
  const std::string prefix = std::string(key) + ".";
  SPD_RETURN_IF_ERROR(OnlyKnownKeys(*it, {"base_ns", "ns_per_byte"}, prefix));
  OpCost c;
  SPD_ASSIGN_OR_RETURN(c.base_ns, NumberField(*it, "base_ns", prefix + "base_ns"));
  SPD_ASSIGN_OR_RETURN(c.ns_per_byte, NumberField(*it, "ns_per_byte", prefix + "ns_per_byte"));
  return c;
}

}  // namespace

double CostModel::CostNs(IoOp op, uint32_t bytes) const {
  switch (op) {
    case IoOp::kRead:
      return read.base_ns + bytes * read.ns_per_byte;
    case IoOp::kWrite:
      return write.base_ns + bytes * write.ns_per_byte;
    case IoOp::kFlush:
      return flush_ns;
    case IoOp::kDiscard:
    case IoOp::kWriteZeroes:
      return discard_ns;
  }
  return discard_ns;
}

uint64_t CostModel::Cost(IoOp op, uint32_t bytes) const {
  const double c = CostNs(op, bytes);
  if (!(c >= 1)) return 1;  // also NaN: an unvalidated model never charges 0
  return static_cast<uint64_t>(std::llround(c));
}

Status CostModel::Validate() const {
  SPD_RETURN_IF_ERROR(CheckRange("read.base_ns", read.base_ns, kNsMin, kNsMax, "ns"));
  SPD_RETURN_IF_ERROR(
      CheckRange("read.ns_per_byte", read.ns_per_byte, kNsPerByteMin, kNsPerByteMax, "ns/byte"));
  SPD_RETURN_IF_ERROR(CheckRange("write.base_ns", write.base_ns, kNsMin, kNsMax, "ns"));
  SPD_RETURN_IF_ERROR(
      CheckRange("write.ns_per_byte", write.ns_per_byte, kNsPerByteMin, kNsPerByteMax, "ns/byte"));
  SPD_RETURN_IF_ERROR(CheckRange("flush_ns", flush_ns, kNsMin, kNsMax, "ns"));
  SPD_RETURN_IF_ERROR(CheckRange("discard_ns", discard_ns, kNsMin, kNsMax, "ns"));
  SPD_RETURN_IF_ERROR(CheckRange("parallelism", parallelism, 1, kParallelismMax, ""));
  if (depth != 0) SPD_RETURN_IF_ERROR(CheckRange("depth", depth, 1, kParallelismMax, ""));
  return Status::Ok();
}

std::string CostModel::ToJson() const {
  // Ordered keys so that a stored file reads top-down like the header's example.
  nlohmann::ordered_json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["source"] = source;
  j["parallelism"] = parallelism;
  if (depth > 0) j["depth"] = depth;
  j["read"] = {{"base_ns", read.base_ns}, {"ns_per_byte", read.ns_per_byte}};
  j["write"] = {{"base_ns", write.base_ns}, {"ns_per_byte", write.ns_per_byte}};
  j["flush_ns"] = flush_ns;
  j["discard_ns"] = discard_ns;
  return j.dump(2) + "\n";
}

Result<CostModel> CostModel::FromJson(std::string_view text) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return BadFile("not JSON");
  if (!j.is_object()) return BadFile("not a JSON object");
  auto format = j.find("format");
  if (format == j.end() || !format->is_string())
    return BadFile(std::string("no \"format\": \"") + kFormat + "\" (a foreign file?)");
  if (format->get<std::string>() != kFormat)
    return BadFile("format is '" + format->get<std::string>() + "', expected '" + kFormat + "'");
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer())
    return BadFile("missing or non-integer field 'version'");
  if (version->get<int64_t>() != kVersion)
    return BadFile("version " + std::to_string(version->get<int64_t>()) +
                   " is not supported (this build reads version " + std::to_string(kVersion) + ")");
  SPD_RETURN_IF_ERROR(OnlyKnownKeys(j,
                                    {"format", "version", "source", "parallelism", "depth", "read",
                                     "write", "flush_ns", "discard_ns"},
                                    ""));
  CostModel m;
  if (auto s = j.find("source"); s != j.end()) {
    if (!s->is_string()) return BadFile("field 'source' is not a string");
    m.source = s->get<std::string>();
  }
  SPD_ASSIGN_OR_RETURN(m.parallelism, NumberField(j, "parallelism", "parallelism"));
  if (j.contains("depth")) {  // optional: files written before it was measured lack it
    SPD_ASSIGN_OR_RETURN(m.depth, NumberField(j, "depth", "depth"));
  }
  SPD_ASSIGN_OR_RETURN(m.read, OpField(j, "read"));
  SPD_ASSIGN_OR_RETURN(m.write, OpField(j, "write"));
  SPD_ASSIGN_OR_RETURN(m.flush_ns, NumberField(j, "flush_ns", "flush_ns"));
  SPD_ASSIGN_OR_RETURN(m.discard_ns, NumberField(j, "discard_ns", "discard_ns"));
  SPD_RETURN_IF_ERROR(m.Validate());
  return m;
}

Status CostModel::Save(const std::string& path) const {
  SPD_RETURN_IF_ERROR(Validate().WithContext("save " + path));
  return WriteFileAtomic(path, ToJson());
}

Result<CostModel> CostModel::Load(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open cost model " + path);
  std::string text;
  char buf[4096];
  Status s;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      s = Status::FromErrno(errno, "read " + path);
      break;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kFileBytesMax) {
      s = BadFile("larger than " + std::to_string(kFileBytesMax) + " bytes");
      break;
    }
  }
  close(fd);
  if (s.ok()) {
    auto m = FromJson(text);
    if (m.ok()) return m;
    s = m.status();
  }
  return s.WithContext(path);
}

CostModel CostModel::Default() {
  // Saturated service time per I/O at parallelism 1: reads 12 µs + 2 ns/byte (4 KiB: 20.2 µs,
  // ~50k IOPS; 500 MB/s), writes 24 µs + 2.5 ns/byte (4 KiB: 34.2 µs, ~29k IOPS; 400 MB/s).
  // Parallelism 5 scales them to device-ns: a 4 KiB read costs ~101 µs, its QD1 latency.
  CostModel m;
  m.parallelism = 5;
  m.read = {60000, 10};
  m.write = {120000, 12.5};
  m.flush_ns = 1e6;
  m.discard_ns = 5e5;
  m.source = "default";
  return m;
}

CostModel ForSim(const SimOptions& o) {
  // The sim's own arithmetic (SimBackend::ServiceDelayNs), medians for the jitter.
  const double jitter = static_cast<double>(o.latency_jitter_ns) / 2;
  const double lat = static_cast<double>(o.latency_base_ns) + jitter;
  const double lat_read = lat + static_cast<double>(o.read_extra_ns);
  const double lat_write = lat + static_cast<double>(o.write_extra_ns);
  const double lat_flush = lat + static_cast<double>(o.flush_extra_ns);
  const double lat_discard = lat;
  CostModel m;
  m.source = "sim";
  if (o.iops_max == 0 && o.bandwidth_bytes_per_s == 0) {
    m.parallelism = CostModel::kParallelismMax;
    m.read = {std::max(CostModel::kNsMin, lat_read), CostModel::kNsPerByteMin};
    m.write = {std::max(CostModel::kNsMin, lat_write), CostModel::kNsPerByteMin};
    m.flush_ns = std::max(CostModel::kNsMin, lat_flush);
    m.discard_ns = std::max(CostModel::kNsMin, lat_discard);
    return m;
  }
  const double per_op = o.iops_max ? static_cast<double>(1000000000ull / o.iops_max) : 0;
  const double per_byte =
      o.bandwidth_bytes_per_s ? 1e9 / static_cast<double>(o.bandwidth_bytes_per_s) : 0;
  const double s_ref = per_op + CostModel::kReferenceBytes * per_byte;
  // With `units` (SimOptions::units) an operation alone holds a unit for `units` times its share.
  const double units = std::max<uint32_t>(1, o.units);
  m.parallelism =
      std::clamp(std::max(lat_read, units * s_ref) / s_ref, 1.0, CostModel::kParallelismMax);
  const double base = std::max(CostModel::kNsMin, m.parallelism * per_op);
  const double npb = std::max(CostModel::kNsPerByteMin, m.parallelism * per_byte);
  m.read = {base, npb};
  m.write = {base, npb};
  m.flush_ns = std::max({CostModel::kNsMin, lat_flush, units * per_op});
  m.discard_ns = std::max({CostModel::kNsMin, lat_discard, units * per_op});
  return m;
}

std::string CostModelPath(std::string_view data_dir, std::string_view pool) {
  std::string p(data_dir);
  if (!p.empty() && p.back() != '/') p += '/';
  p += pool;
  p += ".cost.json";
  return p;
}

}  // namespace spd::qos
