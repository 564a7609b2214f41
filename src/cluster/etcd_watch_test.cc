// Watches against a real etcd: order, compaction (re-list), an etcd restart, Stop.
#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>

#include "cluster/etcd_client.h"
#include "cluster/etcd_test_util.h"

namespace spd {
namespace {

using namespace std::chrono_literals;
using etcd_test::EtcdProcess;
using etcd_test::MakeClient;
using etcd_test::SharedEtcd;
using etcd_test::WaitFor;

// Gathers what a watch delivers, for the test thread to look at.
class Collector {
 public:
  WatchCallback Callback() {
    return [this](const WatchUpdate& u) {
      std::lock_guard<std::mutex> l(mu_);
      updates_.push_back(u);
      for (const WatchEvent& e : u.events) events_.push_back(e);
    };
  }
  std::vector<WatchEvent> events() const {
    std::lock_guard<std::mutex> l(mu_);
    return events_;
  }
  std::vector<WatchUpdate> updates() const {
    std::lock_guard<std::mutex> l(mu_);
    return updates_;
  }
  // Waits (bounded) for an event on `key` at `revision`.
  bool WaitForEvent(const std::string& key, int64_t revision, std::chrono::milliseconds limit) {
    return WaitFor(
        [&] {
          for (const WatchEvent& e : events())
            if (e.kv.key == key && e.kv.mod_revision == revision) return true;
          return false;
        },
        limit);
  }

 private:
  mutable std::mutex mu_;
  std::vector<WatchUpdate> updates_;
  std::vector<WatchEvent> events_;
};

class EtcdWatchTest : public etcd_test::SharedEtcdTest {
 protected:
  int64_t Now() {
    auto g = client_->Get("/");
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    return g.ok() ? g->revision : 0;
  }
};

TEST_F(EtcdWatchTest, EventsArriveInOrder) {
  Collector got;
  WatchOptions wo;
  wo.start_revision = Now() + 1;
  auto w = client_->Watch("/order/", got.Callback(), wo);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  struct Want {
    WatchEvent::Type type;
    std::string key;
    int64_t rev;
  };
  std::vector<Want> want;
  for (int i = 0; i < 40; ++i) {
    const std::string key = "/order/" + std::to_string(i % 7);
    if (i % 5 == 4) {
      auto d = client_->Delete(key);
      ASSERT_TRUE(d.ok());
      if (d->deleted == 1) want.push_back({WatchEvent::Type::kDelete, key, d->revision});
    } else {
      auto p = client_->Put(key, std::to_string(i));
      ASSERT_TRUE(p.ok());
      want.push_back({WatchEvent::Type::kPut, key, *p});
    }
    ASSERT_TRUE(client_->Put("/order-not/" + std::to_string(i), "x").ok());  // not watched
  }
  // Two puts at one revision, in one transaction.
  Txn two;
  two.then = {TxnOp::Put("/order/x", "1"), TxnOp::Put("/order/y", "2")};
  auto t = client_->Txn(two);
  ASSERT_TRUE(t.ok());
  want.push_back({WatchEvent::Type::kPut, "/order/x", t->revision});
  want.push_back({WatchEvent::Type::kPut, "/order/y", t->revision});
  ASSERT_TRUE(WaitFor([&] { return got.events().size() >= want.size(); }, 10s))
      << got.events().size() << " of " << want.size();
  const auto events = got.events();
  ASSERT_EQ(events.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(events[i].type, want[i].type) << i;
    EXPECT_EQ(events[i].kv.key, want[i].key) << i;
    EXPECT_EQ(events[i].kv.mod_revision, want[i].rev) << i;
  }
  EXPECT_EQ(events.back().kv.value, "2");
  EXPECT_EQ((*w)->next_revision(), t->revision + 1);
  EXPECT_EQ((*w)->reconnects(), 0u);
  for (const WatchUpdate& u : got.updates()) EXPECT_FALSE(u.resynced);
}

TEST_F(EtcdWatchTest, CompactionMakesTheWatchReList) {
  auto r0 = client_->Put("/compact/a", "1");
  ASSERT_TRUE(r0.ok());
  ASSERT_TRUE(client_->Put("/compact/b", "2").ok());
  ASSERT_TRUE(client_->Delete("/compact/a").ok());
  auto last = client_->Put("/compact/c", "3");
  ASSERT_TRUE(last.ok());
  Status cs = client_->Compact(*last);
  ASSERT_TRUE(cs.ok()) << cs.ToString();

  Collector got;
  WatchOptions wo;
  wo.start_revision = *r0;  // compacted away
  auto w = client_->Watch("/compact/", got.Callback(), wo);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(WaitFor([&] { return !got.updates().empty(); }, 10s));
  const WatchUpdate first = got.updates().front();
  ASSERT_TRUE(first.resynced);
  EXPECT_GE(first.revision, *last);
  ASSERT_EQ(first.snapshot.size(), 2u);  // a was deleted before the compaction
  EXPECT_EQ(first.snapshot[0].key, "/compact/b");
  EXPECT_EQ(first.snapshot[1].key, "/compact/c");
  EXPECT_EQ(first.snapshot[1].mod_revision, *last);
  EXPECT_EQ((*w)->resyncs(), 1u);
  // The watch goes on from the snapshot's revision.
  auto d = client_->Put("/compact/d", "4");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(got.WaitForEvent("/compact/d", *d, 10s));
  EXPECT_EQ(got.updates().size(), 2u);
  EXPECT_EQ((*w)->resyncs(), 1u);
}

TEST_F(EtcdWatchTest, FailsOverFromADeadEndpoint) {
  const std::string dead = "http://127.0.0.1:" + std::to_string(etcd_test::FreePort());
  auto c = MakeClient({dead, etcd_->endpoint()});
  Collector got;
  WatchOptions wo;
  wo.start_revision = Now() + 1;
  auto w = c->Watch("/wfail/", got.Callback(), wo);
  ASSERT_TRUE(w.ok());
  auto p = client_->Put("/wfail/k", "v");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(got.WaitForEvent("/wfail/k", *p, 20s));
}

// etcd stopped (SIGTERM by pid) and started again on its data dir and port: the watch comes
// back by itself and resumes after the last revision it delivered, so a put made after the
// restart (while the watcher is still waiting out its backoff) is not lost.
TEST(EtcdWatchRestartTest, WatchSurvivesAnEtcdRestart) {
  ASSERT_FALSE(etcd_test::FindEtcd().empty()) << etcd_test::kNoEtcd;
  EtcdProcess etcd;
  const std::string started = etcd.Start();
  ASSERT_EQ(started, "");
  EtcdOptions o;
  o.endpoints = {etcd.endpoint()};
  o.watch_backoff_min = 2000ms;  // so that the put below usually precedes the reconnection
  o.watch_backoff_max = 4000ms;
  auto c = EtcdClient::Create(o);
  ASSERT_TRUE(c.ok());
  Collector got;
  auto before = (*c)->Put("/restart/a", "1");
  ASSERT_TRUE(before.ok());
  WatchOptions wo;
  wo.start_revision = *before;
  auto w = (*c)->Watch("/restart/", got.Callback(), wo);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(got.WaitForEvent("/restart/a", *before, 10s));

  etcd.Stop();
  ASSERT_TRUE(WaitFor([&] { return (*w)->reconnects() >= 1; }, 10s));
  ASSERT_EQ(etcd.Start(), "");
  auto after = (*c)->Put("/restart/b", "2");
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  auto after2 = (*c)->Put("/restart/c", "3");
  ASSERT_TRUE(after2.ok());
  EXPECT_TRUE(got.WaitForEvent("/restart/c", *after2, 20s)) << (*w)->last_error().ToString();
  const auto events = got.events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].kv.mod_revision, *before);
  EXPECT_EQ(events[1].kv.key, "/restart/b");
  EXPECT_EQ(events[1].kv.mod_revision, *after);
  EXPECT_EQ(events[2].kv.mod_revision, *after2);
  EXPECT_NE((*w)->last_error().message().find(etcd.endpoint()), std::string_view::npos)
      << (*w)->last_error().ToString();
  (*w)->Stop();
}

// etcd replaced by one with no data (a new cluster on the same address, as after a restore from
// an old snapshot): its revisions start again below the one the watch resumes from. The watch
// lists again rather than waiting for revisions that may never come.
TEST(EtcdWatchRestartTest, AWatchListsAgainWhenEtcdLostItsData) {
  ASSERT_FALSE(etcd_test::FindEtcd().empty()) << etcd_test::kNoEtcd;
  EtcdProcess etcd;
  ASSERT_EQ(etcd.Start(), "");
  EtcdOptions o;
  o.endpoints = {etcd.endpoint()};
  o.watch_backoff_min = 100ms;
  o.watch_backoff_max = 500ms;
  auto c = EtcdClient::Create(o);
  ASSERT_TRUE(c.ok());
  Result<int64_t> last = (*c)->Put("/lost/a", "1");
  for (int i = 0; i < 20 && last.ok(); ++i) last = (*c)->Put("/lost/a", std::to_string(i));
  ASSERT_TRUE(last.ok());
  Collector got;
  WatchOptions wo;
  wo.start_revision = *last + 1;
  auto w = (*c)->Watch("/lost/", got.Callback(), wo);
  ASSERT_TRUE(w.ok());
  etcd.Stop();
  etcd.WipeData();
  ASSERT_EQ(etcd.Start(), "");
  auto b = (*c)->Put("/lost/b", "new");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_LT(*b, *last) << "the new etcd should start its revisions again";
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const WatchUpdate& u : got.updates())
          if (u.resynced) return true;
        return false;
      },
      20s))
      << (*w)->last_error().ToString();
  EXPECT_GE((*w)->resyncs(), 1u);
  // It goes on from the new etcd's revisions: what the updates add up to is the new etcd's
  // prefix (b came in the re-list or after it, by the race with the reconnection; no a).
  auto d = (*c)->Put("/lost/d", "4");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(got.WaitForEvent("/lost/d", *d, 10s));
  std::map<std::string, std::string> seen;
  for (const WatchUpdate& u : got.updates()) {
    if (u.resynced) {
      seen.clear();
      for (const KeyValue& kv : u.snapshot) seen[kv.key] = kv.value;
    }
    for (const WatchEvent& e : u.events) {
      if (e.type == WatchEvent::Type::kPut)
        seen[e.kv.key] = e.kv.value;
      else
        seen.erase(e.kv.key);
    }
  }
  EXPECT_EQ(seen, (std::map<std::string, std::string>{{"/lost/b", "new"}, {"/lost/d", "4"}}));
  (*w)->Stop();
}

// Stop ends the thread at once wherever it waits: on a stream that never says a word, and in
// the backoff after it.
TEST(EtcdWatchStopTest, StopIsPromptOnASilentServer) {
  etcd_test::SilentServer silent;
  // request_timeout long enough that a Stop waiting it out would show.
  auto c = MakeClient({silent.endpoint()}, 2000ms);
  ASSERT_NE(c, nullptr);
  Collector got;
  auto w = c->Watch("/x/", got.Callback());
  ASSERT_TRUE(w.ok());
  // The stream that is never confirmed counts as broken after request_timeout.
  ASSERT_TRUE(WaitFor([&] { return (*w)->reconnects() >= 1; }, 10s));
  Status why = (*w)->last_error();
  EXPECT_EQ(why.code(), StatusCode::kDeadlineExceeded) << why.ToString();
  EXPECT_NE(why.message().find("not confirmed within 2000 ms"), std::string_view::npos)
      << why.ToString();
  // Stop while the second stream waits for its confirmation (connected, not yet timed out).
  ASSERT_TRUE(WaitFor([&] { return silent.accepted() >= 2; }, 10s));
  const auto t0 = std::chrono::steady_clock::now();
  (*w)->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_TRUE(got.updates().empty());
}

}  // namespace
}  // namespace spd
