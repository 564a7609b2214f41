// The daemon's QoS scheduler (--qos on): its cost model found and loaded, its shards on the
// reactors that take connections.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "daemon/options.h"
#include "io/io_backend.h"
#include "qos/qos_scheduler.h"

namespace spd {

// nullptr (and OK) with --qos off. The cost model: --qos-cost-model FILE, else
// DATA_DIR/default.cost.json when it exists, else the sim's model (--backend sim), else the
// built-in default (logged: calibrate the device).
[[nodiscard]] Result<std::unique_ptr<qos::QosScheduler>> MakeQosScheduler(
    const DaemonOptions& o, const BackendOptions& bo, std::vector<Reactor*> reactors,
    std::function<void(const std::string&, const std::string&)> on_violation);

}  // namespace spd
