#include "control/call_executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <vector>

namespace spd {
namespace {

// One call runs at a time; at most queued_max wait; at Stop the waiting ones are each answered
// once with a refusal, and the running one ends first.
TEST(CallExecutorTest, OneAtATimeBoundedAndEveryCallAnsweredOnceAtStop) {
  CallExecutor ex(3);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::promise<void> started;
  std::atomic<int> ran{0}, refused{0}, running{0}, most{0};
  auto body = [&](const Status& r) {
    if (!r.ok()) {
      EXPECT_EQ(r.code(), StatusCode::kUnavailable);
      refused.fetch_add(1);
      return;
    }
    const int now = running.fetch_add(1) + 1;
    most.store(std::max(most.load(), now));
    ran.fetch_add(1);
    running.fetch_sub(1);
  };
  ASSERT_TRUE(ex.Submit([&](const Status& r) {
    started.set_value();
    gate.wait();  // the first call blocks, as a promote waiting for a hand-over does
    body(r);
  }));
  started.get_future().wait();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ex.Submit(body)) << i;
  EXPECT_EQ(ex.waiting(), 3u);
  EXPECT_FALSE(ex.Submit(body)) << "a fourth waiting call";
  std::thread stopper([&] { ex.Stop(); });
  while (!ex.stopped()) std::this_thread::yield();
  release.set_value();
  stopper.join();
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(refused.load(), 3);
  EXPECT_EQ(most.load(), 1);
}

TEST(CallExecutorTest, CallsRunInOrderWhileItRuns) {
  CallExecutor ex(16);
  std::vector<int> order;
  std::mutex mu;
  std::promise<void> done;
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(ex.Submit([&, i](const Status& r) {
      ASSERT_TRUE(r.ok());
      std::lock_guard<std::mutex> l(mu);
      order.push_back(i);
      if (i == 9) done.set_value();
    }));
  done.get_future().wait();
  ex.Stop();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

}  // namespace
}  // namespace spd
