#include "common/counters.h"

#include <gtest/gtest.h>

namespace spd {
namespace {

Histogram test_latency("spd_test_latency_seconds", "Test histogram.");

TEST(Histogram, BucketsQuantilesAndPrometheusText) {
  const auto before = HistogramBuckets("spd_test_latency_seconds");
  test_latency.Observe(500);                                   // 0.5 us -> le 1 us
  test_latency.Observe(1000);                                  // exactly 1 us -> le 1 us
  test_latency.Observe(3000);                                  // -> le 4 us
  for (int i = 0; i < 97; ++i) test_latency.Observe(100'000);  // -> le 128 us
  test_latency.Observe(60'000'000'000ull);                     // 60 s -> +Inf
  const auto after = HistogramBuckets("spd_test_latency_seconds");
  EXPECT_EQ(after[0] - before[0], 2u);
  EXPECT_EQ(after[2] - before[2], 1u);
  EXPECT_EQ(after[7] - before[7], 97u);
  EXPECT_EQ(after[Histogram::kBuckets] - before[Histogram::kBuckets], 1u);
  EXPECT_EQ(HistogramQuantileNs(before, after, 0.01), 1000u);
  EXPECT_EQ(HistogramQuantileNs(before, after, 0.5), 128'000u);
  EXPECT_EQ(HistogramQuantileNs(before, after, 0.99), 128'000u);
  EXPECT_EQ(HistogramQuantileNs(before, after, 1.0), UINT64_MAX);
  EXPECT_EQ(HistogramQuantileNs(after, after, 0.5), 0u);  // nothing observed in between

  const std::string text = RenderCountersPrometheus();
  EXPECT_NE(text.find("# TYPE spd_test_latency_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("spd_test_latency_seconds_bucket{le=\"0.000001\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("spd_test_latency_seconds_bucket{le=\"+Inf\"} 101\n"), std::string::npos);
  EXPECT_NE(text.find("spd_test_latency_seconds_count 101\n"), std::string::npos);
}

Gauge test_gauge("spd_test_state", "Test gauge.");

TEST(Gauge, SetsAndRendersAsAGauge) {
  test_gauge.Set(1);
  EXPECT_EQ(CounterValue("spd_test_state"), 1u);
  test_gauge.Set(0);
  EXPECT_EQ(CounterValue("spd_test_state"), 0u);
  const std::string text = RenderCountersPrometheus();
  EXPECT_NE(text.find("# TYPE spd_test_state gauge\nspd_test_state 0\n"), std::string::npos);
}

TEST(MetricsCollector, AppendsWhileItLivesAndEscapesLabels) {
  EXPECT_EQ(PromLabel("a\\b\"c\nd"), "\"a\\\\b\\\"c\\nd\"");
  {
    MetricsCollector c(
        [](std::string* out) { *out += "spd_test_labelled{v=" + PromLabel("x") + "} 7\n"; });
    EXPECT_NE(RenderCountersPrometheus().find("spd_test_labelled{v=\"x\"} 7\n"), std::string::npos);
  }
  EXPECT_EQ(RenderCountersPrometheus().find("spd_test_labelled"), std::string::npos);
}

}  // namespace
}  // namespace spd
