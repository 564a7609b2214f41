#include "testing/crash_harness.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "io/sim_backend.h"
#include "testing/crash_oracle.h"
#include "testing/volume_io_util.h"
#include "volume/pool.h"

namespace spd::testing {
namespace {

constexpr uint64_t kPoolBytes = 24ull << 20;
constexpr uint32_t kChunkBytes = 64u << 10;
constexpr uint64_t kLogBytes = 256u << 10;
constexpr int kVolumesMax = 4;

struct VolState {
  std::string name;
  uint32_t tag = 0;  // the volume id: what its sector patterns carry
  std::shared_ptr<VolumeOracle> oracle;
  bool acked_created = false;
  bool deleting = false;  // a delete is under way: the volume may or may not exist
  bool acked_deleted = false;
};

struct Expectation {
  std::string name;
  uint32_t tag;
  bool must_exist;
  bool must_not_exist;
  std::vector<uint32_t> snapshot;
  std::shared_ptr<VolumeOracle> oracle;
};

struct Capture {
  SimBackend::Image image;
  std::vector<Expectation> expect;
  uint64_t crash_seed;
  int op;
};

class Harness {
 public:
  Harness(Reactor* reactor, uint64_t seed, const CrashSweepOptions& o)
      : reactor_(reactor), seed_(seed), opts_(o), rng_(seed) {}

  // Operation kinds a script can name (every sequence of up to N of them is one exhaustive run).
  static constexpr int kKinds =
      8;  // write, FUA write, flush, discard, zeroes, create, delete, grow

  // Returns "" or the first failure. With a script, runs two prepared volumes through exactly
  // those operation kinds; otherwise ops_per_seed random operations.
  std::string Run(uint64_t* states, const std::vector<int>& script = {}) {
    // A device flush takes a little while (20 to 60 us), so that requests arrive while a commit
    // is still running, as they do on a real device (the overlapping-flush path), and two
    // flushes may complete out of order.
    SimOptions so;
    so.virtual_time = true;  // simulated latencies: fast, and a seed replays exactly
    so.seed = seed_;
    so.flush_extra_ns = 20'000;
    so.latency_jitter_ns = 40'000;
    auto sim = std::make_unique<SimBackend>(reactor_, kPoolBytes, so);
    sim_ = sim.get();
    PoolOptions po;
    po.chunk_size_bytes = kChunkBytes;
    po.log_size_bytes = kLogBytes;
    po.fault_skip_commit_flush = opts_.fault_skip_commit_flush;
    channel_.reset();
    auto p = Pool::Create(std::move(sim), reactor_, po);
    if (!p.ok()) return "pool create: " + p.status().ToString();
    pool_ = std::move(p).value();
    // The remote path (Volume::SubmitRemote) on a channel of the same device: some writes of a
    // burst take it, so its FUA and pinning rules meet the crash states too.
    auto ch = pool_->backend()->OpenChannel(reactor_);
    if (!ch.ok()) return "sim channel: " + ch.status().ToString();
    channel_ = std::move(ch).value();
    sim_->SetFlushHook([this] { OnBoundary(); });
    if (std::string e = CreateVolume(); !e.empty()) return e;
    std::vector<int> plan;
    if (!script.empty()) {
      // Two volumes holding flushed data, then the script.
      plan = {5, 0, 0, 2};
      plan.insert(plan.end(), script.begin(), script.end());
    }
    const int ops = script.empty() ? opts_.ops_per_seed : static_cast<int>(plan.size());
    for (op_ = 0; op_ < ops; ++op_) {
      forced_ = script.empty() ? -1 : plan[op_];
      if (std::string e = Step(); !e.empty()) return Where() + e;
      // And a power cut right after the operation was acknowledged: this is where a commit
      // that acknowledges before its device flush would lose data (no flush boundary follows).
      OnBoundary();
      if (std::string e = VerifyCaptures(states); !e.empty()) return e;
    }
    sim_->SetFlushHook(nullptr);
    return "";
  }

  // Adds this run's pool activity to `res`.
  void CountPool(CrashSweepResult* res) const {
    if (!pool_) return;
    const PoolStats ps = pool_->stats();
    res->commits += ps.commits;
    res->checkpoints += ps.checkpoints;
  }

 private:
  std::string Where() const {
    return "seed " + std::to_string(seed_) + " op " + std::to_string(op_) + ": ";
  }

  void OnBoundary() {
    // A power cut could happen right now: remember a few of the states it could leave.
    std::vector<Expectation> ex;
    for (const VolState& v : vols_) {
      ex.push_back({v.name, v.tag, v.acked_created && !v.deleting, v.acked_deleted,
                    v.oracle->DurableSnapshot(), v.oracle});
    }
    for (int i = 0; i < opts_.states_per_boundary; ++i) {
      uint64_t cs = rng_();
      CrashOptions co;
      co.keep_probability = (cs % 4) / 3.0;  // 0, 1/3, 2/3, 1
      co.torn_probability = (cs >> 8) % 2 ? 0.3 : 0.0;
      captures_.push_back({sim_->CrashImage(cs, co), ex, cs, op_});
    }
  }

  // Half of the requests take the owner's path (Volume::SubmitOwned, the pool's reactor as the
  // owner, on the sim channel): its chunk, unmap and commit messages meet the crash states too.
  int32_t Do(Volume* v, IoOp op, uint64_t off, uint32_t len, void* buf, uint8_t flags) {
    IoBackend* owner_channel = rng_() % 2 ? channel_.get() : nullptr;
    return RunVolumeIo(reactor_, v, op, off, len, buf, flags, owner_channel).result;
  }

  VolState* PickVolume() {
    std::vector<VolState*> live;
    for (VolState& v : vols_)
      if (v.acked_created && !v.acked_deleted) live.push_back(&v);
    if (live.empty()) return nullptr;
    return live[rng_() % live.size()];
  }

  std::string CreateVolume() {
    // 256 KiB .. 1 MiB, a multiple of 4 KiB (8 sectors) as volume sizes must be.
    uint64_t sectors = (256 + rng_() % 768) * 2 / 8 * 8;
    std::string name = "v" + std::to_string(next_name_++);
    VolState vs;
    vs.name = name;
    // The id is assigned inside CreateVolume; crash states taken during its commit see the
    // volume as "may exist", with no data.
    vols_.push_back(vs);
    VolState& ref = vols_.back();
    ref.oracle = std::make_shared<VolumeOracle>(0, sectors);
    auto r = pool_->CreateVolume(name, sectors * kSectorBytes);
    if (!r.ok()) return "create volume: " + r.status().ToString();
    ref.tag = r.value()->info().id;
    ref.oracle = std::make_shared<VolumeOracle>(ref.tag, sectors);
    // Re-point expectations captured during the commit (they used tag 0, no writes).
    for (Capture& c : captures_)
      for (Expectation& e : c.expect)
        if (e.name == name) {
          e.tag = ref.tag;
          e.oracle = ref.oracle;
        }
    ref.acked_created = true;
    return "";
  }

  // The data of write `id` to sectors [first, first+count) of the volume tagged `tag`.
  static std::vector<uint8_t> Pattern(uint32_t tag, uint64_t first, uint64_t count, uint64_t id) {
    std::vector<uint8_t> buf(count * kSectorBytes);
    for (uint64_t s = 0; s < count; ++s)
      FillSector(buf.data() + s * kSectorBytes, tag, first + s, id);
    return buf;
  }

  // A FLUSH submitted now and left in flight. It covers every write finished before now: at its
  // acknowledgement the oracle learns so and crash states are taken.
  struct AsyncFlush {
    VolumeIo io;
    Harness* h = nullptr;
    bool done = false;
    std::vector<uint64_t> marks;
    void Submit(Harness* harness, Volume* v) {
      h = harness;
      marks.clear();
      for (VolState& x : h->vols_) marks.push_back(x.oracle->CompletionMark());
      io.op = IoOp::kFlush;
      io.ctx = this;
      io.done = [](VolumeIo* d) {
        auto* self = static_cast<AsyncFlush*>(d->ctx);
        self->done = true;
        if (d->result != 0) return;
        for (size_t i = 0; i < self->marks.size(); ++i)
          self->h->vols_[i].oracle->FlushCompleted(self->marks[i]);
        self->h->OnBoundary();
      };
      if (h->rng_() % 2 || !v->SubmitOwned(&io, h->channel_.get(), h->reactor_)) v->Submit(&io);
    }
  };

  // FLUSH A starts a commit; a write W completes while that commit may still run; FLUSH B
  // arrives after W (the pool may give it an overlapping device flush of its own). Once B is
  // acknowledged, W must be durable; crash states are taken throughout.
  std::string OverlappingFlushes(Volume* v, VolState* vs, uint64_t first, uint64_t count) {
    // Each FLUSH updates the oracle and takes crash states the moment it is acknowledged: an
    // acknowledgement that comes too early (before the commit holding its records) shows there.
    AsyncFlush a, b;
    // X, before A: may allocate, so that A's commit has records to write. W, during A: the
    // same range, now allocated, so that B needs no records and may overlap.
    auto write = [&]() -> int32_t {
      uint64_t id = next_write_id_++;
      std::vector<uint8_t> buf = Pattern(vs->tag, first, count, id);
      vs->oracle->Completed(first, count, id, false);
      return Do(v, IoOp::kWrite, first * kSectorBytes, static_cast<uint32_t>(buf.size()),
                buf.data(), 0);
    };
    if (int32_t r = write(); r != 0) return "write before a commit failed: " + std::to_string(r);
    a.Submit(this, v);
    if (int32_t r = write(); r != 0) return "write during a commit failed: " + std::to_string(r);
    b.Submit(this, v);
    for (int i = 0; i < 1000000 && !(a.done && b.done); ++i) reactor_->RunOnce(1'000'000);
    if (!a.done || !b.done) return "overlapping flushes did not complete";
    if (a.io.result != 0 || b.io.result != 0)
      return "overlapping flushes failed: " + std::to_string(a.io.result) + " " +
             std::to_string(b.io.result);
    return "";
  }

  // 2 to 8 writes in flight together (disjoint ranges, some FUA, several may allocate), and a
  // FLUSH submitted after some of them finished: it must cover exactly those. The oracle learns
  // of each write at submission (it may land from then on) and of its completion when it
  // happens; crash states are taken at every acknowledgement.
  std::string Burst(Volume* v, VolState* vs) {
    const uint64_t sectors = v->size_bytes() / kSectorBytes;
    const uint64_t n = 2 + rng_() % 7;
    const uint64_t slot = sectors / n;
    if (slot == 0) return "";
    struct W {
      VolumeIo io;
      Harness* h;
      VolState* vs;
      uint64_t first, count, id;
      bool fua;
      bool done = false;
      std::vector<uint8_t> buf;
    };
    std::vector<std::unique_ptr<W>> ws;
    for (uint64_t i = 0; i < n; ++i) {
      auto w = std::make_unique<W>();
      w->h = this;
      w->vs = vs;
      w->count = 1 + rng_() % std::min<uint64_t>(128, slot);
      w->first = i * slot + rng_() % (slot - w->count + 1);
      w->id = next_write_id_++;
      w->fua = rng_() % 4 == 0;
      w->buf = Pattern(vs->tag, w->first, w->count, w->id);
      w->io.op = IoOp::kWrite;
      w->io.offset_bytes = w->first * kSectorBytes;
      w->io.length_bytes = static_cast<uint32_t>(w->buf.size());
      w->io.buf = w->buf.data();
      w->io.flags = w->fua ? kIoFua : 0;
      w->io.ctx = w.get();
      w->io.done = [](VolumeIo* io) {
        auto* self = static_cast<W*>(io->ctx);
        self->done = true;
        if (io->result != 0) return;
        self->vs->oracle->Finished(self->first, self->count, self->id, self->fua);
        if (self->fua) self->h->OnBoundary();
      };
      vs->oracle->Submitted(w->first, w->count, w->id);
      ws.push_back(std::move(w));
    }
    // A third of the writes try the remote path first (it takes writes into allocated chunks,
    // and FUA writes only where the allocation is durable), a third the owner's path (which
    // asks the pool for chunks and commits by message); the rest go to the pool as usual.
    for (auto& w : ws) {
      bool started = false;
      if (w->id % 3 == 1) started = v->SubmitRemote(&w->io, channel_.get());
      if (w->id % 3 == 2) started = v->SubmitOwned(&w->io, channel_.get(), reactor_);
      if (!started) v->Submit(&w->io);
    }
    for (uint64_t t = rng_() % 4; t > 0; --t) reactor_->RunOnce(100'000);
    AsyncFlush f;
    f.Submit(this, v);
    auto all_done = [&] {
      if (!f.done) return false;
      for (auto& w : ws)
        if (!w->done) return false;
      return true;
    };
    for (int i = 0; i < 1000000 && !all_done(); ++i) reactor_->RunOnce(1'000'000);
    if (!all_done()) return "burst did not complete";
    for (auto& w : ws)
      if (w->io.result != 0) return "burst write failed: " + std::to_string(w->io.result);
    if (f.io.result != 0) return "burst flush failed: " + std::to_string(f.io.result);
    return "";
  }

  std::string Step() {
    const bool trace = getenv("SPD_CRASH_TRACE") != nullptr;
    // Forced kinds map onto the random mix's ranges below.
    static constexpr int kForcedK[kKinds] = {0, 0, 40, 55, 65, 96, 90, 93};
    int k = forced_ >= 0 ? kForcedK[forced_] : static_cast<int>(rng_() % 100);
    VolState* vs = PickVolume();
    if (vs == nullptr || (k >= 95 && vols_.size() < 64 && Live() < kVolumesMax))
      return CreateVolume();
    Volume* v = pool_->FindVolume(vs->name);
    if (!v) return "volume " + vs->name + " vanished";
    VolumeOracle& o = *vs->oracle;
    const uint64_t sectors = v->size_bytes() / kSectorBytes;
    uint64_t count = 1 + rng_() % 128;
    if (count > sectors) count = sectors;
    uint64_t first = rng_() % (sectors - count + 1);
    if (trace)
      fprintf(stderr, "op %d k=%d vol %s first %llu count %llu next_write %llu\n", op_, k,
              vs->name.c_str(), (unsigned long long)first, (unsigned long long)count,
              (unsigned long long)next_write_id_);
    if (k < 35 && forced_ < 0 && rng_() % 4 == 0) {
      return Burst(v, vs);
    } else if (k < 35) {  // write, sometimes FUA
      uint64_t id = next_write_id_++;
      std::vector<uint8_t> buf = Pattern(vs->tag, first, count, id);
      bool fua = forced_ >= 0 ? forced_ == 1 : rng_() % 5 == 0;
      o.Completed(first, count, id, false);  // may land from the moment it is submitted
      int32_t r = Do(v, IoOp::kWrite, first * kSectorBytes, static_cast<uint32_t>(buf.size()),
                     buf.data(), fua ? kIoFua : 0);
      if (r != 0) return "write failed: " + std::to_string(r);
      if (fua) o.MadeDurable(first, count, id);
    } else if (k < 50 && forced_ < 0 && rng_() % 3 == 0) {
      return OverlappingFlushes(v, vs, first, count);
    } else if (k < 50) {  // flush
      std::vector<uint64_t> marks;
      for (VolState& x : vols_) marks.push_back(x.oracle->CompletionMark());
      int32_t r = Do(v, IoOp::kFlush, 0, 0, nullptr, 0);
      if (r != 0) return "flush failed: " + std::to_string(r);
      // The pool's commit covers every volume (multi-conn semantics): all are durable.
      for (size_t i = 0; i < vols_.size(); ++i) vols_[i].oracle->FlushCompleted(marks[i]);
    } else if (k < 70) {  // discard or write-zeroes
      IoOp op = k < 60 ? IoOp::kDiscard : IoOp::kWriteZeroes;
      uint8_t flags = (op == IoOp::kWriteZeroes && rng_() % 2) ? kIoNoUnmap : 0;
      if (rng_() % 2) {  // whole chunks, so that unmapping and reuse are exercised
        uint64_t cs = kChunkBytes / kSectorBytes;
        first = first / cs * cs;
        count = std::min<uint64_t>(cs * (1 + rng_() % 3), sectors - first);
      }
      o.Completed(first, count, 0, false);
      int32_t r = Do(v, op, first * kSectorBytes, static_cast<uint32_t>(count * kSectorBytes),
                     nullptr, flags);
      if (r != 0) return "zeroing failed: " + std::to_string(r);
    } else if (k < 88) {  // read and check the live state
      std::vector<uint8_t> buf(count * kSectorBytes);
      int32_t r = Do(v, IoOp::kRead, first * kSectorBytes, static_cast<uint32_t>(buf.size()),
                     buf.data(), 0);
      if (r != 0) return "read failed: " + std::to_string(r);
      for (uint64_t s = 0; s < count; ++s) {
        uint64_t got = DecodeSector(buf.data() + s * kSectorBytes, vs->tag, first + s);
        if (got != o.Latest(first + s))
          return "live read of sector " + std::to_string(first + s) + " gave write " +
                 std::to_string(got) + ", expected " + std::to_string(o.Latest(first + s));
      }
    } else if (k < 92 && Live() > 1) {  // delete
      vs->deleting = true;
      Status s = pool_->DeleteVolume(vs->name);
      if (!s.ok()) return "delete: " + s.ToString();
      vs->acked_deleted = true;
    } else {                                       // grow
      uint64_t add = (16 + rng_() % 256) / 8 * 8;  // sizes stay multiples of 4 KiB
      Status s = pool_->ResizeVolume(vs->name, (sectors + add) * kSectorBytes);
      if (!s.ok()) return "grow: " + s.ToString();
      o.Grow(sectors + add);
    }
    return "";
  }

  int Live() const {
    int n = 0;
    for (const VolState& v : vols_) n += v.acked_created && !v.acked_deleted;
    return n;
  }

  std::string VerifyCaptures(uint64_t* states) {
    std::vector<Capture> caps;
    caps.swap(captures_);
    for (Capture& c : caps) {
      ++*states;
      std::string e = Verify(c);
      if (!e.empty())
        return "seed " + std::to_string(seed_) + " op " + std::to_string(c.op) + " crash state " +
               std::to_string(c.crash_seed) + ": " + e;
    }
    return "";
  }

  std::string Verify(Capture& c) {
    auto backend = std::make_unique<SimBackend>(reactor_, std::move(c.image), SimOptions{});
    auto p = Pool::Open(std::move(backend), reactor_);
    if (!p.ok()) return "pool did not open: " + p.status().ToString();
    Pool* pool = p.value().get();
    // Right at open, before any background zeroing: a chunk the metadata says holds zeros, or
    // that the pool would hand out, must hold zeros in this crash state.
    if (Status z = pool->CheckFreeChunksHoldZeros(); !z.ok()) return z.ToString();
    for (const Expectation& e : c.expect) {
      Volume* v = pool->FindVolume(e.name);
      if (e.must_exist && !v) {
        std::string have;
        for (auto& vi : pool->ListVolumes()) have += " " + vi.name;
        return "acknowledged volume " + e.name + " is missing (pool has" + have + ", ckpts " +
               std::to_string(pool->stats().checkpoints) + ")";
      }
      if (e.must_not_exist && v) return "deleted volume " + e.name + " came back";
      if (!v) continue;
      if (e.tag != 0 && v->info().id != e.tag) return "volume " + e.name + " has a foreign id";
      const uint64_t sectors =
          std::min<uint64_t>(v->size_bytes() / kSectorBytes, e.oracle->sectors());
      std::vector<uint8_t> buf(sectors * kSectorBytes);
      // A pool of its own (the crash image): the live pool's channel is not for it.
      int32_t r =
          RunVolumeIo(reactor_, v, IoOp::kRead, 0, static_cast<uint32_t>(buf.size()), buf.data())
              .result;
      if (r != 0) return "read after crash failed: " + std::to_string(r);
      for (uint64_t s = 0; s < sectors; ++s) {
        uint64_t got = DecodeSector(buf.data() + s * kSectorBytes, v->info().id, s);
        std::string err = e.oracle->Check(e.snapshot, s, got);
        if (!err.empty()) return "volume " + e.name + ": " + err;
      }
    }
    return "";
  }

  Reactor* reactor_;
  uint64_t seed_;
  CrashSweepOptions opts_;
  std::mt19937_64 rng_;
  SimBackend* sim_ = nullptr;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<IoBackend> channel_;  // of pool_'s backend; destroyed first
  std::vector<VolState> vols_;
  std::vector<Capture> captures_;
  uint64_t next_write_id_ = 1;
  int next_name_ = 0;
  int op_ = 0;
  int forced_ = -1;
};

}  // namespace

CrashSweepResult RunCrashSweep(const CrashSweepOptions& options) {
  CrashSweepResult res;
  auto r = Reactor::Create(ReactorOptions{});
  if (!r.ok()) {
    res.failures = 1;
    res.first_failure = r.status().ToString();
    return res;
  }
  auto reactor = std::move(r).value();
  uint64_t start = MonotonicNs();
  // First every sequence of 1..exhaustive_depth operation kinds, each on a fresh pool.
  std::vector<int> seq;
  for (int depth = 1; depth <= options.exhaustive_depth; ++depth) {
    int total = 1;
    for (int i = 0; i < depth; ++i) total *= Harness::kKinds;
    for (int n = 0; n < total; ++n) {
      seq.clear();
      for (int i = 0, x = n; i < depth; ++i, x /= Harness::kKinds)
        seq.push_back(x % Harness::kKinds);
      uint64_t seed = 1000000ull * depth + static_cast<uint64_t>(n);
      Harness h(reactor.get(), seed, options);
      std::string e = h.Run(&res.crash_states, seq);
      h.CountPool(&res);
      ++res.sequences_run;
      if (!e.empty()) {
        std::string name;
        for (int kind : seq) name += std::to_string(kind);
        e = "sequence " + name + " (" + e + ")";
        if (res.failures++ == 0) res.first_failure = e;
        if (options.verbose) std::fprintf(stderr, "FAIL %s\n", e.c_str());
      }
    }
  }
  // Then the seeds (more than `seeds` until states_min, the sequences' states included).
  for (uint64_t s = options.first_seed;
       s < options.first_seed + options.seeds || res.crash_states < options.states_min; ++s) {
    Harness h(reactor.get(), s, options);
    std::string e = h.Run(&res.crash_states);
    h.CountPool(&res);
    ++res.seeds_run;
    if (!e.empty()) {
      if (res.failures++ == 0) res.first_failure = e;
      if (options.verbose) std::fprintf(stderr, "FAIL %s\n", e.c_str());
    }
  }
  res.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
  return res;
}

}  // namespace spd::testing
