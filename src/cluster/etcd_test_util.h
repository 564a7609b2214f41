// Test helpers for the etcd client: a real etcd process of the test's own (on free loopback
// ports, a data directory under /tmp, stopped by its pid), a TCP listener that never answers,
// and bounded waits.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/etcd_client.h"

extern char** environ;

namespace spd::etcd_test {

using namespace std::chrono_literals;

// etcd's path from $PATH, or "" when it is not installed.
inline std::string FindEtcd() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/usr/sbin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string p = (dir.empty() ? "." : dir) + "/etcd";
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

inline const char* kNoEtcd =
    "etcd is not installed (no etcd in PATH): run scripts/setup.sh, which installs Debian's "
    "etcd-server and etcd-client";

// A loopback port nobody listens on right now (bound to port 0, then closed).
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

// Polls `cond` every 20 ms until it holds or `limit` passes; whether it held.
inline bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(20ms);
  }
}

// One etcd member of a one-member cluster, all of it under a directory of its own.
class EtcdProcess {
 public:
  EtcdProcess() {
    char tmpl[] = "/tmp/etcd-test-XXXXXX";
    const char* d = mkdtemp(tmpl);
    dir_ = d != nullptr ? d : "";
    client_port_ = FreePort();
    peer_port_ = FreePort();
  }
  ~EtcdProcess() {
    Stop();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(client_port_); }
  pid_t pid() const { return pid_; }

  // Starts etcd (again, on the same data directory and ports after Stop) and waits until it
  // answers a read, for at most `limit`. An error string, or "" on success.
  std::string Start(std::chrono::milliseconds limit = 30s) {
    const std::string etcd = FindEtcd();
    if (etcd.empty()) return kNoEtcd;
    if (dir_.empty() || client_port_ < 0 || peer_port_ < 0) return "no temp dir or free port";
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> args = {etcd,
                                     "--name",
                                     "t",
                                     "--data-dir",
                                     dir_ + "/data",
                                     "--listen-client-urls",
                                     endpoint(),
                                     "--advertise-client-urls",
                                     endpoint(),
                                     "--listen-peer-urls",
                                     peer,
                                     "--initial-advertise-peer-urls",
                                     peer,
                                     "--initial-cluster",
                                     "t=" + peer};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = dir_ + "/etcd.log";
    pid_ = fork();
    if (pid_ < 0) {
      pid_ = -1;
      return std::string("fork: ") + std::strerror(errno);
    }
    if (pid_ == 0) {                     // the child: only async-signal-safe calls until exec
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives a test that crashed
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      execve(etcd.c_str(), argv.data(), environ);
      _exit(127);
    }
    EtcdOptions o;
    o.endpoints = {endpoint()};
    o.connect_timeout = 200ms;
    o.request_timeout = 500ms;
    auto probe = EtcdClient::Create(o);
    if (!probe.ok()) return probe.status().ToString();
    std::string why;
    const bool up = WaitFor(
        [&] {
          int status = 0;
          if (waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = -1;
            why = "etcd exited at start (status " + std::to_string(status) + "): " + LogTail();
            return true;
          }
          return (*probe)->Get("etcd-test-probe").ok();
        },
        limit);
    if (!why.empty()) return why;
    if (!up) return "etcd did not answer within " + std::to_string(limit.count()) + " ms";
    return "";
  }

  // Removes the data directory (stopped): the next Start is a new cluster at revision 1.
  void WipeData() {
    std::error_code ec;
    std::filesystem::remove_all(dir_ + "/data", ec);
  }

  // SIGTERM by pid, waits (bounded) for the exit; SIGKILL if it does not come.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    const bool exited = WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, 15s);
    if (!exited) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }

  std::string LogTail() const {
    std::ifstream f(dir_ + "/etcd.log");
    std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
  }

 private:
  std::string dir_;
  int client_port_ = -1;
  int peer_port_ = -1;
  pid_t pid_ = -1;
};

// A TCP listener on a loopback port that accepts connections and never answers.
class SilentServer {
 public:
  SilentServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && listen(fd_, 16) == 0 &&
        getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 50) == 1) {
          const int c = accept(fd_, nullptr, nullptr);
          if (c >= 0) {
            held_.push_back(c);
            accepted_.fetch_add(1);
          }
        }
      }
    });
  }
  ~SilentServer() {
    stop_.store(true);
    thread_.join();
    for (int c : held_) close(c);
    close(fd_);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  int accepted() const { return accepted_.load(); }

 private:
  int fd_ = -1;
  int port_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> held_;  // only the accepting thread touches it until the join
  std::thread thread_;
};

// One etcd for the tests that do not stop it, started by the first that needs it and stopped
// (by pid) when the binary exits.
inline EtcdProcess* SharedEtcd(std::string* error) {
  static std::unique_ptr<EtcdProcess> p;
  static std::string start_error;
  if (!p) {
    p = std::make_unique<EtcdProcess>();
    start_error = p->Start();
  }
  *error = start_error;
  return start_error.empty() ? p.get() : nullptr;
}

inline std::unique_ptr<EtcdClient> MakeClient(std::vector<std::string> endpoints,
                                              std::chrono::milliseconds request_timeout = 3000ms) {
  EtcdOptions o;
  o.endpoints = std::move(endpoints);
  o.request_timeout = request_timeout;
  auto c = EtcdClient::Create(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

// A test with the shared etcd and a client of it (FAILs, not skips, without etcd).
class SharedEtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(FindEtcd().empty()) << kNoEtcd;
    std::string error;
    etcd_ = SharedEtcd(&error);
    ASSERT_NE(etcd_, nullptr) << "etcd did not start: " << error;
    client_ = MakeClient({etcd_->endpoint()});
    ASSERT_NE(client_, nullptr);
  }
  EtcdProcess* etcd_ = nullptr;
  std::unique_ptr<EtcdClient> client_;
};

}  // namespace spd::etcd_test
