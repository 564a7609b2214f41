// Small file helpers shared by components that keep state in files of their own.
//
// Thread-safety: reentrant (no shared state).
#pragma once

#include <string>

#include "common/status.h"

namespace spd {

// Replaces `path` whole with `text`: a temporary file beside it, written, fsynced, renamed over
// `path`, and the directory fsynced, so that a crash leaves the old file or the new one.
Status WriteFileAtomic(const std::string& path, const std::string& text, int mode = 0644);
// The whole file; kNotFound when it does not exist.
Result<std::string> ReadFileText(const std::string& path);
// The first line of a (sysfs or small state) file without its trailing blanks; "" when the
// file cannot be read.
std::string FirstLine(const std::string& path);

}  // namespace spd
