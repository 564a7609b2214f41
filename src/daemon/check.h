// `spd2 check POOL [--repair]`: the offline pool checker.
#pragma once

namespace spd {

// argv[1] is "check". Returns the process exit code.
int RunCheck(int argc, char** argv);

}  // namespace spd
