// Live calibration (spdctl calibrate): measures the pool's device through a scratch volume while
// the daemon serves, fits a cost model (qos/calibrate.h), stores it as
// DATA_DIR/default.cost.json and hands it to the QoS scheduler.
//
// The measurement runs on a reactor of its own, on the calling thread: a scratch volume is
// created through the volume manager, driven through the daemon's dispatcher from a port on
// that reactor (the QoS scheduler lets ports on reactors it does not know pass), then deleted.
// Requests of other volumes meanwhile are measured too: calibrate an idle daemon.
//
// Thread-safety: RunLiveCalibration blocks its caller (never a reactor or a gRPC thread) for
// at most options.total_ns plus the scratch volume's create and delete.
#pragma once

#include <string>

#include "common/status.h"
#include "qos/calibrate.h"

namespace spd {

class Dispatcher;
class VolumeManager;

inline constexpr const char* kCalibrationVolume = "spd-calibrate-scratch";

// REQUIRES: not on a reactor thread. The scratch volume holds options.working_set_bytes.
[[nodiscard]] Result<qos::CostModel> RunLiveCalibration(Dispatcher* dispatcher,
                                                        VolumeManager* volumes,
                                                        const qos::CalibrateOptions& options,
                                                        qos::CalibrationReport* report);

}  // namespace spd
