#include "telemetry/otlp_exporter.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/counters.h"
#include "common/trace.h"

namespace spd {
namespace {

TEST(TraceparentTest, ParsesW3CVersion00AndRefusesTheRest) {
  trace::TraceId t;
  trace::SpanId p;
  uint8_t f = 0;
  ASSERT_TRUE(trace::ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t,
                                      &p, &f));
  EXPECT_EQ(trace::Hex(t.b, 16), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(trace::Hex(p.b, 8), "00f067aa0ba902b7");
  EXPECT_EQ(f, 1);
  EXPECT_EQ(trace::FormatTraceparent(t, p, f),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",       // no flags
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // uppercase
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero parent
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // 00 is exactly 55
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(trace::ParseTraceparent(bad, &t, &p, &f)) << bad;
  }
  // A later version may append fields.
  EXPECT_TRUE(trace::ParseTraceparent(
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next", &t, &p, &f));
}

TEST(TraceQueueTest, BoundedDropsAreCountedAndOffRecordsNothing) {
  trace::Disable();
  trace::Span s;
  EXPECT_FALSE(trace::Record(trace::Span(s)));
  trace::Options o;
  o.queue_max = 3;
  o.io_sample_rate = 0.01;
  trace::Enable(o);
  EXPECT_EQ(trace::IoSamplePeriod(), 100u);
  const uint64_t dropped0 = CounterValue("spd_trace_spans_dropped_total");
  int taken = 0;
  for (int i = 0; i < 5; ++i) taken += trace::Record(trace::Span(s)) ? 1 : 0;
  EXPECT_EQ(taken, 3);
  EXPECT_EQ(CounterValue("spd_trace_spans_dropped_total") - dropped0, 2u);
  std::vector<trace::Span> out;
  EXPECT_EQ(trace::Take(&out, 2, 0), 2u);
  EXPECT_EQ(trace::Take(&out, 10, 1'000'000), 1u);
  EXPECT_EQ(trace::Queued(), 0u);
  trace::Disable();
  EXPECT_EQ(trace::IoSamplePeriod(), 0u);
}

TEST(OtlpJsonTest, SpansInOtlpsJsonMapping) {
  trace::Span root;
  root.trace_id = trace::NewTraceId();
  root.span_id = trace::NewSpanId();
  root.name = "spd.request";
  root.kind = trace::SpanKind::kServer;
  root.start_unix_ns = 1'700'000'000'000'000'000ull;
  root.end_unix_ns = root.start_unix_ns + 5000;
  root.status = trace::SpanStatus::kError;
  root.status_message = "Input/output error";
  root.Add("spd.volume", std::string("v\xff"));  // invalid UTF-8 is replaced, not thrown on
  root.Add("spd.length", int64_t{65536});
  trace::Span child;
  child.trace_id = root.trace_id;
  child.span_id = trace::NewSpanId();
  child.parent = root.span_id;
  child.name = "spd.backend";
  OtlpOptions o;
  o.service_version = "1.2.3";
  const nlohmann::json j = nlohmann::json::parse(OtlpJson({root, child}, o));
  const auto& rs = j.at("resourceSpans").at(0);
  EXPECT_EQ(rs.at("resource").at("attributes").at(0).at("key"), "service.name");
  EXPECT_EQ(rs.at("resource").at("attributes").at(0).at("value").at("stringValue"), "spd2");
  const auto& spans = rs.at("scopeSpans").at(0).at("spans");
  ASSERT_EQ(spans.size(), 2u);
  const auto& a = spans.at(0);
  EXPECT_EQ(a.at("traceId"), trace::Hex(root.trace_id.b, 16));
  EXPECT_EQ(a.at("spanId").get<std::string>().size(), 16u);
  EXPECT_FALSE(a.contains("parentSpanId"));
  EXPECT_EQ(a.at("kind"), 2);
  EXPECT_EQ(a.at("startTimeUnixNano"), "1700000000000000000");  // 64-bit: a string
  EXPECT_EQ(a.at("endTimeUnixNano"), "1700000000000005000");
  EXPECT_EQ(a.at("status").at("code"), 2);
  EXPECT_EQ(a.at("attributes").at(1).at("value").at("intValue"), "65536");
  EXPECT_EQ(spans.at(1).at("parentSpanId"), trace::Hex(root.span_id.b, 8));
}

TEST(OtlpExporterTest, RefusesAnEndpointThatIsNotHttp) {
  OtlpOptions o;
  o.endpoint = "127.0.0.1:4318";
  OtlpExporter e(o);
  EXPECT_EQ(e.Start().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace spd
