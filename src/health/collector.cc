#include "health/collector.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>

#include "common/counters.h"
#include "common/os_util.h"

namespace spd::health {
namespace {

// Process-wide (one collector runs in spd2; tests that make several add up).
Gauge sensors_gauge("spd_health_sensors", "Sensors the health collector publishes in its cache.");
Counter reads_total("spd_health_reads_total",
                    "Hardware reads by the health collector: sysfs preads and NVMe log pages.");
Counter read_errors_total("spd_health_read_errors_total",
                          "Health reads that failed (the sensor is marked failed).");
Counter polls_total("spd_health_polls_total", "Poll rounds of the health collector.");
Counter wakeups_total("spd_health_wakeups_total", "Times the health collector's thread woke up.");

}  // namespace

struct Collector::Channel {
  uint32_t index = 0;
  int input_fd = -1;
  int threshold_fds[kSlotCount] = {-1, -1, -1, -1};
  SensorSample sample;
};

struct Collector::Source {
  std::string name;
  uint64_t period_ns = 0;
  uint64_t next_due_ns = 0;
  std::vector<Channel> channels;
  std::unique_ptr<NvmeHealthSource> nvme;  // channels follow kNvmeMetrics when set

  ~Source() {
    for (Channel& c : channels) {
      if (c.input_fd >= 0) close(c.input_fd);
      for (int fd : c.threshold_fds) {
        if (fd >= 0) close(fd);
      }
    }
  }
};

namespace {

struct NvmeMetric {
  const char* name;
  const char* channel;
  SensorKind kind;
  SensorUnit unit;
};
constexpr NvmeMetric kNvmeMetrics[] = {
    {"temp", "temp", SensorKind::kNvmeTemp, SensorUnit::kMilliCelsius},
    {"available_spare", "spare", SensorKind::kNvmeAvailableSpare, SensorUnit::kPercent},
    {"percent_used", "used", SensorKind::kNvmePercentUsed, SensorUnit::kPercent},
    {"critical_warning", "warning", SensorKind::kNvmeCriticalWarning, SensorUnit::kBitmask},
    {"media_errors", "media_errors", SensorKind::kNvmeMediaErrors, SensorUnit::kCount},
    {"unsafe_shutdowns", "unsafe_shutdown", SensorKind::kNvmeUnsafeShutdowns, SensorUnit::kCount},
    {"power_on_hours", "power_on_hours", SensorKind::kNvmePowerOnHours, SensorUnit::kHours},
};
constexpr size_t kNvmeMetricCount = sizeof(kNvmeMetrics) / sizeof(kNvmeMetrics[0]);

constexpr uint32_t kSlotBit[kSlotCount] = {kHasMin, kHasMax, kHasCrit, kHasLcrit};

void SetThreshold(SensorSample* s, int slot, int64_t v) {
  int64_t* field[kSlotCount] = {&s->min, &s->max, &s->crit, &s->lcrit};
  *field[slot] = v;
  s->threshold_mask |= kSlotBit[slot];
}

void MarkGood(SensorSample* s, int64_t value, uint64_t now_ns, uint64_t realtime_ns) {
  s->value = value;
  s->last_errno = 0;
  s->updated_monotonic_ns = now_ns;
  s->updated_realtime_ns = realtime_ns;
  ++s->update_count;
}

}  // namespace

SensorStatus EvaluateThresholds(const SensorSample& s) {
  const uint32_t m = s.threshold_mask;
  if (((m & kHasCrit) && s.value >= s.crit) || ((m & kHasLcrit) && s.value < s.lcrit)) {
    return SensorStatus::kCritical;
  }
  if (((m & kHasMax) && s.value >= s.max) || ((m & kHasMin) && s.value < s.min)) {
    return SensorStatus::kWarning;
  }
  return SensorStatus::kOk;
}

void ApplyAge(SensorSample* s, uint64_t now_ns, uint64_t period_ns) {
  if (s->status == static_cast<uint32_t>(SensorStatus::kFailed)) return;
  const bool never = s->updated_monotonic_ns == 0;
  if (never || now_ns - s->updated_monotonic_ns > kStalePeriods * period_ns) {
    s->status = static_cast<uint32_t>(SensorStatus::kStale);
  }
}

Result<std::unique_ptr<Collector>> Collector::Create(
    const CollectorOptions& options, std::vector<std::unique_ptr<NvmeHealthSource>> nvme) {
  if (options.period_ns == 0) return InvalidArgument("health period must be positive");
  for (const auto& [prefix, period] : options.periods) {
    if (period == 0) return InvalidArgument("health period of " + prefix + " must be positive");
  }
  SPD_ASSIGN_OR_RETURN(std::vector<SourceSpec> specs, DiscoverSysfs(options.sysfs_root));
  std::unique_ptr<Collector> c(new Collector());
  c->options_ = options;
  SPD_ASSIGN_OR_RETURN(c->cache_, HealthCacheWriter::Create(options.cache));
  uint32_t source_index = 0;
  for (const SourceSpec& spec : specs) {
    SPD_RETURN_IF_ERROR(c->AddSysfsSource(spec, source_index++));
  }
  for (auto& n : nvme) SPD_RETURN_IF_ERROR(c->AddNvmeSource(std::move(n), source_index++));
  sensors_gauge.Set(c->cache_->sensor_count());
  return c;
}

Collector::~Collector() { Stop(); }

uint64_t Collector::PeriodFor(const std::string& name) const {
  for (const auto& [prefix, period] : options_.periods) {
    if (name.rfind(prefix, 0) == 0) return period;
  }
  return options_.period_ns;
}

Status Collector::AddSysfsSource(const SourceSpec& spec, uint32_t source_index) {
  auto s = std::make_unique<Source>();
  s->name = spec.name;
  s->period_ns = PeriodFor(spec.name);
  for (const ChannelSpec& cs : spec.channels) {
    const int fd = open(cs.input_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      ++skipped_;
      continue;
    }
    Channel ch;
    ch.input_fd = fd;
    for (int i = 0; i < kSlotCount; ++i) {
      if (!cs.threshold_paths[i].empty()) {
        ch.threshold_fds[i] = open(cs.threshold_paths[i].c_str(), O_RDONLY | O_CLOEXEC);
      }
    }
    s->channels.push_back(ch);  // owned by the source from here on (closes the fds)
    SensorIdentity id{cs.name, cs.pci_location, cs.channel,   cs.label,
                      cs.kind, cs.unit,         s->period_ns, source_index};
    SPD_ASSIGN_OR_RETURN(s->channels.back().index, cache_->AddSensor(id));
  }
  if (!s->channels.empty()) sources_.push_back(std::move(s));
  return Status::Ok();
}

Status Collector::AddNvmeSource(std::unique_ptr<NvmeHealthSource> nvme, uint32_t source_index) {
  auto s = std::make_unique<Source>();
  s->name = "nvme/" + SanitizeItem(nvme->serial());
  s->period_ns = PeriodFor(s->name);
  for (const NvmeMetric& m : kNvmeMetrics) {
    SensorIdentity id{s->name + "/" + m.name, nvme->pci_location(), m.channel, "", m.kind, m.unit,
                      s->period_ns,           source_index};
    Channel ch;
    SPD_ASSIGN_OR_RETURN(ch.index, cache_->AddSensor(id));
    s->channels.push_back(ch);
  }
  s->nvme = std::move(nvme);
  sources_.push_back(std::move(s));
  return Status::Ok();
}

// 0 and *value, or an errno: the read's, ENODATA for an empty file, EINVAL for text that is
// not one integer.
int Collector::ReadInt(int fd, int64_t* value) {
  char buf[32];
  preads_.fetch_add(1, std::memory_order_relaxed);
  reads_total.Add();
  const ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  if (n < 0) return errno;
  if (n == 0) return ENODATA;
  buf[n] = '\0';
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(buf, &end, 10);
  if (end == buf || errno != 0) return EINVAL;
  while (*end == '\n' || *end == ' ') ++end;
  if (*end != '\0') return EINVAL;
  *value = v;
  return 0;
}

void Collector::PollSysfsChannel(Channel& c, uint64_t now_ns, uint64_t realtime_ns) {
  SensorSample& s = c.sample;
  int64_t v = 0;
  const int err = ReadInt(c.input_fd, &v);
  if (err != 0) {
    read_errors_total.Add();
    s.status = static_cast<uint32_t>(SensorStatus::kFailed);
    s.last_errno = err;
    return;
  }
  MarkGood(&s, v, now_ns, realtime_ns);
  // Thresholds are re-read with the value: a driver or an administrator may change them.
  s.threshold_mask = 0;
  for (int i = 0; i < kSlotCount; ++i) {
    int64_t t = 0;
    if (c.threshold_fds[i] >= 0 && ReadInt(c.threshold_fds[i], &t) == 0) SetThreshold(&s, i, t);
  }
  s.status = static_cast<uint32_t>(EvaluateThresholds(s));
}

void Collector::PollNvme(Source& src, uint64_t now_ns, uint64_t realtime_ns) {
  NvmeLogPage page{};
  reads_total.Add();
  const Status st = src.nvme->ReadSmartLog(&page);
  if (!st.ok()) {
    if (st.code() != StatusCode::kUnavailable) read_errors_total.Add();
    for (Channel& c : src.channels) {
      if (st.code() == StatusCode::kUnavailable) {
        ApplyAge(&c.sample, now_ns, src.period_ns);
      } else {
        c.sample.status = static_cast<uint32_t>(SensorStatus::kFailed);
        c.sample.last_errno = st.sys_errno();
      }
    }
    return;
  }
  const NvmeSmartLog log = ParseSmartLog(page);
  const int64_t values[kNvmeMetricCount] = {
      int64_t{log.composite_temp_k} * 1000 - 273150,
      log.available_spare,
      log.percent_used,
      log.critical_warning,
      int64_t(log.media_errors),
      int64_t(log.unsafe_shutdowns),
      int64_t(log.power_on_hours),
  };
  for (size_t i = 0; i < kNvmeMetricCount; ++i) {
    SensorSample& s = src.channels[i].sample;
    MarkGood(&s, values[i], now_ns, realtime_ns);
    s.threshold_mask = 0;
    if (kNvmeMetrics[i].kind == SensorKind::kNvmeAvailableSpare) {
      SetThreshold(&s, kSlotLcrit, log.spare_threshold);
    } else if (kNvmeMetrics[i].kind == SensorKind::kNvmePercentUsed) {
      SetThreshold(&s, kSlotMax, 100);
    } else if (kNvmeMetrics[i].kind == SensorKind::kNvmeCriticalWarning) {
      SetThreshold(&s, kSlotCrit, 1);
    }
    s.status = static_cast<uint32_t>(EvaluateThresholds(s));
    // The drive's own verdict on its temperature (its thresholds are features, not SMART).
    if (kNvmeMetrics[i].kind == SensorKind::kNvmeTemp &&
        (log.critical_warning & kNvmeWarnTemperature)) {
      s.status = static_cast<uint32_t>(SensorStatus::kWarning);
    }
  }
}

void Collector::PollSource(Source& s, uint64_t now_ns, uint64_t realtime_ns) {
  if (s.nvme) {
    PollNvme(s, now_ns, realtime_ns);
  } else {
    for (Channel& c : s.channels) PollSysfsChannel(c, now_ns, realtime_ns);
  }
  for (const Channel& c : s.channels) cache_->Write(c.index, c.sample);
  // Fixed cadence; a source that fell behind (a slow drive) starts again from now.
  s.next_due_ns += s.period_ns;
  if (s.next_due_ns <= now_ns) s.next_due_ns = now_ns + s.period_ns;
}

void Collector::PollDue(uint64_t now_ns) {
  bool any = false;
  const uint64_t realtime_ns = ClockNs(CLOCK_REALTIME);
  for (auto& s : sources_) {
    if (s->next_due_ns > now_ns) continue;
    if (!any) cache_->BeginRound();
    any = true;
    PollSource(*s, now_ns, realtime_ns);
  }
  if (!any) return;
  cache_->EndRound(now_ns, realtime_ns);
  rounds_.fetch_add(1, std::memory_order_relaxed);
  polls_total.Add();
}

void Collector::PollAll(uint64_t now_ns) {
  for (auto& s : sources_) s->next_due_ns = 0;
  PollDue(now_ns);
}

uint64_t Collector::NextDueNs() const {
  uint64_t next = UINT64_MAX;
  for (const auto& s : sources_) next = std::min(next, s->next_due_ns);
  return next;
}

Status Collector::Start() {
  if (thread_.joinable()) return FailedPrecondition("health collector already running");
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  thread_ = std::thread([this] {
    NameThisThread("spd-health");
    Run();
  });
  return Status::Ok();
}

void Collector::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Collector::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    wakeups_total.Add();
    PollDue(ClockNs(CLOCK_MONOTONIC));
    const uint64_t next = NextDueNs();
    lock.lock();
    if (next == UINT64_MAX) {
      cv_.wait(lock, [this] { return stop_; });
    } else {
      // steady_clock is CLOCK_MONOTONIC, the clock of next_due_ns.
      const std::chrono::steady_clock::time_point due{std::chrono::nanoseconds(next)};
      cv_.wait_until(lock, due, [this] { return stop_; });
    }
  }
}

}  // namespace spd::health
