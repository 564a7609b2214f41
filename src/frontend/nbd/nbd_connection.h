// One NBD client connection: handshake, request parsing, dispatch to the volume, replies.
// Private to the NBD server.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dispatch/io_request.h"
#include "frontend/nbd/nbd_server.h"
#include "frontend/nbd/proto/nbd_handshake.h"
#include "frontend/nbd/proto/nbd_request.h"

namespace spd {

// A request slot: one NBD request from parse to the last byte of its reply. Preallocated per
// connection (conn_inflight_max of them); its data buffer is kept between requests.
struct NbdSlot {
  IoRequest io;  // what the dispatcher sees of this request
  nbd::Request req;
  NbdConnection* conn = nullptr;
  NbdSlot* next = nullptr;      // free list / send queue
  std::vector<Extent> extents;  // block status and read-hole scratch, reserved once

  uint8_t* buf = nullptr;  // aligned to 4096; capacity buf_capacity
  uint32_t buf_capacity = 0;
  uint32_t payload_have = 0;  // write payload bytes received so far
  uint32_t reply_error = 0;   // NBD error to send, 0 = success
  uint64_t t0_ns = 0;         // header read (MonotonicNs), for spd_nbd_request_duration_seconds

  // The reply: header bytes live in `hdr`, iovecs point into hdr and buf.
  // Enough for 64 read chunk headers (32 bytes each) or 128 block-status descriptors.
  static constexpr size_t kHdrBytes = 2304;
  static constexpr size_t kIovMax = 130;
  uint8_t hdr[kHdrBytes];
  size_t hdr_used = 0;
  iovec iov[kIovMax];
  size_t iov_count = 0;
  size_t iov_sent = 0;  // fully sent iovecs
  size_t iov_off = 0;   // bytes sent of iov[iov_sent]
};

class NbdConnection {
 public:
  NbdConnection(NbdServer* server, Reactor* reactor, int fd, std::string peer);
  ~NbdConnection();

  // REQUIRES: on reactor().
  [[nodiscard]] Status Start();
  // Stop reading new requests; close when in-flight ones have been answered. On reactor().
  void Drain();
  // The same, because the volume is being deleted (forced). On reactor().
  void CloseForDelete();
  Reactor* reactor() const { return reactor_; }
  // The volume this connection is a user of (null before transmission). On reactor().
  const VolumeHandle* handle() const { return handle_.get(); }

  // Tasks the server posts to this connection's reactor.
  struct ConnTask : Task {
    NbdConnection* conn;
  };
  ConnTask start_task;
  void* shard = nullptr;  // the server's per-reactor registry entry

 private:
  enum class RxState { kHandshake, kHeader, kPayload, kDiscard, kClosing };

  struct Watcher : Completion {
    NbdConnection* conn;
  };

  static void OnReadable(Completion* c, int32_t res, uint32_t flags);
  static void OnWritable(Completion* c, int32_t res, uint32_t flags);
  static void OnFlushTask(Task* t);
  static void OnRequestDone(IoRequest* io);  // the dispatcher's, on this reactor

  void ReadAll();
  // Returns false when the connection must stop reading (closing, backpressure).
  bool ProcessRx();
  bool ProcessHandshake();
  bool ProcessHeader();
  void StartPayload(NbdSlot* s);
  void Dispatch(NbdSlot* s);
  void Complete(NbdSlot* s);
  void BuildReply(NbdSlot* s);
  void BuildReadReply(NbdSlot* s);
  void BuildBlockStatusReply(NbdSlot* s);
  void QueueReply(NbdSlot* s);
  void ScheduleFlush();
  void FlushOut();
  NbdSlot* TakeSlot();
  void ReleaseSlot(NbdSlot* s);
  [[nodiscard]] bool EnsureBuffer(NbdSlot* s, uint32_t bytes);
  void BeginClose(const char* why);
  void MaybeFinishClose();
  void Resume();

  NbdServer* server_;
  Reactor* reactor_;  // this connection's: sockets, parsing, replies, completions
  int fd_;
  std::string peer_;
  Watcher rx_watch_;
  Watcher tx_watch_;
  struct FlushTask : Task {
    NbdConnection* conn;
  };
  FlushTask flush_task_;
  bool flush_scheduled_ = false;
  bool tx_armed_ = false;
  int finals_pending_ = 0;
  bool unwatched_ = false;
  bool rx_poll_active_ = false;
  bool send_failed_ = false;
  bool eof_ = false;

  RxState rx_state_ = RxState::kHandshake;
  std::unique_ptr<nbd::Handshake> handshake_;
  const nbd::Export* export_ = nullptr;
  // A user registration on the volume's handle from transmission until the connection goes:
  // the volume cannot be deleted under our requests.
  std::shared_ptr<VolumeHandle> handle_;
  Volume* volume_ = nullptr;
  size_t handshake_sent_ = 0;

  std::vector<uint8_t> rx_;
  size_t rx_start_ = 0;
  size_t rx_end_ = 0;
  NbdSlot* payload_slot_ = nullptr;  // slot receiving a write payload (kPayload/kDiscard)
  uint64_t discard_left_ = 0;

  std::unique_ptr<NbdSlot[]> slots_;
  NbdSlot* free_ = nullptr;
  uint32_t inflight_ = 0;
  uint64_t inflight_bytes_ = 0;
  NbdSlot* send_head_ = nullptr;
  NbdSlot* send_tail_ = nullptr;
  bool stalled_ = false;  // stopped reading for backpressure
  bool closing_ = false;
  bool closed_ = false;
  std::string close_reason_;
};

}  // namespace spd
