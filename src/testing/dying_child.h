// RunInDyingChild: runs a piece of a test in a child process that ends without running a
// destructor or an exit handler, as a killed process does (what it left in shared mappings and
// files stays; nothing is closed in order).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <functional>

namespace spd::testing {

// Returns what `fn` returned, or false when the child did not end by itself.
inline bool RunInDyingChild(const std::function<bool()>& fn) {
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) _exit(fn() ? 0 : 1);
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace spd::testing
