// spd2: the SP Driver 2.0 daemon. See `spd2 --help`.
#include <cstdio>

#include <cstring>

#include "daemon/check.h"
#include "daemon/daemon.h"
#include "daemon/options.h"

int main(int argc, char** argv) {
  if (argc >= 2 && !std::strcmp(argv[1], "check")) return spd::RunCheck(argc, argv);
  std::string help;
  auto options = spd::ParseDaemonOptions(argc, argv, &help);
  if (!options.ok()) {
    if (options.status().code() == spd::StatusCode::kCancelled) {
      std::fputs(help.c_str(), stdout);
      return 0;
    }
    std::fprintf(stderr, "spd2: %s\n", std::string(options.status().message()).c_str());
    std::fprintf(stderr, "Run 'spd2 --help' for usage.\n");
    return 2;
  }
  return spd::RunDaemon(options.value());
}
