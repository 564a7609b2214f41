#include "common/unix_socket.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace spd {

Result<int> BindUnixSocket(const std::string& path, uint32_t mode, int gid, std::string_view what) {
  const std::string w(what);
  sockaddr_un sa{};
  if (path.size() >= sizeof sa.sun_path)
    return InvalidArgument(w + " path too long (at most " + std::to_string(sizeof sa.sun_path - 1) +
                           " bytes): " + path);
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return FailedPrecondition(w + " " + path + " exists and is not a socket");
    unlink(path.c_str());  // a stale one from an earlier run (the pool lock says we own the dir)
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno(errno, w + ": socket");
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  // Created with the final mode at once (no window in which it is more open).
  const mode_t old = umask(static_cast<mode_t>(~mode & 0777));
  const int b = bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  umask(old);
  Status s;
  if (b < 0) {
    s = Status::FromErrno(errno, w + ": bind " + path);
    close(fd);
    return s;
  }
  if (chmod(path.c_str(), mode) < 0) {
    s = Status::FromErrno(errno, w + ": chmod " + path);
  } else if (gid >= 0 && chown(path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(gid)) < 0) {
    s = Status::FromErrno(errno, w + ": chgrp " + path);
  }
  if (!s.ok()) {
    close(fd);
    unlink(path.c_str());
    return s;
  }
  return fd;
}

Result<uint32_t> ParseSocketMode(std::string_view flag, const std::string& text) {
  char* end = nullptr;
  const unsigned long mode = std::strtoul(text.c_str(), &end, 8);
  if (text.empty() || *end != '\0' || mode > 0777)
    return InvalidArgument(std::string(flag) +
                           " wants octal permission bits such as 0600 or 0660, got '" + text + "'");
  return static_cast<uint32_t>(mode);
}

Result<int> ParseSocketGroup(std::string_view flag, const std::string& text) {
  char* end = nullptr;
  const unsigned long gid = std::strtoul(text.c_str(), &end, 10);
  if (!text.empty() && *end == '\0') return static_cast<int>(gid);
  if (const group* gr = getgrnam(text.c_str())) return static_cast<int>(gr->gr_gid);
  return InvalidArgument(std::string(flag) + ": no group '" + text + "'");
}

}  // namespace spd
