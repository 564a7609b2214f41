#include "replica/replica_set.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/counters.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "replica/replica_wire.h"

namespace spd {
namespace {

namespace rw = replica_wire;

Counter link_failures_total("spd_replication_link_failures_total",
                            "Replicas that stopped counting for a volume (connection, error, "
                            "timeout, out of sync at the hello)");
Counter marks_failed_total("spd_replication_marks_failed_total",
                           "Out-of-sync marks that could not be made durable (retried)");
Counter held_failed_total("spd_replication_held_failed_total",
                          "Requests failed with EIO after waiting hold_timeout_ms for an "
                          "out-of-sync mark");
Counter deposed_total("spd_replication_deposed_total",
                      "Volumes whose primary learned from a replica that a newer one exists");
Counter messages_total("spd_replication_messages_total",
                       "Replication messages sent to replicas (writes, barriers)");

constexpr uint64_t kTickNs = 100'000'000;

bool SplitAddress(const std::string& a, sockaddr_in* sa) {
  const size_t colon = a.rfind(':');
  if (colon == std::string::npos) return false;
  *sa = {};
  sa->sin_family = AF_INET;
  const std::string port = a.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p <= 0 || p > 65535) return false;
  sa->sin_port = htons(static_cast<uint16_t>(p));
  return inet_pton(AF_INET, a.substr(0, colon).c_str(), &sa->sin_addr) == 1;
}

// Waits for fd to be ready for `events` until `deadline_ns`: whether it is.
bool WaitFd(int fd, short events, uint64_t deadline_ns) {
  for (;;) {
    const uint64_t now = MonotonicNs();
    if (now >= deadline_ns) return false;
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>((deadline_ns - now) / 1'000'000 + 1));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

bool IoAll(int fd, void* buf, size_t n, bool out, uint64_t deadline_ns) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t done = 0;
  while (done < n) {
    if (!WaitFd(fd, out ? POLLOUT : POLLIN, deadline_ns)) return false;
    const ssize_t r = out ? send(fd, p + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT)
                          : recv(fd, p + done, n - done, MSG_DONTWAIT);
    if (r > 0) {
      done += static_cast<size_t>(r);
    } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
      return false;
    }
  }
  return true;
}

}  // namespace

struct ReplicaSet::Link {
  ReplicaSet* set = nullptr;
  size_t index = 0;
  ReplicaTarget target;
  ReplicaSet::LinkInfo info;  // guarded by set->info_mu_ for Links(); written on the owner
  int fd = -1;
  struct Watch : Completion {
    Link* link = nullptr;
  } rx, tx;
  bool rx_armed = false;
  bool tx_armed = false;
  bool closed = false;         // the socket is shut down; waiting for the final poll events
  bool mark_inflight = false;  // its out-of-sync mark was asked for, no answer yet
  // Sending: the next seq to send and how much of its message went.
  uint64_t send_seq = 0;
  size_t send_off = 0;
  uint8_t ack_buf[rw::kHeaderBytes];
  size_t ack_got = 0;
  // The connecting thread's result, handed over by a posted task.
  std::thread connector;
  struct Connected : Task {
    Link* link = nullptr;
  } connected;
  bool connected_pending = false;  // posted, not yet run
  int conn_fd = -1;
  rw::HelloReplyBody reply;
  std::string conn_error;

  uint32_t bit() const { return 1u << index; }
  void SetState(LinkState s, const std::string& detail) {
    std::lock_guard<std::mutex> l(set->info_mu_);
    info.state = s;
    info.detail = detail;
  }

  // The connecting thread: connect, hello, reply; each within connect_timeout_ms.
  void Connect(rw::HelloBody hello, uint64_t epoch, uint64_t timeout_ms) {
    sockaddr_in sa;
    int fd = -1;
    std::string err;
    if (!SplitAddress(target.address, &sa)) {
      err = "bad address '" + target.address + "' (want IPv4 HOST:PORT)";
    } else if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
      err = std::string("socket: ") + std::strerror(errno);
    } else {
      const uint64_t deadline = MonotonicNs() + timeout_ms * 1'000'000;
      int rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
      if (rc < 0 && errno == EINPROGRESS) {
        int soerr = ETIMEDOUT;
        if (WaitFd(fd, POLLOUT, deadline)) {
          socklen_t len = sizeof soerr;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        }
        rc = soerr == 0 ? 0 : -1;
        errno = soerr;
      }
      if (rc < 0) {
        err = std::string("connect: ") + std::strerror(errno);
      } else {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        rw::Header h;
        h.type = static_cast<uint16_t>(rw::Type::kHello);
        h.epoch = epoch;
        h.length = sizeof hello;
        h.crc = Crc32c(0, &hello, sizeof hello);
        uint8_t b[rw::kHeaderBytes];
        rw::EncodeHeader(h, b);
        const uint64_t hello_deadline = MonotonicNs() + timeout_ms * 1'000'000;
        rw::Header rh;
        if (!IoAll(fd, b, sizeof b, true, hello_deadline) ||
            !IoAll(fd, &hello, sizeof hello, true, hello_deadline) ||
            !IoAll(fd, b, sizeof b, false, hello_deadline)) {
          err = "no hello reply within " + std::to_string(timeout_ms) + " ms";
        } else if (std::string bad = rw::DecodeHeader(b, 0, &rh);
                   !bad.empty() || rh.type != static_cast<uint16_t>(rw::Type::kHelloReply)) {
          err = "bad hello reply: " + (bad.empty() ? std::string("wrong type") : bad);
        } else if (!IoAll(fd, &reply, sizeof reply, false, hello_deadline) ||
                   Crc32c(0, &reply, sizeof reply) != rh.crc) {
          err = "hello reply body lost or corrupt";
        }
      }
    }
    if (!err.empty() && fd >= 0) {
      close(fd);
      fd = -1;
    }
    conn_fd = fd;
    conn_error = err;
    set->owner_->Post(&connected);
  }
};

namespace {

using Link = ReplicaSet::Link;

void LinkRead(Link* l);
void LinkSend(Link* l);

void OnLinkReadable(Completion* c, int32_t, uint32_t) {
  Link* l = static_cast<Link::Watch*>(c)->link;
  if (l->set->owner_->engine() == ReactorEngine::kUring) l->rx_armed = false;
  if (l->closed) return;
  LinkSend(l);  // epoll: writability arrives here too
  if (!l->closed) LinkRead(l);
}

void OnLinkWritable(Completion* c, int32_t, uint32_t) {
  Link* l = static_cast<Link::Watch*>(c)->link;
  l->tx_armed = false;
  if (!l->closed) LinkSend(l);
}

}  // namespace

const char* ReplicaSet::LinkStateName(LinkState s) {
  switch (s) {
    case LinkState::kConnecting:
      return "connecting";
    case LinkState::kInSync:
      return "in-sync";
    case LinkState::kOutOfSync:
      return "out-of-sync";
    case LinkState::kDeposedUs:
      return "deposed-us";
  }
  return "unknown";
}

ReplicaSet::ReplicaSet(Dispatcher* d, Volume* v, ReplicaSetOptions o)
    : owner_(v->owner()), dispatcher_(d), volume_(v), o_(std::move(o)) {}

Result<std::unique_ptr<ReplicaSet>> ReplicaSet::Start(Dispatcher* d, Volume* v,
                                                      ReplicaSetOptions o) {
  if (o.replicas.size() > kReplicasMax)
    return InvalidArgument("at most " + std::to_string(kReplicasMax) + " replicas");
  if (o.inflight_max == 0 || (o.inflight_max & (o.inflight_max - 1)) != 0)
    return InvalidArgument("inflight_max must be a power of two");
  if (o.volume.empty() || o.volume.size() > 64) return InvalidArgument("volume name");
  std::unique_ptr<ReplicaSet> s(new ReplicaSet(d, v, std::move(o)));
  s->table_.assign(s->o_.inflight_max, nullptr);
  s->mask_ = s->o_.inflight_max - 1;
  s->tick_.set = s.get();
  s->tick_.fn = [](Timer* t) { static_cast<TickTimer*>(t)->set->OnTick(); };
  rw::HelloBody hello;
  std::memcpy(hello.volume, s->o_.volume.data(), s->o_.volume.size());
  hello.size_bytes = v->size_bytes();
  hello.base_epoch = s->o_.base.epoch;
  hello.base_seq = s->o_.base.seq;
  hello.write_bytes_max = 1u << 20;
  for (size_t i = 0; i < s->o_.replicas.size(); ++i) {
    auto l = std::make_unique<Link>();
    l->set = s.get();
    l->index = i;
    l->target = s->o_.replicas[i];
    l->info.name = l->target.name;
    l->rx.link = l.get();
    l->rx.fn = &OnLinkReadable;
    l->tx.link = l.get();
    l->tx.fn = &OnLinkWritable;
    l->connected.link = l.get();
    l->connected.fn = [](Task* t) {
      Link* k = static_cast<Link::Connected*>(t)->link;
      k->connected_pending = false;
      ReplicaSet* set = k->set;
      if (set->stopping_) {
        if (k->conn_fd >= 0) close(k->conn_fd);
        return;
      }
      if (!k->conn_error.empty()) return set->FailLink(k, LinkState::kOutOfSync, k->conn_error);
      k->fd = k->conn_fd;
      const auto status = static_cast<rw::HelloStatus>(k->reply.status);
      if (status == rw::HelloStatus::kStaleEpoch)
        return set->FailLink(k, LinkState::kDeposedUs,
                             "the replica follows epoch " + std::to_string(k->reply.fence_epoch));
      if (status != rw::HelloStatus::kInSync)
        return set->FailLink(k, LinkState::kOutOfSync,
                             std::string("hello: ") + rw::HelloStatusName(status));
      k->SetState(LinkState::kInSync, "");
      k->send_seq = set->next_seq_;
      if (!set->owner_->WatchOnce(k->fd, &k->rx).ok())
        return set->FailLink(k, LinkState::kOutOfSync, "cannot watch the socket");
      k->rx_armed = set->owner_->engine() == ReactorEngine::kUring;
      set->CheckSettled();
    };
    l->connected_pending = true;
    Link* raw = l.get();
    const uint64_t epoch = s->o_.epoch;
    const uint64_t timeout = s->o_.connect_timeout_ms;
    l->connector =
        std::thread([raw, hello, epoch, timeout] { raw->Connect(hello, epoch, timeout); });
    s->links_.push_back(std::move(l));
  }
  s->tick_armed_ = true;
  s->owner_->ArmTimer(&s->tick_, MonotonicNs() + kTickNs);
  s->CheckSettled();
  return s;
}

ReplicaSet::~ReplicaSet() { JoinThreads(); }

void ReplicaSet::Close() {
  if (stopping_) return;
  stopping_ = true;
  if (tick_armed_) owner_->CancelTimer(&tick_);
  tick_armed_ = false;
  // Nothing more is acknowledged: what waits fails, what runs locally fails when it ends.
  while (wait_head_ != nullptr) {
    IoRequest* req = wait_head_;
    wait_head_ = req->repl_next;
    req->result = -EIO;
    Dispatcher::FinishReplicated(req);
  }
  wait_tail_ = nullptr;
  for (IoRequest* r : table_)
    if (r != nullptr) {
      r->repl_waiting = 0;
      r->repl_result = -EIO;
    }
  CompleteAll();
  for (auto& l : links_) {
    if (l->fd >= 0 && !l->closed) {
      l->closed = true;
      shutdown(l->fd, SHUT_RDWR);
      if (owner_->engine() != ReactorEngine::kUring) {
        owner_->Unwatch(l->fd, &l->rx);
        l->rx_armed = l->tx_armed = false;
      }
    }
  }
}

void ReplicaSet::JoinThreads() {
  for (auto& l : links_)
    if (l->connector.joinable()) l->connector.join();
}

void ReplicaSet::Attach() { volume_->replica_hook.store(static_cast<ReplicaHook*>(this)); }

void ReplicaSet::Detach() { volume_->replica_hook.store(nullptr); }

void ReplicaSet::Stop() {
  Close();
  JoinThreads();
  // The posted hand-overs and the final poll events must come back before the links go.
  for (int i = 0; i < 100000; ++i) {
    bool busy = false;
    for (auto& l : links_) busy |= l->connected_pending || l->rx_armed || l->tx_armed;
    if (!busy) break;
    owner_->RunOnce(1'000'000);
  }
  for (auto& l : links_)
    if (l->fd >= 0) {
      close(l->fd);
      l->fd = -1;
    }
}

std::vector<ReplicaSet::LinkInfo> ReplicaSet::Links() const {
  std::lock_guard<std::mutex> g(info_mu_);
  std::vector<LinkInfo> out;
  for (const auto& l : links_) out.push_back(l->info);
  return out;
}

uint32_t ReplicaSet::InSyncBits() const {
  uint32_t bits = 0;
  for (const auto& l : links_)
    if (l->info.state == LinkState::kInSync) bits |= l->bit();
  return bits;
}

void ReplicaSet::CheckSettled() {
  if (settled_) return;
  for (const auto& l : links_)
    if (l->info.state == LinkState::kConnecting) return;
  settled_ = true;
  AdmitWaiting();
}

// ---- requests ------------------------------------------------------------------------------

void ReplicaSet::Start(IoRequest* req) {
  req->repl_next = nullptr;
  req->repl_result = 0;
  if (stopping_) {  // closed between the dispatcher's look at the hook and now
    req->result = -EIO;
    return Dispatcher::FinishReplicated(req);
  }
  if (!settled_ || wait_head_ != nullptr || table_[next_seq_ & mask_] != nullptr) {
    if (wait_tail_) {
      wait_tail_->repl_next = req;
    } else {
      wait_head_ = req;
    }
    wait_tail_ = req;
    return;
  }
  Admit(req);
}

void ReplicaSet::AdmitWaiting() {
  while (settled_ && !stopping_ && wait_head_ != nullptr && table_[next_seq_ & mask_] == nullptr) {
    IoRequest* req = wait_head_;
    wait_head_ = req->repl_next;
    if (wait_head_ == nullptr) wait_tail_ = nullptr;
    Admit(req);
  }
}

void ReplicaSet::Admit(IoRequest* req) {
  const uint64_t seq = next_seq_++;
  req->repl_seq = seq;
  table_[seq & mask_] = req;
  req->repl_local_pending = true;
  req->repl_deadline_ns = MonotonicNs() + o_.ack_timeout_ms * 1'000'000;
  req->repl_waiting = deposed_ ? 0 : InSyncBits();
  rw::Header h;
  h.epoch = o_.epoch;
  h.seq = seq;
  switch (req->op) {
    case RequestOp::kWrite:
      h.type = static_cast<uint16_t>(rw::Type::kWrite);
      h.length = req->length_bytes;
      if (req->repl_waiting != 0) h.crc = Crc32c(0, req->buf, req->length_bytes);
      break;
    case RequestOp::kWriteZeroes:
      h.type = static_cast<uint16_t>(rw::Type::kWriteZeroes);
      h.length = req->length_bytes;
      if (req->flags & kReqNoHole) h.flags |= rw::kFlagNoHole;
      break;
    case RequestOp::kDiscard:
      h.type = static_cast<uint16_t>(rw::Type::kDiscard);
      h.length = req->length_bytes;
      break;
    default:  // flush
      h.type = static_cast<uint16_t>(rw::Type::kBarrier);
      break;
  }
  if (req->op != RequestOp::kFlush) {
    h.offset = req->offset_bytes;
    if (req->flags & kReqFua) h.flags |= rw::kFlagFua;
  }
  rw::EncodeHeader(h, req->repl_hdr);
  if (req->repl_waiting != 0) PumpLinks();
  dispatcher_->ExecuteLocal(req);
}

void ReplicaSet::LocalDone(IoRequest* req) {
  req->repl_local_pending = false;
  if (req->result < 0 && req->repl_result == 0) req->repl_result = req->result;
  MaybeComplete(req);
}

void ReplicaSet::MaybeComplete(IoRequest* req) {
  if (req->repl_local_pending || req->repl_waiting != 0) return;
  if (!stopping_) {
    if (Holding()) return;
    if (o_.lease_valid && !deposed_ && !o_.lease_valid()) return;  // the tick tries again
  }
  table_[req->repl_seq & mask_] = nullptr;
  req->result = deposed_ ? -EIO : req->repl_result;
  Dispatcher::FinishReplicated(req);
  AdmitWaiting();
}

void ReplicaSet::CompleteAll() {
  for (IoRequest*& r : table_)
    if (r != nullptr) MaybeComplete(r);
}

// ---- links ---------------------------------------------------------------------------------

void ReplicaSet::PumpLinks() {
  for (auto& l : links_)
    if (l->info.state == LinkState::kInSync && !l->closed) LinkSend(l.get());
}

namespace {

void LinkSend(Link* l) {
  ReplicaSet* set = l->set;
  (void)set;
  while (!l->closed && l->send_seq < l->set->next_seq_) {
    IoRequest* req = l->set->table_[l->send_seq & l->set->mask_];
    if (req == nullptr || req->repl_seq != l->send_seq || !(req->repl_waiting & l->bit())) {
      ++l->send_seq;  // nothing for this link at this number
      l->send_off = 0;
      continue;
    }
    const size_t payload = req->op == RequestOp::kWrite ? req->length_bytes : 0;
    const size_t total = rw::kHeaderBytes + payload;
    iovec iov[2];
    int n = 0;
    if (l->send_off < rw::kHeaderBytes) {
      iov[n++] = {req->repl_hdr + l->send_off, rw::kHeaderBytes - l->send_off};
      if (payload) iov[n++] = {req->buf, payload};
    } else {
      iov[n++] = {static_cast<uint8_t*>(req->buf) + (l->send_off - rw::kHeaderBytes),
                  total - l->send_off};
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(n);
    const ssize_t r = sendmsg(l->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!l->tx_armed && l->set->owner_->engine() == ReactorEngine::kUring &&
            l->set->owner_->ArmWritable(l->fd, &l->tx).ok())
          l->tx_armed = true;
        return;
      }
      return l->set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                              std::string("send: ") + std::strerror(errno));
    }
    l->send_off += static_cast<size_t>(r);
    if (l->send_off == total) {
      messages_total.Add();
      ++l->send_seq;
      l->send_off = 0;
    }
  }
}

void LinkRead(Link* l) {
  ReplicaSet* set = l->set;
  for (;;) {
    const ssize_t r =
        recv(l->fd, l->ack_buf + l->ack_got, rw::kHeaderBytes - l->ack_got, MSG_DONTWAIT);
    if (r == 0) return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync, "the replica closed");
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN)
        return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                             std::string("recv: ") + std::strerror(errno));
      break;
    }
    l->ack_got += static_cast<size_t>(r);
    if (l->ack_got < rw::kHeaderBytes) continue;
    l->ack_got = 0;
    rw::Header h;
    const std::string bad = rw::DecodeHeader(l->ack_buf, 0, &h);
    if (!bad.empty() || h.type != static_cast<uint16_t>(rw::Type::kAck))
      return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                           "bad message from the replica: " + (bad.empty() ? "not an ack" : bad));
    if (h.result == -ESTALE)
      return set->FailLink(l, ReplicaSet::LinkState::kDeposedUs,
                           "the replica follows a newer epoch");
    IoRequest* req = set->table_[h.seq & set->mask_];
    if (req == nullptr || req->repl_seq != h.seq || !(req->repl_waiting & l->bit()))
      return set->FailLink(l, ReplicaSet::LinkState::kOutOfSync,
                           "ack for a message not in flight: " + std::to_string(h.seq));
    if (h.result != 0)
      return set->FailLink(
          l, ReplicaSet::LinkState::kOutOfSync,
          "the replica failed message " + std::to_string(h.seq) + ": " + std::strerror(-h.result));
    {
      std::lock_guard<std::mutex> g(set->info_mu_);
      ++l->info.acked;
    }
    req->repl_waiting &= ~l->bit();
    set->MaybeComplete(req);
    if (l->closed) return;
  }
  if (set->owner_->engine() == ReactorEngine::kUring && !l->rx_armed && !l->closed) {
    if (set->owner_->WatchOnce(l->fd, &l->rx).ok()) {
      l->rx_armed = true;
    } else {
      set->FailLink(l, ReplicaSet::LinkState::kOutOfSync, "cannot watch the socket");
    }
  }
}

}  // namespace

void ReplicaSet::FailLink(Link* l, LinkState state, const std::string& why) {
  if (l->info.state == LinkState::kOutOfSync || l->info.state == LinkState::kDeposedUs) return;
  link_failures_total.Add();
  SPD_LOG_WARN("replication: volume %s: replica %s (%s) %s: %s", o_.volume.c_str(),
               l->target.name.c_str(), l->target.address.c_str(), LinkStateName(state),
               why.c_str());
  l->SetState(state, why);
  if (l->fd >= 0 && !l->closed) {
    l->closed = true;
    shutdown(l->fd, SHUT_RDWR);  // an armed one-shot poll fires once more
    if (owner_->engine() != ReactorEngine::kUring) {
      owner_->Unwatch(l->fd, &l->rx);
      l->rx_armed = l->tx_armed = false;
    }
  }
  if (state == LinkState::kDeposedUs && !deposed_.exchange(true)) {
    deposed_total.Add();
    SPD_LOG_ERROR(
        "replication: volume %s: this primary (epoch %llu) is deposed; every write "
        "fails from now on",
        o_.volume.c_str(), static_cast<unsigned long long>(o_.epoch));
  }
  // Requests stop waiting for it; none completes until its mark is confirmed.
  for (IoRequest* r : table_)
    if (r != nullptr) r->repl_waiting &= ~l->bit();
  if (o_.mark_out_of_sync && state != LinkState::kDeposedUs) {
    marks_pending_ |= l->bit();
    AskMark(l);
  } else {
    std::lock_guard<std::mutex> g(info_mu_);
    l->info.marked = true;
  }
  CheckSettled();
  CompleteAll();
}

void ReplicaSet::AskMark(Link* l) {
  l->mark_inflight = true;
  o_.mark_out_of_sync(l->target.name, [this, l](bool ok) {
    // Any thread: hand the answer to the owner.
    struct MarkTask : Task {
      ReplicaSet* set;
      Link* link;
      bool ok;
    };
    auto* t = new MarkTask();
    t->set = this;
    t->link = l;
    t->ok = ok;
    t->fn = [](Task* x) {
      auto* m = static_cast<MarkTask*>(x);
      m->set->Marked(m->link, m->ok);
      delete m;
    };
    owner_->Post(t);
  });
}

void ReplicaSet::Marked(Link* l, bool ok) {
  l->mark_inflight = false;
  if (!ok) {
    // Asked again from the tick: the requests keep waiting, within hold_timeout_ms.
    marks_failed_total.Add();
    return;
  }
  marks_pending_ &= ~l->bit();
  {
    std::lock_guard<std::mutex> g(info_mu_);
    l->info.marked = true;
  }
  CompleteAll();
}

void ReplicaSet::OnTick() {
  tick_armed_ = false;
  if (stopping_) return;
  const uint64_t now = MonotonicNs();
  // Replicas that did not answer in time stop counting.
  for (IoRequest* r : table_) {
    if (r == nullptr || r->repl_waiting == 0 || now < r->repl_deadline_ns) continue;
    for (auto& l : links_)
      if (r->repl_waiting & l->bit())
        FailLink(l.get(), LinkState::kOutOfSync,
                 "no ack within " + std::to_string(o_.ack_timeout_ms) + " ms");
  }
  const bool lease_ok = !o_.lease_valid || o_.lease_valid();
  if (lease_ok && !Holding()) CompleteAll();  // requests held while the lease was not valid
  // Marks not confirmed, or no valid lease: requests held past hold_timeout_ms fail.
  if (Holding() || !lease_ok) {
    for (auto& l : links_)
      if ((marks_pending_ & l->bit()) && !l->mark_inflight) AskMark(l.get());
    for (IoRequest*& r : table_) {
      if (r == nullptr || r->repl_local_pending ||
          now < r->repl_deadline_ns + o_.hold_timeout_ms * 1'000'000)
        continue;
      held_failed_total.Add();
      IoRequest* req = r;
      r = nullptr;
      req->result = -EIO;
      Dispatcher::FinishReplicated(req);
    }
  }
  tick_armed_ = true;
  owner_->ArmTimer(&tick_, now + kTickNs);
}

}  // namespace spd
