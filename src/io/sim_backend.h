// SimBackend: an in-memory device for dev mode and tests.
//
// - Sparse: 4 KiB pages, allocated on first write; unwritten ranges read as zeros.
// - A volatile write cache: writes are visible at once but durable only after a flush (or FUA).
//   The writes since the last flush are kept in order, so a crash state can be made from the
//   durable image plus any subset of them, with torn writes (some 512-byte sectors landed).
//   This is the disk that FoundationDB's simulator drops unflushed writes on.
// - Models from SimOptions: latency (base + jitter + per-op), capacity (IOPS, bandwidth) and
//   errors (EIO on ranges or with a probability). Every random choice comes from the seed.
//
// Pages are shared between images copy-on-write, so taking a crash image costs the size of the
// page table plus the unflushed writes, not the size of the device.
//
// Thread-safety: owning reactor's thread only (like every backend).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include "io/io_backend.h"

namespace spd {

struct CrashOptions {
  double keep_probability = 0.5;  // each unflushed write lands with this probability
  double torn_probability = 0.2;  // a landing write is torn (random subset of its sectors)
};

class SimBackend final : public IoBackend {
 public:
  static constexpr uint32_t kPageBytes = 4096;
  static constexpr uint32_t kSectorBytes = 512;
  // Unflushed bytes kept before the cache destages its oldest writes on its own.
  static constexpr uint64_t kCacheBytesMax = 64ull << 20;

  using Page = std::array<uint8_t, kPageBytes>;
  using PageMap = std::unordered_map<uint64_t, std::shared_ptr<const Page>>;

  // A device image: what a new SimBackend starts from.
  struct Image {
    uint64_t size_bytes = 0;
    PageMap pages;
  };

  SimBackend(Reactor* reactor, uint64_t size_bytes, const SimOptions& options);
  SimBackend(Reactor* reactor, Image image, const SimOptions& options);
  ~SimBackend() override;

  const char* name() const override { return "sim"; }
  uint64_t size_bytes() const override { return size_bytes_; }
  uint32_t alignment_bytes() const override {
    return options_.alignment_bytes ? options_.alignment_bytes : 1;
  }
  bool discard_zeroes() const override { return true; }
  void Submit(BackendIo* io) override;
  Status ReadSync(uint64_t offset_bytes, void* buf, size_t length_bytes) override;
  Status WriteSync(uint64_t offset_bytes, const void* buf, size_t length_bytes) override;
  Status FlushSync() override;
  Status DiscardSync(uint64_t offset_bytes, uint64_t length_bytes) override;
  BackendStats stats() const override { return stats_; }
  // The simulated device is not thread-safe: a channel is offered on the sim's own reactor only
  // (a second way into the same device, for tests and the crash harness of the remote path).
  Result<std::unique_ptr<IoBackend>> OpenChannel(Reactor* reactor) override;

  // The state after a power cut now: the durable image plus a seeded random subset of the
  // unflushed writes, some of them torn.
  Image CrashImage(uint64_t seed, const CrashOptions& options) const;
  // Everything written so far, flushed or not (a clean shutdown's image).
  Image VisibleImage() const;

  // Runs after every completed flush (and FUA write), before the caller's completion: the crash
  // harness takes crash images here, at every flush boundary.
  void SetFlushHook(std::function<void()> hook) { flush_hook_ = std::move(hook); }

  // Fault: while on, every device flush (Submit and FlushSync) fails with EIO, and the cached
  // writes it covered are forgotten: they stay visible but never become durable, as Linux marks
  // pages clean after failed writeback (PostgreSQL's "fsyncgate"). A later flush that succeeds
  // therefore does not make them durable.
  void set_fail_flushes(bool on) { fail_flushes_ = on; }
  // Fault: the next `n` operations other than flushes (discards and write-zeroes too, which
  // SimOptions' error models leave alone) fail with EIO.
  void FailNext(uint32_t n) { fail_next_ = n; }

  // The sim's clock: the simulated one under SimOptions::virtual_time, else MonotonicNs().
  uint64_t now_ns() const { return NowNs(); }

  uint64_t bytes_written() const { return bytes_written_; }
  uint64_t data_ops() const { return data_ops_; }
  uint64_t flushes() const { return flushes_; }
  size_t unflushed_writes() const { return pending_.size(); }

 private:
  struct Pending {
    uint64_t offset;
    uint32_t length;
    bool zero;
    std::vector<uint8_t> data;  // empty when zero
    uint64_t seq;               // completion order (pending_seq_)
  };
  struct Scheduled {
    uint64_t deadline_ns;
    uint64_t seq;
    BackendIo* io;
    bool operator>(const Scheduled& o) const {
      return deadline_ns != o.deadline_ns ? deadline_ns > o.deadline_ns : seq > o.seq;
    }
  };
  struct DueTimer : Timer {
    SimBackend* self;
  };
  struct ImmediateTask : Task {
    SimBackend* self;
  };

  static void Apply(PageMap* pages, uint64_t offset, const uint8_t* data, uint64_t length);
  static void ApplyZero(PageMap* pages, uint64_t offset, uint64_t length);
  static void ReadFrom(const PageMap& pages, uint64_t offset, uint8_t* out, uint64_t length);
  void Execute(BackendIo* io);
  void WriteVisible(uint64_t offset, const uint8_t* data, uint64_t length, bool zero, bool fua);
  void FlushCache();
  // Makes durable the oldest `n` cached writes (device write-back).
  void WriteBack(size_t n);
  uint64_t pending_seq_ = 0;  // writes cached so far; a flush covers those cached before it
  void Destage();
  bool InjectError(const BackendIo& io);
  uint64_t ServiceDelayNs(const BackendIo& io);
  void Finish(BackendIo* io);
  static void OnDue(Timer* t);
  static void OnImmediate(Task* t);
  void ArmDueTimer();

  Reactor* reactor_;
  uint64_t size_bytes_;
  SimOptions options_;
  std::mt19937_64 rng_;
  PageMap visible_;
  PageMap durable_;
  std::vector<Pending> pending_;
  uint64_t pending_bytes_ = 0;
  std::function<void()> flush_hook_;

  std::vector<Scheduled> due_;  // min-heap on deadline
  uint64_t due_seq_ = 0;
  DueTimer due_timer_;
  bool due_timer_armed_ = false;
  std::vector<BackendIo*> immediate_;
  ImmediateTask immediate_task_;
  bool immediate_scheduled_ = false;
  // SimOptions::virtual_time: the simulated clock, and the posted task that completes the
  // earliest operation (one per tick).
  uint64_t vclock_ns_ = 0;
  ImmediateTask virtual_task_;
  bool virtual_posted_ = false;
  uint64_t NowNs() const;
  static void OnVirtual(Task* t);
  std::vector<uint64_t> unit_free_ns_;  // when each unit of the modelled device is next idle

  BackendStats stats_;
  bool fail_flushes_ = false;
  uint32_t fail_next_ = 0;  // FailNext
  uint64_t data_ops_ = 0;   // reads and writes seen by the probabilistic error model
  // set_fail_flushes: the first `n` cached writes are dropped, never made durable.
  void ForgetCached(size_t n);
  uint64_t bytes_written_ = 0;
  uint64_t flushes_ = 0;
};

}  // namespace spd
