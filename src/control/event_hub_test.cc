#include "control/event_hub.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace spd {
namespace {

v1::Event Ev(const char* volume) {
  v1::Event e;
  e.set_type(v1::EVENT_TYPE_VOLUME_CREATED);
  e.set_volume(volume);
  return e;
}

TEST(EventHub, AWatcherReadsInOrderFromItsCursor) {
  EventHub hub;
  EXPECT_EQ(hub.last_seq(), 0u);
  uint64_t cur = 0;
  EXPECT_FALSE(hub.Next(&cur).has_value());
  hub.Publish(Ev("a"));
  hub.Publish(Ev("b"));
  auto e1 = hub.Next(&cur);
  ASSERT_TRUE(e1);
  EXPECT_EQ(e1->seq(), 1u);
  EXPECT_EQ(e1->volume(), "a");
  EXPECT_GT(e1->time_unix_ns(), 0);
  auto e2 = hub.Next(&cur);
  ASSERT_TRUE(e2);
  EXPECT_EQ(e2->seq(), 2u);
  EXPECT_FALSE(hub.Next(&cur).has_value());
  EXPECT_EQ(cur, 2u);
}

TEST(EventHub, AWatcherFurtherBehindThanTheRingIsToldHowManyItLost) {
  EventHub hub;
  for (size_t i = 0; i < EventHub::kKeep + 10; ++i) hub.Publish(Ev("x"));
  uint64_t cur = 0;
  auto lost = hub.Next(&cur);
  ASSERT_TRUE(lost);
  EXPECT_EQ(lost->type(), v1::EVENT_TYPE_EVENTS_LOST);
  EXPECT_EQ(lost->message().rfind("10 event(s)", 0), 0u) << lost->message();
  auto first = hub.Next(&cur);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->seq(), 11u);  // the oldest kept
  uint64_t n = 1;
  while (hub.Next(&cur)) ++n;
  EXPECT_EQ(n, EventHub::kKeep);
}

TEST(EventHub, WatchersAreWokenBoundedAndNeverAfterRemoval) {
  EventHub hub;
  std::atomic<int> woken{0};
  std::vector<std::shared_ptr<EventHub::Watcher>> ws;
  for (int i = 0; i < 3; ++i) {
    auto w = std::make_shared<EventHub::Watcher>();
    w->wake = [&] { ++woken; };
    ASSERT_TRUE(hub.Add(w, 3));
    ws.push_back(w);
  }
  auto extra = std::make_shared<EventHub::Watcher>();
  EXPECT_FALSE(hub.Add(extra, 3)) << "the watcher limit was not kept";
  hub.Publish(Ev("a"));
  EXPECT_EQ(woken.load(), 3);
  hub.Remove(ws[0]);
  EXPECT_EQ(hub.watchers(), 2u);
  hub.Publish(Ev("b"));
  EXPECT_EQ(woken.load(), 5);
  // Publishing from many threads while watchers come and go: every event numbered once.
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 500; ++i) hub.Publish(Ev("p"));
    });
  for (int i = 0; i < 200; ++i) {
    auto w = std::make_shared<EventHub::Watcher>();
    w->wake = [] {};
    if (hub.Add(w, 64)) hub.Remove(w);
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(hub.last_seq(), 2002u);
}

}  // namespace
}  // namespace spd
