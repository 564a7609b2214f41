#include "control/control_listener.h"

#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <vector>

#include "common/counters.h"
#include "common/log.h"
#include "common/os_util.h"
#include "common/unix_socket.h"
#include "reactor/reactor.h"

namespace spd {
namespace {

Counter accepted_total("spd_control_connections_accepted_total",
                       "Control-socket connections handed to gRPC (they had sent their first "
                       "bytes).");
Counter timed_out_total("spd_control_connections_timed_out_total",
                        "Control-socket connections closed because they sent nothing within "
                        "the first-bytes timeout.");
Counter evicted_total("spd_control_connections_evicted_total",
                      "Silent control-socket connections closed to make room for a new one "
                      "(more than kPendingMax pending).");
Counter accept_errors_total("spd_control_accept_errors_total",
                            "accept() or SO_PEERCRED failures on the control socket.");

}  // namespace

ControlListener::~ControlListener() { Stop(); }

Status ControlListener::Start(const std::string& path, uint32_t mode, int gid,
                              grpc::Server* server) {
  SPD_ASSIGN_OR_RETURN(listen_fd_, BindUnixSocket(path, mode, gid, "control socket"));
  server_ = server;
  path_ = path;
  if (listen(listen_fd_, 128) < 0) return Status::FromErrno(errno, "listen " + path);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) return Status::FromErrno(errno, "eventfd");
  thread_ = std::thread([this] {
    NameThisThread("spd-ctl-listen");
    Loop();
  });
  return Status::Ok();
}

void ControlListener::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t w = write(stop_fd_, &one, sizeof one);
    (void)w;
    thread_.join();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    unlink(path_.c_str());
  }
  if (stop_fd_ >= 0) {
    close(stop_fd_);
    stop_fd_ = -1;
  }
}

std::optional<PeerCred> ControlListener::PeerOf(const std::string& peer) const {
  if (peer.rfind("fd:", 0) != 0) return std::nullopt;
  int fd = -1;
  try {
    fd = std::stoi(peer.substr(3));
  } catch (...) {
    return std::nullopt;
  }
  std::lock_guard<std::mutex> l(mu_);
  auto it = peers_.find(fd);
  if (it == peers_.end()) return std::nullopt;
  return it->second;
}

void ControlListener::Handoff(int fd) {
  // gRPC's fd transport wants a blocking-agnostic socket; it sets O_NONBLOCK itself.
  accepted_total.Add();
  grpc::AddInsecureChannelFromFd(server_, fd);
}

void ControlListener::Loop() {
  struct Pending {
    int fd;
    uint64_t deadline_ns;
  };
  std::deque<Pending> pending;
  std::vector<pollfd> pfds;
  for (;;) {
    pfds.clear();
    pfds.push_back({stop_fd_, POLLIN, 0});
    pfds.push_back({listen_fd_, POLLIN, 0});
    for (const Pending& p : pending) pfds.push_back({p.fd, POLLIN, 0});
    int timeout = -1;
    const uint64_t now = MonotonicNs();
    if (!pending.empty()) {
      const uint64_t d = pending.front().deadline_ns;  // FIFO: the oldest is due first
      timeout = d <= now ? 0 : static_cast<int>((d - now) / 1'000'000 + 1);
    }
    const int n = poll(pfds.data(), pfds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      SPD_LOG_ERROR("control listener: poll: %s", strerror(errno));
      break;
    }
    if (pfds[0].revents) break;
    // Pending connections that spoke (or hung up: gRPC sees that itself) go to gRPC.
    std::deque<Pending> still;
    for (size_t i = 0; i < pending.size(); ++i) {
      if (pfds[i + 2].revents) {
        Handoff(pending[i].fd);
      } else if (pending[i].deadline_ns <= MonotonicNs()) {
        timed_out_total.Add();
        close(pending[i].fd);
      } else {
        still.push_back(pending[i]);
      }
    }
    pending.swap(still);
    if (pfds[1].revents) {
      for (;;) {
        const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
          if (errno != EAGAIN && errno != EINTR) accept_errors_total.Add();
          break;
        }
        Result<PeerCred> cred = UnixPeerCred(fd);
        if (!cred.ok()) {
          accept_errors_total.Add();
          close(fd);
          continue;
        }
        {
          std::lock_guard<std::mutex> l(mu_);
          peers_[fd] = *cred;
        }
        if (pending.size() >= kPendingMax) {
          evicted_total.Add();
          close(pending.front().fd);
          pending.pop_front();
        }
        pending.push_back({fd, MonotonicNs() + kFirstBytesTimeoutMs * 1'000'000ull});
      }
    }
  }
  for (const Pending& p : pending) close(p.fd);
}

}  // namespace spd
