// ControlListener: the control socket's accept loop. gRPC C++ does not tell a handler who is on
// the other end of a unix socket, so the daemon accepts each connection itself, reads the
// caller's credentials (SO_PEERCRED: uid, gid, pid as of connect), and hands the connection to
// gRPC (grpc::AddInsecureChannelFromFd). gRPC names such a connection "fd:N"
// (ServerContext::peer()); PeerOf("fd:N") answers whose it is.
//
// Why the fd number is a safe key: gRPC closes a connection's fd only when its transport is
// destroyed, which waits for every call on it; so while a handler runs, its fd cannot have been
// closed and reused by a newer connection. The entry is replaced when the number is reused.
//
// Limits: a connection is handed to gRPC only once it has sent its first bytes; until then it is
// "pending", at most kPendingMax at once (a new one evicts the oldest, so silent sockets cannot
// keep real clients out) and for at most kFirstBytesTimeoutMs (then closed). Counted in
// spd_control_connections_{accepted,timed_out,evicted}_total.
//
// Thread-safety: Start/Stop from one thread; PeerOf from any. One thread of its own, asleep
// in poll() when nothing happens.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/peer_uid.h"  // PeerCred
#include "common/status.h"

namespace grpc {
class Server;
}

namespace spd {

class ControlListener {
 public:
  static constexpr size_t kPendingMax = 64;
  static constexpr int kFirstBytesTimeoutMs = 5000;

  ControlListener() = default;
  ~ControlListener();  // Stop()
  ControlListener(const ControlListener&) = delete;
  ControlListener& operator=(const ControlListener&) = delete;

  // Binds `path` (BindUnixSocket: a stale socket file is replaced, anything else there is an
  // error; mode and group, gid -1: unchanged), listens, and starts the thread.
  [[nodiscard]] Status Start(const std::string& path, uint32_t mode, int gid, grpc::Server* server);
  // Stops the thread, closes the listening socket and the pending connections, removes the
  // socket file. Connections already handed to gRPC are gRPC's.
  void Stop();

  std::optional<PeerCred> PeerOf(const std::string& peer) const;

 private:
  void Loop();
  void Handoff(int fd);

  std::string path_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  grpc::Server* server_ = nullptr;
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<int, PeerCred> peers_;  // by fd, guarded by mu_
};

}  // namespace spd
