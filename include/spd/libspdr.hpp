// C++ wrapper of libspdr.h: owning handles (move-only, closed by their destructors) and
// std::vector snapshots. No exceptions: fallible calls return an spdr error code (0 = ok) the
// way the C calls do. Thread-safety is the C API's: any call from any thread, except that an
// object must outlive nothing it owns and a Cache must outlive its Sensors and Watches.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "spd/libspdr.h"

namespace spdr {

template <typename T, void (*Close)(T*)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(T* p) : p_(p) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  void reset() {
    if (p_ != nullptr) Close(p_);
    p_ = nullptr;
  }
  T* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  T* p_ = nullptr;
};

class Sensor {
 public:
  Sensor() = default;
  explicit Sensor(spdr_sensor* s) : h_(s) {}
  explicit operator bool() const { return bool(h_); }
  spdr_sensor* get() const { return h_.get(); }
  // The last value spd2 wrote; no system call.
  int ReadCached(spdr_reading* out, unsigned flags = SPDR_READ_NO_BLOCK) const {
    return spdr_sensor_read_cached(h_.get(), out, flags);
  }
  int Status(int* status, uint64_t* age_ns = nullptr) const {
    return spdr_sensor_status(h_.get(), status, age_ns);
  }
  spdr_sensor_info Info() const {
    spdr_sensor_info i{};
    (void)spdr_sensor_info_get(h_.get(), &i);
    return i;
  }

 private:
  Handle<spdr_sensor, spdr_sensor_close> h_;
};

class Watch {
 public:
  Watch() = default;
  explicit Watch(spdr_watch* w) : h_(w) {}
  explicit operator bool() const { return bool(h_); }
  int fd() const { return spdr_watch_fd(h_.get()); }
  int Next(spdr_event* out) { return spdr_watch_next(h_.get(), out); }

 private:
  Handle<spdr_watch, spdr_watch_stop> h_;
};

class Cache {
 public:
  Cache() = default;
  // shm_name nullptr: SPDR_DEFAULT_SHM_NAME. *error (may be null) gets the C call's code.
  static Cache Open(const char* shm_name = nullptr, int* error = nullptr) {
    spdr_cache* c = nullptr;
    const int rc = spdr_cache_open(shm_name, &c);
    if (error != nullptr) *error = rc;
    return Cache(rc == SPDR_OK ? c : nullptr);
  }
  static Cache OpenPath(const char* path, int* error = nullptr) {
    spdr_cache* c = nullptr;
    const int rc = spdr_cache_open_path(path, &c);
    if (error != nullptr) *error = rc;
    return Cache(rc == SPDR_OK ? c : nullptr);
  }
  explicit operator bool() const { return bool(h_); }
  spdr_cache* get() const { return h_.get(); }

  uint32_t size() const { return spdr_sensor_count(h_.get()); }
  std::vector<spdr_sensor_info> List() const {
    std::vector<spdr_sensor_info> out(size());
    for (uint32_t i = 0; i < out.size(); ++i) (void)spdr_sensor_info_at(h_.get(), i, &out[i]);
    return out;
  }
  Sensor OpenSensor(const char* name, int* error = nullptr) const {
    spdr_sensor* s = nullptr;
    const int rc = spdr_sensor_open(h_.get(), name, &s);
    if (error != nullptr) *error = rc;
    return Sensor(rc == SPDR_OK ? s : nullptr);
  }
  // Every sensor as of one poll round; grows the vector when sensors were added meanwhile.
  int Snapshot(std::vector<spdr_reading>* out, uint64_t* generation = nullptr) const {
    for (;;) {
      uint32_t count = 0;
      out->resize(size());
      const int rc =
          spdr_snapshot(h_.get(), out->data(), uint32_t(out->size()), &count, generation);
      if (rc == SPDR_ERANGE) continue;
      if (rc == SPDR_OK) out->resize(count);
      return rc;
    }
  }
  Watch StartWatch(const spdr_watch_options& options, int* error = nullptr) const {
    spdr_watch* w = nullptr;
    const int rc = spdr_watch_start(h_.get(), &options, &w);
    if (error != nullptr) *error = rc;
    return Watch(rc == SPDR_OK ? w : nullptr);
  }

 private:
  explicit Cache(spdr_cache* c) : h_(c) {}
  Handle<spdr_cache, spdr_cache_close> h_;
};

}  // namespace spdr
