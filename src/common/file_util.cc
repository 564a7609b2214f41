#include "common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace spd {
namespace {

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write " + path);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Status WriteFileAtomic(const std::string& path, const std::string& text, int mode) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  Status s = WriteAll(fd, text, tmp);
  if (s.ok() && fsync(fd) < 0) s = Status::FromErrno(errno, "fsync " + tmp);
  if (close(fd) < 0 && s.ok()) s = Status::FromErrno(errno, "close " + tmp);
  if (s.ok() && rename(tmp.c_str(), path.c_str()) < 0)
    s = Status::FromErrno(errno, "rename " + tmp + " to " + path);
  if (!s.ok()) {
    unlink(tmp.c_str());
    return s;
  }
  const std::string dir = DirOf(path);
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::FromErrno(errno, "open " + dir);
  if (fsync(dfd) < 0) s = Status::FromErrno(errno, "fsync " + dir);
  close(dfd);
  return s;
}

Result<std::string> ReadFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (access(path.c_str(), F_OK) != 0 && errno == ENOENT)
      return Status(StatusCode::kNotFound, "no file " + path);
    return Status::FromErrno(errno, "open " + path);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::FromErrno(EIO, "read " + path);
  return ss.str();
}

std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == ' ' || line.back() == '\n')) line.pop_back();
  return line;
}

}  // namespace spd
