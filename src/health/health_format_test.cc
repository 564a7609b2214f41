#include "health/health_format.h"

#include <gtest/gtest.h>

#include <memory>

namespace spd::health {
namespace {

TEST(HealthFormat, SampleRoundTripsThroughTheSeqlock) {
  auto rec = std::make_unique<SensorRecord>();
  SensorSample in;
  in.value = 42500;
  in.max = 80000;
  in.threshold_mask = kHasMax;
  in.status = static_cast<uint32_t>(SensorStatus::kOk);
  WriteSample(*rec, in);
  EXPECT_EQ(rec->seq.load(), 2u);
  SensorSample out;
  ASSERT_TRUE(TryReadSample(*rec, &out));
  EXPECT_EQ(out.value, 42500);
  EXPECT_EQ(out.max, 80000);
  EXPECT_EQ(out.threshold_mask, kHasMax);
}

TEST(HealthFormat, ReaderRefusesAnOddSequence) {
  auto rec = std::make_unique<SensorRecord>();
  rec->seq.store(3);
  SensorSample out;
  EXPECT_FALSE(TryReadSample(*rec, &out));
}

TEST(HealthFormat, UnitScales) {
  EXPECT_DOUBLE_EQ(UnitScale(SensorUnit::kMilliCelsius), 1e-3);
  EXPECT_DOUBLE_EQ(UnitScale(SensorUnit::kMicroWatt), 1e-6);
  EXPECT_DOUBLE_EQ(UnitScale(SensorUnit::kRpm), 1.0);
  EXPECT_EQ(SegmentBytes(2), 256u * 3);
}

}  // namespace
}  // namespace spd::health
