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

namespace spd {
namespace {

Counter micros_test_total("spd_test_micros_seconds_total", "test", kMicros);
Gauge micros_test_gauge("spd_test_micros_gauge_seconds", "test", kMicros);

TEST(Counter, KeptInMicrosecondsExportedInSeconds) {
  micros_test_total.Add(2'500'000);
  micros_test_gauge.Set(1500);
  micros_test_gauge.Add(-3000);
  const std::string text = RenderCountersPrometheus();
  EXPECT_NE(text.find("\nspd_test_micros_seconds_total 2.5\n"), std::string::npos);
  EXPECT_NE(text.find("\nspd_test_micros_gauge_seconds -0.0015\n"), std::string::npos);
  EXPECT_EQ(CounterValue("spd_test_micros_seconds_total"), 2'500'000u);  // raw
}

TEST(PromSample, WholeValuesPrintWholeFractionsWithNineDigits) {
  std::string out;
  PromSample(&out, "a", "", 12345678901234.0);
  PromSample(&out, "b", "x=\"1\"", 0.000123456789123);
  PromSample(&out, "c", "", 0);
  EXPECT_EQ(out, "a 12345678901234\nb{x=\"1\"} 0.000123456789\nc 0\n");
  std::string h;
  PromHeader(&h, "n", "Help text.", "counter");
  EXPECT_EQ(h, "# HELP n Help text.\n# TYPE n counter\n");
}

}  // namespace
}  // namespace spd

namespace spd {
namespace {

// A check that reads a counter nobody registered would compare 0 with 0 for ever: it stops.
TEST(CounterValueDeathTest, AnUnknownNameStopsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(CounterValue("spd_no_such_counter_total"), "no counter named spd_no_such_counter");
}

}  // namespace
}  // namespace spd
