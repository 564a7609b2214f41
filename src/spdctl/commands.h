// spdctl's policy commands (tenant, class, policy) and apply/diff: added to the app by
// AddPolicyCommands; each sets *rc. `client` makes the connection on first use.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "spdctl/client.h"

namespace spd::ctl {

void AddPolicyCommands(CLI::App* app, const std::function<Client&()>& client, int* rc);

}  // namespace spd::ctl
