#include "common/counters.h"

#include <mutex>

namespace spd {
namespace {
std::mutex& RegistryMu() {
  static std::mutex mu;
  return mu;
}
std::vector<Counter*>& Registry() {
  static std::vector<Counter*> r;
  return r;
}
}  // namespace

Counter::Counter(const char* name, const char* help) : name_(name), help_(help) {
  std::lock_guard<std::mutex> lock(RegistryMu());
  Registry().push_back(this);
}

std::vector<std::pair<std::string, uint64_t>> SnapshotCounters() {
  std::lock_guard<std::mutex> lock(RegistryMu());
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(Registry().size());
  for (const Counter* c : Registry()) out.emplace_back(c->name(), c->value());
  return out;
}

uint64_t CounterValue(const std::string& name) {
  std::lock_guard<std::mutex> lock(RegistryMu());
  uint64_t v = 0;
  for (const Counter* c : Registry())
    if (name == c->name()) v += c->value();
  return v;
}

std::string RenderCountersPrometheus() {
  std::lock_guard<std::mutex> lock(RegistryMu());
  std::string out;
  for (const Counter* c : Registry()) {
    out += "# HELP ";
    out += c->name();
    out += ' ';
    out += c->help();
    out += "\n# TYPE ";
    out += c->name();
    out += " counter\n";
    out += c->name();
    out += ' ';
    out += std::to_string(c->value());
    out += '\n';
  }
  return out;
}

}  // namespace spd
