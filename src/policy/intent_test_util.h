// Test helper: an intent with every field set (for round trips through the store, the API and
// the formats).
#pragma once

#include "policy/model.h"

namespace spd::policy::test_util {

inline Intent FullIntent() {
  Intent in;
  in.latency = LatencyTarget{99.9, 2000};
  in.reservation = Rate{5000, 0};
  in.limit = Rate{20000, 200ull << 20};
  in.weight = 200;
  in.priority = PriorityClass::kCritical;
  in.durability = Durability::kSync;
  in.replicas = 3;
  return in;
}

}  // namespace spd::policy::test_util
