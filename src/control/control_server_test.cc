// The control server in-process, over its unix socket, on a sim pool: the audit worker's queue
// limit (ControlServer::kAuditQueueMax). With the worker held busy (the TEST ONLY hook
// ControlServerOptions::test_before_worker_job), a flood of refused calls fills the queue to the
// limit and no further; every refusal past it is answered at once, its entry dropped and
// counted; admitted calls' entries are queued past the limit and all reach the log; reads and
// refusals are still answered while the queue is full.
#include "control/control_server.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "audit/audit_log.h"
#include "common/counters.h"
#include "control/call_interceptor.h"
#include "io/sim_backend.h"
#include "spd/v1/audit.grpc.pb.h"
#include "spd/v1/node.grpc.pb.h"
#include "spd/v1/volumes.grpc.pb.h"

namespace spd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kDropped = "spd_control_audit_dropped_total";
constexpr const char* kQueue = "spd_control_audit_queue";

// Polls `cond` every millisecond for up to `timeout`; true once it holds.
bool WaitFor(const std::function<bool()>& cond, std::chrono::seconds timeout) {
  const auto end = Clock::now() + timeout;
  while (!cond()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Keeps the audit worker inside test_before_worker_job while closed.
class WorkerGate {
 public:
  void Enter() {
    std::unique_lock<std::mutex> l(mu_);
    if (!closed_) return;
    ++held_;
    cv_.notify_all();
    cv_.wait(l, [this] { return !closed_; });
  }
  bool WaitHeld(std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [this] { return held_ > 0; });
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = false;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = true;
  int held_ = 0;
};

// CreateVolume calls in flight (gRPC's client callback API) and their answers.
class Calls {
 public:
  struct Call {
    grpc::ClientContext ctx;
    v1::CreateVolumeRequest req;
    v1::Volume resp;
    grpc::Status status;
    bool done = false;
  };
  Call* Create(v1::VolumeService::Stub* stub, const std::string& name) {
    auto owned = std::make_unique<Call>();
    Call* c = owned.get();
    c->req.set_name(name);
    c->req.set_size_bytes(1 << 20);
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    {
      std::lock_guard<std::mutex> l(mu_);
      calls_.push_back(std::move(owned));
    }
    stub->async()->CreateVolume(&c->ctx, &c->req, &c->resp, [this, c](grpc::Status s) {
      std::lock_guard<std::mutex> l(mu_);
      c->status = std::move(s);
      c->done = true;
      ++finished_;
      cv_.notify_all();
    });
    return c;
  }
  size_t finished() {
    std::lock_guard<std::mutex> l(mu_);
    return finished_;
  }
  bool done(const Call* c) {
    std::lock_guard<std::mutex> l(mu_);
    return c->done;
  }
  // True once every call started has its answer.
  bool WaitAll(std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [this] { return finished_ == calls_.size(); });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Call>> calls_;  // guarded by mu_
  size_t finished_ = 0;                       // guarded by mu_
};

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/spd_control_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    gate_.Open();  // a failed test may have left the worker held
    EXPECT_TRUE(calls_.WaitAll(std::chrono::seconds(60))) << "calls still unanswered";
    StopServer();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A ControlServer over a sim pool whose reactor runs on a thread of its own (the server, the
  // volume manager and the pool are made and destroyed there, as the daemon does on its main
  // thread).
  void StartServer() {
    ControlServerOptions o;
    o.socket_path = dir_ + "/control.sock";
    o.audit_dir = dir_ + "/audit";
    o.state_dir = dir_;
    o.version = "test";
    o.batch_threads = false;
    o.test_before_worker_job = [this] { gate_.Enter(); };
    auto ready = std::make_shared<std::promise<Status>>();
    std::future<Status> started = ready->get_future();
    reactor_thread_ = std::thread([this, o, ready] {
      auto r = Reactor::Create(ReactorOptions{});
      if (!r.ok()) return ready->set_value(r.status());
      std::unique_ptr<Reactor> reactor = std::move(r).value();
      PoolOptions po;
      po.chunk_size_bytes = 64 << 10;
      po.log_size_bytes = 1 << 20;
      auto p = Pool::Create(std::make_unique<SimBackend>(reactor.get(), 64 << 20, SimOptions{}),
                            reactor.get(), po);
      if (!p.ok()) return ready->set_value(p.status());
      std::unique_ptr<Pool> pool = std::move(p).value();
      auto volumes = std::make_unique<VolumeManager>(pool.get());
      auto server = std::make_unique<ControlServer>(volumes.get(), o);
      const Status s = server->Start();
      if (s.ok()) {
        reactor_ = reactor.get();
        server_ = server.get();
      }
      ready->set_value(s);
      if (s.ok()) reactor->Run();
      server.reset();
      volumes.reset();
      pool.reset();
    });
    const Status s = started.get();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  // Stop (bounded: it waits for calls in flight) with the pool's reactor still running, then
  // the reactor.
  void StopServer() {
    if (!reactor_thread_.joinable()) return;
    if (server_) server_->Stop();
    if (reactor_) reactor_->Stop();
    reactor_thread_.join();
    server_ = nullptr;
    reactor_ = nullptr;
  }
  // A channel of its own (its own connection: gRPC otherwise shares one between channels to the
  // same address, and the server allows 100 streams on a connection).
  std::shared_ptr<grpc::Channel> Channel() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel("unix:" + dir_ + "/control.sock",
                                     grpc::InsecureChannelCredentials(), args);
  }
  static void Deadline(grpc::ClientContext* ctx, int seconds) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }

  std::string dir_;
  WorkerGate gate_;
  Calls calls_;
  std::thread reactor_thread_;
  Reactor* reactor_ = nullptr;
  ControlServer* server_ = nullptr;
};

// The value of one sample line of the metrics text (0 when absent).
double SampleValue(const std::string& series) {
  const std::string text = RenderCountersPrometheus();
  const size_t at = text.find("\n" + series + " ");
  return at == std::string::npos ? 0 : std::stod(text.substr(at + series.size() + 2));
}

TEST_F(ControlServerTest, CallsAreCountedByMethodAndCode) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const std::string ok =
      "spd_control_calls_total{method=\"spd.v1.NodeService/GetNodeInfo\",code=\"OK\"}";
  const std::string missing =
      "spd_control_calls_total{method=\"spd.v1.VolumeService/GetVolume\",code=\"NOT_FOUND\"}";
  const double ok0 = SampleValue(ok), missing0 = SampleValue(missing);
  auto channel = Channel();
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    Deadline(&ctx, 5);
    v1::NodeInfo info;
    grpc::Status s = v1::NodeService::NewStub(channel)->GetNodeInfo(&ctx, {}, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  grpc::ClientContext ctx;
  Deadline(&ctx, 5);
  v1::GetVolumeRequest req;
  req.set_name("nope");
  v1::Volume out;
  grpc::Status s = v1::VolumeService::NewStub(channel)->GetVolume(&ctx, req, &out);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  // Counted before the status goes out: no wait needed.
  EXPECT_EQ(SampleValue(ok) - ok0, 3);
  EXPECT_EQ(SampleValue(missing) - missing0, 1);
  // A made-up method is answered UNIMPLEMENTED and counted as "unknown": no series per name a
  // client invents.
  for (int i = 0; i < 3; ++i) {
    grpc::GenericStub generic(channel);
    grpc::ClientContext gctx;
    Deadline(&gctx, 5);
    grpc::Slice empty(std::string{});
    grpc::ByteBuffer in(&empty, 1), out;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&gctx, "/evil.Made/Up" + std::to_string(i), grpc::StubOptions(), &in, &out,
                      [&done](grpc::Status st) { done.set_value(st); });
    EXPECT_EQ(done.get_future().get().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  EXPECT_EQ(RenderCountersPrometheus().find("evil.Made"), std::string::npos);
  EXPECT_GE(SampleValue("spd_control_calls_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}"), 3);
  EXPECT_STREQ(GrpcCodeName(16), "UNAUTHENTICATED");
  EXPECT_STREQ(GrpcCodeName(99), "UNKNOWN");
}

TEST_F(ControlServerTest, AFloodOfRefusedCallsFillsTheAuditQueueToItsLimitAndNoFurther) {
  constexpr size_t kMax = ControlServer::kAuditQueueMax;
  constexpr size_t kFlood = kMax + 300;  // refused calls while the worker is busy
  constexpr int kAdmitted = 4;           // creates that succeed while the queue is full
  ASSERT_NO_FATAL_FAILURE(StartServer());
  const uint64_t dropped0 = CounterValue(kDropped);
  // 16 connections: room for 1,600 calls at once, more than the queue holds.
  std::vector<std::unique_ptr<v1::VolumeService::Stub>> stubs;
  for (int i = 0; i < 16; ++i) stubs.push_back(v1::VolumeService::NewStub(Channel()));

  // A refused create (an invalid name) whose entry the worker takes and is held on: the worker
  // is busy, the queue empty.
  const Calls::Call* first = calls_.Create(stubs[0].get(), "bad name!");
  ASSERT_TRUE(gate_.WaitHeld(std::chrono::seconds(30))) << "the worker never took a job";
  EXPECT_FALSE(calls_.done(first)) << "a queued refusal was answered before its entry was written";
  EXPECT_EQ(GaugeValue(kQueue), 0);

  // The flood: every call is either waiting in the queue or was answered at once (dropped).
  std::vector<const Calls::Call*> flood;
  for (size_t i = 0; i < kFlood; ++i)
    flood.push_back(calls_.Create(stubs[i % stubs.size()].get(), "bad name " + std::to_string(i)));
  ASSERT_TRUE(
      WaitFor([&] { return calls_.finished() + static_cast<size_t>(GaugeValue(kQueue)) >= kFlood; },
              std::chrono::seconds(60)))
      << "answered " << calls_.finished() << ", queued " << GaugeValue(kQueue) << " of " << kFlood;
  EXPECT_EQ(GaugeValue(kQueue), static_cast<int64_t>(kMax)) << "the queue passed its limit";
  EXPECT_EQ(calls_.finished(), kFlood - kMax);
  EXPECT_EQ(CounterValue(kDropped) - dropped0, kFlood - kMax) << "drops miscounted";
  for (const Calls::Call* c : flood) {
    if (calls_.done(c)) {
      EXPECT_EQ(c->status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << c->status.error_message();
    }
  }

  // Creates admitted now: each one's entry is queued past the limit, never dropped, and none is
  // answered before its entry is written.
  auto writer = v1::VolumeService::NewStub(Channel());
  std::vector<const Calls::Call*> admitted;
  for (int i = 0; i < kAdmitted; ++i)
    admitted.push_back(calls_.Create(writer.get(), "keep-" + std::to_string(i)));
  auto any_answered = [&] {
    for (const Calls::Call* c : admitted)
      if (calls_.done(c)) return true;
    return false;
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        return GaugeValue(kQueue) >= static_cast<int64_t>(kMax) + kAdmitted || any_answered();
      },
      std::chrono::seconds(60)))
      << "queued " << GaugeValue(kQueue) << ", want " << kMax + kAdmitted;
  EXPECT_EQ(GaugeValue(kQueue), static_cast<int64_t>(kMax) + kAdmitted);
  for (const Calls::Call* c : admitted)
    EXPECT_FALSE(calls_.done(c)) << c->req.name() << " answered before its entry was written: "
                                 << c->status.error_message();
  EXPECT_EQ(CounterValue(kDropped) - dropped0, kFlood - kMax);

  // Still responsive with the queue full: reads (no worker needed), and a refusal (answered at
  // once, its entry dropped).
  {
    auto reader = Channel();
    grpc::ClientContext ctx;
    Deadline(&ctx, 5);
    v1::NodeInfo info;
    grpc::Status s = v1::NodeService::NewStub(reader)->GetNodeInfo(&ctx, {}, &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    grpc::ClientContext lctx;
    Deadline(&lctx, 5);
    v1::ListVolumesResponse list;
    s = v1::VolumeService::NewStub(reader)->ListVolumes(&lctx, {}, &list);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(list.volumes_size(), kAdmitted);  // made in the pool; answers wait for the log
    grpc::ClientContext rctx;
    Deadline(&rctx, 5);
    v1::CreateVolumeRequest bad;
    bad.set_name("bad name, full queue");
    bad.set_size_bytes(1 << 20);
    v1::Volume out;
    s = v1::VolumeService::NewStub(reader)->CreateVolume(&rctx, bad, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_EQ(CounterValue(kDropped) - dropped0, kFlood - kMax + 1);
  }

  // Released: every queued entry is written and every call answered.
  gate_.Open();
  ASSERT_TRUE(calls_.WaitAll(std::chrono::seconds(60)));
  for (const Calls::Call* c : admitted)
    EXPECT_TRUE(c->status.ok()) << c->req.name() << ": " << c->status.error_message();
  for (const Calls::Call* c : flood)
    EXPECT_EQ(c->status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GaugeValue(kQueue), 0);
  EXPECT_EQ(CounterValue(kDropped) - dropped0, kFlood - kMax + 1);

  // The log: the first refusal, the kMax queued ones, every admitted create; nothing else.
  const uint64_t want = 1 + kMax + kAdmitted;
  {
    grpc::ClientContext ctx;
    Deadline(&ctx, 30);
    v1::VerifyAuditResponse rep;
    grpc::Status s = v1::AuditService::NewStub(Channel())->VerifyAudit(&ctx, {}, &rep);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(rep.ok()) << rep.problem();
    EXPECT_EQ(rep.entries(), want);
  }
  StopServer();
  auto verified = VerifyAuditLog(dir_ + "/audit");
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  EXPECT_TRUE(verified.value().ok) << verified.value().problem;
  EXPECT_EQ(verified.value().entries, want);
  std::ifstream log(dir_ + "/audit/" + kAuditLogFile);
  std::multiset<std::string> created;
  size_t refused = 0;
  for (std::string line; std::getline(log, line);) {
    const nlohmann::json e = nlohmann::json::parse(line);
    EXPECT_EQ(e.at("method"), "spd.v1.VolumeService/CreateVolume");
    if (e.at("result") == "OK") {
      created.insert(e.at("args").at("name").get<std::string>());
    } else {
      ++refused;
    }
  }
  EXPECT_EQ(refused, 1 + kMax);
  for (int i = 0; i < kAdmitted; ++i)
    EXPECT_EQ(created.count("keep-" + std::to_string(i)), 1u) << "keep-" << i;
  EXPECT_EQ(created.size(), static_cast<size_t>(kAdmitted));
}

}  // namespace
}  // namespace spd
