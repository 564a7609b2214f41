// VolumeManager and the pool's asynchronous control operations: completion by callback (never
// inside the call), idempotency and canonical codes, calls from other threads, users and forced
// deletes, a reactor that keeps turning while a control operation waits, and volume I/O (local
// and remote) racing a forced delete and resizes.
#include "volume/volume_manager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <utility>

#include "io/sim_backend.h"
#include "testing/volume_io_util.h"

namespace spd {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

class VolumeManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(r.ok());
    reactor_ = std::move(r).value();
  }
  void MakePool(uint64_t size, const SimOptions& so = {}, uint32_t chunk = 64 << 10) {
    auto sim = std::make_unique<SimBackend>(reactor_.get(), size, so);
    PoolOptions o;
    o.chunk_size_bytes = chunk;
    o.log_size_bytes = 1 << 20;
    auto p = Pool::Create(std::move(sim), reactor_.get(), o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
  }
  void TearDown() override {
    mgr_.reset();
    pool_.reset();
  }
  // Drives the pool's reactor until *flag, bounded.
  void RunUntil(const std::atomic<bool>& flag, uint64_t timeout_ns = 20'000'000'000) {
    const uint64_t end = MonotonicNs() + timeout_ns;
    while (!flag.load() && MonotonicNs() < end) reactor_->RunOnce(1'000'000);
    ASSERT_TRUE(flag.load()) << "timed out";
  }
  int32_t Do(Volume* v, IoOp op, uint64_t off, uint32_t len, void* buf) {
    auto r = testing::RunVolumeIo(reactor_.get(), v, op, off, len, buf);
    EXPECT_FALSE(r.completed_inside_submit);
    return r.result;
  }
  std::unique_ptr<Reactor> reactor_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<VolumeManager> mgr_;
};

// Remembers what it was told; closes users when asked (after `close_delay_ns`, on the reactor).
class FakeListener : public VolumeManager::Listener {
 public:
  explicit FakeListener(Reactor* r) : reactor_(r) { timer_.self = this; }
  void OnVolumeChanged(const VolumeInfo& info, VolumeManager::Change kind) override {
    changes.push_back(kind);
    names.push_back(info.name);
    if (kind == VolumeManager::Change::kDeleted && watched)
      users_at_delete = static_cast<int>(watched->users());
  }
  void OnVolumeClosing(std::shared_ptr<VolumeHandle> h, std::function<void()> done) override {
    ++closing_calls;
    if (never_done) return;
    pending_handle = std::move(h);
    pending_done = std::move(done);
    timer_.fn = [](Timer* t) {
      FakeListener* self = static_cast<Tm*>(t)->self;
      for (; self->users_held > 0; --self->users_held) self->pending_handle->RemoveUser();
      self->pending_done();
    };
    reactor_->ArmTimer(&timer_, MonotonicNs() + close_delay_ns);
  }
  ~FakeListener() override { reactor_->CancelTimer(&timer_); }

  std::vector<VolumeManager::Change> changes;
  std::vector<std::string> names;
  int closing_calls = 0;
  int users_held = 0;  // registrations it drops when asked to close
  bool never_done = false;
  uint64_t close_delay_ns = 20'000'000;
  std::shared_ptr<VolumeHandle> watched;
  int users_at_delete = -1;

 private:
  struct Tm : Timer {
    FakeListener* self;
  };
  Reactor* reactor_;
  Tm timer_;
  std::shared_ptr<VolumeHandle> pending_handle;
  std::function<void()> pending_done;
};

TEST_F(VolumeManagerTest, EveryOperationCompletesLaterByCallback) {
  MakePool(64 * kMiB);
  // The pool's own operations: even one that fails at once answers later.
  bool pool_done = false;
  pool_->ResizeVolumeAsync("missing", 4 * kMiB, [&](Status s) {
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    pool_done = true;
  });
  EXPECT_FALSE(pool_done) << "callback ran inside ResizeVolumeAsync";
  bool created = false;
  pool_->CreateVolumeAsync("p", kMiB, Durability::kFlush, false, [&](Result<Volume*> r) {
    EXPECT_TRUE(r.ok());
    created = true;
  });
  EXPECT_FALSE(created) << "callback ran inside CreateVolumeAsync";
  while (!created) reactor_->RunOnce(1'000'000);
  EXPECT_TRUE(pool_done);

  mgr_ = std::make_unique<VolumeManager>(pool_.get());
  std::atomic<bool> done{false};
  std::shared_ptr<VolumeHandle> h;
  mgr_->Create({"v", 4 * kMiB, Durability::kFlush, false}, [&](auto r) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    h = r.value();
    done = true;
  });
  EXPECT_FALSE(done.load()) << "Create's callback ran inside the call";
  RunUntil(done);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->info().size_bytes, 4 * kMiB);
  EXPECT_EQ(h->volume(), pool_->FindVolume("v"));

  done = false;
  mgr_->Resize("v", 8 * kMiB, [&](Status s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    done = true;
  });
  EXPECT_FALSE(done.load());
  RunUntil(done);
  EXPECT_EQ(h->info().size_bytes, 8 * kMiB);
  EXPECT_EQ(h->volume()->size_bytes(), 8 * kMiB);

  done = false;
  mgr_->SetDurability("v", Durability::kSync, [&](Status s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    done = true;
  });
  EXPECT_FALSE(done.load());
  RunUntil(done);
  EXPECT_EQ(h->info().durability, Durability::kSync);
  EXPECT_EQ(h->volume()->info().durability, Durability::kSync);

  done = false;
  mgr_->Delete("v", false, [&](Status s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    done = true;
  });
  EXPECT_FALSE(done.load());
  RunUntil(done);
  EXPECT_TRUE(h->deleted());
  EXPECT_EQ(h->volume(), nullptr);
  EXPECT_EQ(mgr_->Find("v"), nullptr);
  EXPECT_EQ(pool_->FindVolume("v"), nullptr);
}

TEST_F(VolumeManagerTest, ChangesAreDurable) {
  // Create, resize and set durability, then reopen the pool from the same bytes.
  MakePool(64 * kMiB);
  mgr_ = std::make_unique<VolumeManager>(pool_.get());
  ASSERT_TRUE(mgr_->CreateBlocking({"d", 4 * kMiB, Durability::kFlush, false}).ok());
  ASSERT_TRUE(mgr_->CreateBlocking({"e", 4 * kMiB, Durability::kFlush, false}).ok());
  ASSERT_TRUE(mgr_->ResizeBlocking("d", 12 * kMiB).ok());
  ASSERT_TRUE(mgr_->SetDurabilityBlocking("d", Durability::kNone).ok());
  ASSERT_TRUE(mgr_->DeleteBlocking("e", false).ok());
  auto* sim = static_cast<SimBackend*>(pool_->backend());
  SimBackend::Image img = sim->VisibleImage();
  mgr_.reset();
  pool_.reset();
  auto p =
      Pool::Open(std::make_unique<SimBackend>(reactor_.get(), img, SimOptions{}), reactor_.get());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  pool_ = std::move(p).value();
  auto vols = pool_->ListVolumes();
  ASSERT_EQ(vols.size(), 1u);
  EXPECT_EQ(vols[0].name, "d");
  EXPECT_EQ(vols[0].size_bytes, 12 * kMiB);
  EXPECT_EQ(vols[0].durability, Durability::kNone);
}

TEST_F(VolumeManagerTest, IdempotentByNameWithCanonicalCodes) {
  MakePool(64 * kMiB);
  mgr_ = std::make_unique<VolumeManager>(pool_.get());
  auto a = mgr_->CreateBlocking({"a", 4 * kMiB, Durability::kFlush, false});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto again = mgr_->CreateBlocking({"a", 4 * kMiB, Durability::kFlush, false});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again.value(), a.value()) << "the same handle";
  EXPECT_EQ(mgr_->CreateBlocking({"a", 8 * kMiB, Durability::kFlush, false}).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(mgr_->DeleteBlocking("nope", false).code(), StatusCode::kNotFound);
  EXPECT_EQ(mgr_->ResizeBlocking("nope", kMiB).code(), StatusCode::kNotFound);
  EXPECT_EQ(mgr_->SetDurabilityBlocking("nope", Durability::kSync).code(), StatusCode::kNotFound);
  // No-ops commit nothing.
  const uint64_t commits = pool_->stats().commits;
  EXPECT_TRUE(mgr_->ResizeBlocking("a", 4 * kMiB).ok());
  EXPECT_TRUE(mgr_->SetDurabilityBlocking("a", Durability::kFlush).ok());
  EXPECT_EQ(pool_->stats().commits, commits);
  // Sizes: positive multiples of 4096, the message names the size.
  auto odd = mgr_->CreateBlocking({"odd", 1000, Durability::kFlush, false});
  EXPECT_EQ(odd.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(odd.status().message().find("1000"), std::string::npos) << odd.status().ToString();
  EXPECT_EQ(mgr_->ResizeBlocking("a", 4 * kMiB + 512).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(mgr_->ResizeBlocking("a", 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pool_->CreateVolume("odd", 1000).status().code(), StatusCode::kInvalidArgument);
  // Shrinking over data is refused and changes nothing; over holes it works.
  Volume* v = a.value()->volume();
  std::vector<uint8_t> buf(4096, 7);
  ASSERT_EQ(Do(v, IoOp::kWrite, 3 * kMiB, 4096, buf.data()), 0);
  Status s = mgr_->ResizeBlocking("a", 2 * kMiB);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.ToString();
  EXPECT_EQ(v->size_bytes(), 4 * kMiB);
  EXPECT_EQ(a.value()->info().size_bytes, 4 * kMiB);
  ASSERT_EQ(Do(v, IoOp::kDiscard, 3 * kMiB, 64 << 10, nullptr), 0);
  EXPECT_TRUE(mgr_->ResizeBlocking("a", 2 * kMiB).ok());
  EXPECT_EQ(v->size_bytes(), 2 * kMiB);
  // A full queue answers kResourceExhausted (and later, like everything else).
  std::atomic<int> answered{0}, exhausted{0};
  const int n = static_cast<int>(VolumeManager::kQueueMax) + 10;
  for (int i = 0; i < n; ++i)
    mgr_->SetDurability("a", i % 2 ? Durability::kSync : Durability::kFlush, [&](Status st) {
      if (st.code() == StatusCode::kResourceExhausted) ++exhausted;
      ++answered;
    });
  EXPECT_EQ(answered.load(), 0);
  const uint64_t end = MonotonicNs() + 20'000'000'000;
  while (answered.load() < n && MonotonicNs() < end) reactor_->RunOnce(1'000'000);
  EXPECT_EQ(answered.load(), n);
  EXPECT_GE(exhausted.load(), 1);
}

TEST_F(VolumeManagerTest, CallsFromAnotherThread) {
  MakePool(64 * kMiB);
  mgr_ = std::make_unique<VolumeManager>(pool_.get());
  const std::thread::id reactor_thread = std::this_thread::get_id();
  std::atomic<bool> finished{false};
  std::atomic<int> wrong_thread{0}, failures{0};
  std::thread t([&] {
    for (int i = 0; i < 8; ++i) {
      const std::string name = "t" + std::to_string(i);
      // Twice: the second answers from the existing handle.
      for (int k = 0; k < 2; ++k) {
        std::atomic<bool> done{false};
        mgr_->Create({name, kMiB, Durability::kFlush, false}, [&](auto r) {
          if (std::this_thread::get_id() != reactor_thread) ++wrong_thread;
          if (!r.ok()) ++failures;
          done = true;
        });
        for (int spin = 0; spin < 20000 && !done.load(); ++spin) usleep(100);
        if (!done.load()) ++failures;
      }
      auto h = mgr_->Find(name);
      if (!h || h->info().size_bytes != kMiB) ++failures;
      if (mgr_->List().size() != static_cast<size_t>(i + 1)) ++failures;
    }
    finished = true;
  });
  RunUntil(finished);
  t.join();
  EXPECT_EQ(wrong_thread.load(), 0);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(pool_->ListVolumes().size(), 8u);
}

TEST_F(VolumeManagerTest, DeleteWithAUserIsRefusedUnlessForced) {
  MakePool(64 * kMiB);
  mgr_ = std::make_unique<VolumeManager>(pool_.get());
  FakeListener listener(reactor_.get());
  mgr_->AddListener(&listener);
  auto h = mgr_->CreateBlocking({"u", 4 * kMiB, Durability::kFlush, false}).value();
  ASSERT_TRUE(h->AddUser());
  Status s = mgr_->DeleteBlocking("u", false);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("1 open user"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("force"), std::string::npos) << s.ToString();
  EXPECT_NE(h->volume(), nullptr);
  EXPECT_EQ(listener.closing_calls, 0);
  // Still usable: the refusal released the volume for new users.
  ASSERT_TRUE(h->AddUser());
  h->RemoveUser();

  // Forced: the listener closes the user (after 20 ms), then the volume goes.
  listener.users_held = 1;
  listener.watched = h;
  s = mgr_->DeleteBlocking("u", true);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(listener.closing_calls, 1);
  EXPECT_EQ(listener.users_at_delete, 0) << "deleted while a user was still open";
  EXPECT_TRUE(h->deleted());
  EXPECT_EQ(h->volume(), nullptr);
  EXPECT_FALSE(h->AddUser()) << "a deleted volume takes no users";
  ASSERT_EQ(listener.changes.size(), 2u);
  EXPECT_EQ(listener.changes[0], VolumeManager::Change::kCreated);
  EXPECT_EQ(listener.changes[1], VolumeManager::Change::kDeleted);
}

TEST_F(VolumeManagerTest, ForcedDeleteGivesUpWhenUsersStay) {
  MakePool(64 * kMiB);
  VolumeManager::Options o;
  o.close_timeout_ns = 50'000'000;
  mgr_ = std::make_unique<VolumeManager>(pool_.get(), o);
  FakeListener listener(reactor_.get());
  listener.never_done = true;
  mgr_->AddListener(&listener);
  auto h = mgr_->CreateBlocking({"stay", 4 * kMiB, Durability::kFlush, false}).value();
  ASSERT_TRUE(h->AddUser());
  Status s = mgr_->DeleteBlocking("stay", true);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_FALSE(h->deleted());
  EXPECT_NE(h->volume(), nullptr);
  EXPECT_NE(pool_->FindVolume("stay"), nullptr);
  ASSERT_TRUE(h->AddUser()) << "the volume is open again";
  h->RemoveUser();
  h->RemoveUser();
}

TEST_F(VolumeManagerTest, AControlOperationNeverBlocksThePoolsReactor) {
  // Slow device: zeroing the deleted volume's chunks and the commits take many milliseconds.
  SimOptions so;
  so.latency_base_ns = 2'000'000;
  so.flush_extra_ns = 10'000'000;
  MakePool(64 * kMiB, so);
  mgr_ = std::make_unique<VolumeManager>(pool_.get());
  auto h = mgr_->CreateBlocking({"slow", 16 * kMiB, Durability::kFlush, false}).value();
  std::vector<uint8_t> buf(64 << 10, 1);
  for (int c = 0; c < 64; ++c)
    ASSERT_EQ(Do(h->volume(), IoOp::kWrite, uint64_t(c) * (64 << 10), 64 << 10, buf.data()), 0);
  // A 1 ms timer on the pool's reactor. A control operation that drives the reactor itself
  // (a RunOnce loop inside a callback) lets it fire many times inside one turn of ours.
  struct Tick : Timer {
    Reactor* r;
    int fired = 0;
  } tick;
  tick.r = reactor_.get();
  tick.fn = [](Timer* t) {
    auto* k = static_cast<Tick*>(t);
    ++k->fired;
    k->r->ArmTimer(k, MonotonicNs() + 1'000'000);
  };
  reactor_->ArmTimer(&tick, MonotonicNs() + 1'000'000);
  std::atomic<bool> done{false};
  mgr_->Delete("slow", false, [&](Status s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    done = true;
  });
  int turns = 0, most_per_turn = 0;
  const uint64_t start = MonotonicNs();
  while (!done.load() && MonotonicNs() - start < 20'000'000'000) {
    const int before = tick.fired;
    reactor_->RunOnce(1'000'000);
    most_per_turn = std::max(most_per_turn, tick.fired - before);
    ++turns;
  }
  reactor_->CancelTimer(&tick);
  ASSERT_TRUE(done.load());
  EXPECT_GE(tick.fired, 10) << "the delete took " << (MonotonicNs() - start) / 1000 << " us";
  EXPECT_LE(most_per_turn, 2) << "the timer fired " << most_per_turn
                              << " times inside one turn: something drove the reactor itself";
  EXPECT_GT(turns, 10);
  EXPECT_EQ(pool_->stats().chunks_free, pool_->stats().chunks_total) << "space returned";
}

TEST_F(VolumeManagerTest, AStalePointerToADeletedVolumeFailsCleanly) {
  MakePool(64 * kMiB);
  mgr_ = std::make_unique<VolumeManager>(pool_.get());
  auto h = mgr_->CreateBlocking({"gone", 4 * kMiB, Durability::kFlush, false}).value();
  Volume* stale = h->volume();
  std::vector<uint8_t> buf(4096, 3);
  ASSERT_EQ(Do(stale, IoOp::kWrite, 0, 4096, buf.data()), 0);
  ASSERT_TRUE(mgr_->DeleteBlocking("gone", false).ok());
  EXPECT_EQ(h->volume(), nullptr);
  // Nobody should hold the pointer past the delete; if someone does, it fails, touching no
  // freed memory (ASan).
  EXPECT_EQ(Do(stale, IoOp::kWrite, 0, 4096, buf.data()), -ESHUTDOWN);
  EXPECT_EQ(Do(stale, IoOp::kRead, 0, 4096, buf.data()), -ESHUTDOWN);
  auto ch = pool_->backend()->OpenChannel(reactor_.get());
  ASSERT_TRUE(ch.ok()) << ch.status().ToString();
  VolumeIo io;
  io.op = IoOp::kRead;
  io.length_bytes = 4096;
  io.buf = buf.data();
  EXPECT_FALSE(stale->SubmitRemote(&io, ch.value().get()));
}

// ---- I/O racing a forced delete and resizes (run it under ASan) -----------------------------

class VolumeManagerRaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/dev/shm/spd-volmgr-test-" + std::to_string(getpid()) + ".img";
    unlink(path_.c_str());
    auto o = Reactor::Create(ReactorOptions{});
    ASSERT_TRUE(o.ok());
    owner_ = std::move(o).value();
    if (owner_->engine() != ReactorEngine::kUring) GTEST_SKIP() << "io_uring unavailable";
    auto p = testing::CreateShmUringPool(owner_.get(), path_, 64ull << 20, 64 << 10);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pool_ = std::move(p).value();
    mgr_ = std::make_unique<VolumeManager>(pool_.get());
  }
  void TearDown() override {
    mgr_.reset();
    pool_.reset();
    unlink(path_.c_str());
  }
  std::string path_;
  std::unique_ptr<Reactor> owner_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<VolumeManager> mgr_;
};

struct AlignedBuf4k {
  explicit AlignedBuf4k(size_t n) : p(static_cast<uint8_t*>(std::aligned_alloc(4096, n))), n(n) {
    std::memset(p, 0, n);
  }
  ~AlignedBuf4k() { std::free(p); }
  uint8_t* p;
  size_t n;
};

// A user doing I/O on the pool's reactor: each request is started from a posted task that looks
// at the handle first, the way a connection on the pool's reactor would.
struct LocalUser : Task {
  Reactor* reactor = nullptr;
  std::shared_ptr<VolumeHandle> h;
  bool registered = false;
  bool closing = false;  // set by the listener: stop after the request in flight
  std::function<void()> closed;
  VolumeIo io;
  AlignedBuf4k buf{4096};
  uint64_t n = 0, ok = 0, refused_after_delete = 0;
  bool running = false;

  void Post() { reactor->Post(this); }
  static void Run(Task* t) {
    auto* u = static_cast<LocalUser*>(t);
    Volume* v = u->h->volume();
    if (u->closing || v == nullptr) {
      u->running = false;
      if (v == nullptr) ++u->refused_after_delete;
      if (u->registered) {
        u->registered = false;
        u->h->RemoveUser();
      }
      if (u->closed) std::exchange(u->closed, nullptr)();
      return;
    }
    u->io = VolumeIo();
    u->io.op = (u->n % 3 == 0) ? IoOp::kRead : IoOp::kWrite;
    u->io.offset_bytes = (u->n * 4096) % (2 * kMiB);
    u->io.length_bytes = 4096;
    u->io.buf = u->buf.p;
    u->io.ctx = u;
    u->io.done = [](VolumeIo* io) {
      auto* self = static_cast<LocalUser*>(io->ctx);
      if (io->result == 0) ++self->ok;
      self->Post();  // the next request, from a fresh task
    };
    ++u->n;
    v->Submit(&u->io);
  }
};

class ClosingListener : public VolumeManager::Listener {
 public:
  void OnVolumeChanged(const VolumeInfo&, VolumeManager::Change) override {}
  void OnVolumeClosing(std::shared_ptr<VolumeHandle> h, std::function<void()> done) override {
    if (h == local->h && local->running) {
      local->closing = true;
      local->closed = done;  // after its request in flight
    } else {
      done();
    }
  }
  LocalUser* local = nullptr;
};

TEST_F(VolumeManagerRaceTest, VolumeIoWhileAForcedDeleteAndResizesRun) {
  auto ha = mgr_->CreateBlocking({"a", 4 * kMiB, Durability::kFlush, false});
  auto hb = mgr_->CreateBlocking({"b", 4 * kMiB, Durability::kFlush, false});
  ASSERT_TRUE(ha.ok() && hb.ok());
  std::shared_ptr<VolumeHandle> a = ha.value(), b = hb.value();
  // Allocate the first 2 MiB of both, so that remote I/O has allocated chunks to run on.
  {
    AlignedBuf4k fill(64 << 10);
    for (uint64_t off = 0; off < 2 * kMiB; off += 64 << 10) {
      ASSERT_EQ(testing::RunVolumeIo(owner_.get(), a->volume(), IoOp::kWrite, off, 64 << 10, fill.p)
                    .result,
                0);
      ASSERT_EQ(testing::RunVolumeIo(owner_.get(), b->volume(), IoOp::kWrite, off, 64 << 10, fill.p)
                    .result,
                0);
    }
  }
  LocalUser local;
  local.reactor = owner_.get();
  local.h = a;
  local.fn = &LocalUser::Run;
  ASSERT_TRUE(a->AddUser());
  local.registered = true;
  local.running = true;
  local.Post();

  std::atomic<bool> remote_closing{false}, stop{false}, remote_ready{false};
  std::atomic<uint64_t> remote_a_ok{0}, remote_b_ok{0}, mismatches{0}, add_user_refused{0};
  std::atomic<int> remote_done_calls{0};
  std::string thread_error;
  ClosingListener listener;
  listener.local = &local;
  std::function<void()> remote_done_fn;
  std::mutex remote_done_mu;
  // The remote thread answers the close from its own thread: the listener forwards through
  // remote_closing, the thread calls `done` once it let go.
  struct ForwardingListener : VolumeManager::Listener {
    void OnVolumeChanged(const VolumeInfo&, VolumeManager::Change) override {}
    void OnVolumeClosing(std::shared_ptr<VolumeHandle> h, std::function<void()> done) override {
      std::lock_guard<std::mutex> lock(*mu);
      if (h == handle) {
        *fn = std::move(done);
        closing->store(true);
      } else {
        done();
      }
    }
    std::shared_ptr<VolumeHandle> handle;
    std::atomic<bool>* closing;
    std::function<void()>* fn;
    std::mutex* mu;
  } forward;
  forward.handle = a;
  forward.closing = &remote_closing;
  forward.fn = &remote_done_fn;
  forward.mu = &remote_done_mu;
  mgr_->AddListener(&listener);
  mgr_->AddListener(&forward);

  std::thread t([&] {
    auto rc = testing::OpenReactorWithChannel(pool_.get());
    if (!rc.ok()) {
      thread_error = rc.status().ToString();
      return;
    }
    std::unique_ptr<Reactor> reactor = std::move(rc.value().reactor);
    std::unique_ptr<IoBackend> channel = std::move(rc.value().channel);
    bool a_user = a->AddUser();
    remote_ready = true;
    AlignedBuf4k w(4096), got(4096);
    struct Rio {
      VolumeIo io;
      bool done = false;
    } rio;
    auto run = [&](Volume* v, IoOp op, uint64_t off, AlignedBuf4k* buf) -> int {
      rio.io = VolumeIo();
      rio.io.op = op;
      rio.io.offset_bytes = off;
      rio.io.length_bytes = 4096;
      rio.io.buf = buf->p;
      rio.done = false;
      rio.io.ctx = &rio.done;
      rio.io.done = [](VolumeIo* d) { *static_cast<bool*>(d->ctx) = true; };
      if (!v->SubmitRemote(&rio.io, channel.get())) return 1;  // refused: not started
      for (int i = 0; i < 100000 && !rio.done; ++i) reactor->RunOnce(1'000'000);
      return rio.done ? (rio.io.result == 0 ? 0 : -1) : -2;
    };
    for (uint32_t i = 0; i < 200000 && !stop.load(); ++i) {
      const uint64_t off = (uint64_t(i) * 4096) % (2 * kMiB);
      if (a_user && remote_closing.load()) {
        a_user = false;
        a->RemoveUser();
        std::lock_guard<std::mutex> lock(remote_done_mu);
        ++remote_done_calls;
        remote_done_fn();
      }
      if (a_user) {
        // Only while registered may this thread look at a's Volume.
        Volume* v = a->volume();
        if (v && run(v, i % 2 ? IoOp::kRead : IoOp::kWrite, off, &w) == 0) ++remote_a_ok;
      } else if (a->deleted()) {
        if (!a->AddUser())
          ++add_user_refused;  // I/O after deletion fails via the handle
        else
          a->RemoveUser();
      }
      // b is resized under us: its remote path closes and reopens; data must stay right.
      if (b->AddUser()) {
        std::memset(w.p, static_cast<int>(i & 0xff), 4096);
        w.p[0] = static_cast<uint8_t>(i >> 8);
        Volume* vb = b->volume();
        if (run(vb, IoOp::kWrite, off, &w) == 0) {
          if (run(vb, IoOp::kRead, off, &got) == 0) {
            if (std::memcmp(w.p, got.p, 4096) != 0) ++mismatches;
            ++remote_b_ok;
          }
        }
        b->RemoveUser();
      }
    }
    if (a_user) a->RemoveUser();
    channel.reset();
  });
  while (!remote_ready.load() && thread_error.empty()) owner_->RunOnce(1'000'000);
  // Let traffic run, then resize b a few times and force-delete a, all queued at once.
  for (const uint64_t t0 = MonotonicNs(); MonotonicNs() - t0 < 200'000'000;)
    owner_->RunOnce(1'000'000);
  std::atomic<int> pending{0};
  std::atomic<int> failed{0};
  Status delete_status;
  for (int k = 0; k < 40; ++k) {
    ++pending;
    // Grow and shrink above the allocated 2 MiB.
    mgr_->Resize("b", (k % 2 ? 4 : 8) * kMiB + uint64_t(k) * 65536, [&](Status s) {
      if (!s.ok()) ++failed;
      --pending;
    });
    if (k == 20) {
      ++pending;
      mgr_->Delete("a", true, [&](Status s) {
        delete_status = s;
        --pending;
      });
    }
  }
  const uint64_t end = MonotonicNs() + 30'000'000'000;
  while (pending.load() > 0 && MonotonicNs() < end) owner_->RunOnce(1'000'000);
  // Keep the pool's reactor turning a little while the thread sees the deletion.
  for (int i = 0; i < 50; ++i) owner_->RunOnce(1'000'000);
  stop = true;
  t.join();
  ASSERT_EQ(thread_error, "");
  EXPECT_EQ(pending.load(), 0);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_TRUE(delete_status.ok()) << delete_status.ToString();
  EXPECT_TRUE(a->deleted());
  EXPECT_EQ(a->volume(), nullptr);
  EXPECT_FALSE(local.running);
  EXPECT_FALSE(local.registered);
  EXPECT_EQ(remote_done_calls.load(), 1);
  EXPECT_GT(add_user_refused.load(), 0u);
  EXPECT_EQ(mismatches.load(), 0u);
  EXPECT_GT(remote_b_ok.load(), 0u);
  EXPECT_GT(local.ok, 0u);
  EXPECT_GT(remote_a_ok.load(), 0u);
  // After the delete, a request started from the handle fails cleanly.
  local.closing = false;
  local.running = true;
  local.Post();
  for (int i = 0; i < 10 && local.running; ++i) owner_->RunOnce(1'000'000);
  EXPECT_FALSE(local.running);
  EXPECT_GE(local.refused_after_delete, 1u);
  ASSERT_TRUE(pool_->SyncAll().ok());
}

}  // namespace
}  // namespace spd
