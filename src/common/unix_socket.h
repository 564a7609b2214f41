// A listening unix stream socket's file, created with the permissions it keeps: the control
// socket (--control-socket-mode/--control-socket-group) and NBD's (--nbd-unix-mode/
// --nbd-unix-group) both come from here, and so do their flags' parsers.
//
// Thread-safety: BindUnixSocket changes the process's umask for the duration of bind(): call it
// at start-up, not while another thread creates files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace spd {

// Creates a unix stream socket (SOCK_CLOEXEC | SOCK_NONBLOCK), binds it at `path` with
// permission bits `mode` from the first moment (no window in which it is more open) and group
// `gid` (-1: the creating process's), and returns it, not yet listening. A stale socket file
// at `path` is replaced; anything else there is an error. `what` names the socket in errors
// ("control socket", "nbd: unix socket"). On failure nothing is left behind.
[[nodiscard]] Result<int> BindUnixSocket(const std::string& path, uint32_t mode, int gid,
                                         std::string_view what);

// The flags' values: octal permission bits ("0600", "660"; at most 0777), and a group given by
// name or number. kInvalidArgument naming `flag`.
[[nodiscard]] Result<uint32_t> ParseSocketMode(std::string_view flag, const std::string& text);
[[nodiscard]] Result<int> ParseSocketGroup(std::string_view flag, const std::string& text);

}  // namespace spd
