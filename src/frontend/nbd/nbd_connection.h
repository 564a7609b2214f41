// One NBD client connection: handshake, request parsing, dispatch to the volume, replies.
// Private to the NBD server.
#pragma once

#include <gnutls/gnutls.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dispatch/io_request.h"
#include "frontend/nbd/nbd_buffers.h"
#include "frontend/nbd/nbd_server.h"
#include "frontend/nbd/proto/nbd_handshake.h"
#include "frontend/nbd/proto/nbd_request.h"

namespace spd {

// A request slot: one NBD request from parse to the last byte of its reply. Allocated per
// connection (conn_inflight_max of them) when transmission starts; its data buffer comes from
// the reactor's NbdBufferPool for the request and goes back when the reply has been sent.
struct NbdSlot {
  IoRequest io;  // what the dispatcher sees of this request
  nbd::Request req;
  NbdConnection* conn = nullptr;
  NbdSlot* next = nullptr;      // free list / send queue
  std::vector<Extent> extents;  // block status and read-hole scratch, reserved once

  uint8_t* buf = nullptr;  // aligned to 4096; from the pool, for buf_bytes
  uint32_t buf_bytes = 0;
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
  // `tcp`: the socket is a TCP one (the TLS policy of the TCP listener applies).
  NbdConnection(NbdServer* server, Reactor* reactor, int fd, std::string peer, bool tcp);
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

  // Closes a connection that is still negotiating to make room for a newer one. On reactor().
  void Evict();
  // Still negotiating (counted against handshakes_max); list links in the shard, oldest first.
  bool negotiating() const { return negotiating_; }
  NbdConnection* neg_prev = nullptr;
  NbdConnection* neg_next = nullptr;

  // Memory a negotiated connection is charged for its slots and receive buffer.
  static uint64_t TransmissionBytes(const NbdServerOptions& o);
  // Memory a connection is charged when its TLS session starts (STARTTLS): its read-ahead and
  // record buffers and an estimate of GnuTLS's session (kTlsSessionEstimateBytes).
  static uint64_t TlsBytes();

 private:
  // kTlsHandshake: NBD_OPT_STARTTLS was acknowledged; the TLS handshake runs (GnuTLS reads
  // and writes the socket itself), negotiation goes on in kHandshake once it is done.
  // kSetup: negotiated, waiting for the memory of its slots and receive buffer.
  // kBuffer: a READ or WRITE header was read; waiting for the memory of its buffer.
  enum class RxState {
    kHandshake,
    kTlsHandshake,
    kSetup,
    kHeader,
    kBuffer,
    kPayload,
    kDiscard,
    kClosing
  };

  struct Watcher : Completion {
    NbdConnection* conn;
  };

  static void OnReadable(Completion* c, int32_t res, uint32_t flags);
  static void OnWritable(Completion* c, int32_t res, uint32_t flags);
  static void OnFlushTask(Task* t);
  static void OnRequestDone(IoRequest* io);  // the dispatcher's, on this reactor
  static void OnTimer(Timer* t);
  static void OnMemory(NbdMemoryWaiter* w);

  void ReadAll();
  // The transport: plain recv/send, or GnuTLS records once TLS is up. Both return bytes moved,
  // or -1 with errno (EAGAIN: not now); Receive returns 0 at the end of the stream.
  ssize_t Receive(uint8_t* dst, size_t room);
  ssize_t Send(const uint8_t* p, size_t n);
  // Sends the head of the reply queue as one TLS record (up to 16 KiB, gathered from the
  // iovecs); bytes taken, or -1 with errno.
  ssize_t SendQueuedTls();
  // Marks `n` bytes of the reply queue sent, releasing the slots whose replies are complete.
  void AdvanceSent(size_t n);
  // Runs the TLS handshake as far as the socket allows; false while it waits (or failed).
  bool DriveTlsHandshake();
  // Returns false when the connection must stop reading (closing, backpressure).
  bool ProcessRx();
  bool ProcessHandshake();
  // Allocates the slots and the receive buffer; false (waiting for memory) when the budget is
  // spent.
  bool EnterTransmission();
  // Gives `s` its data buffer and moves on (payload or dispatch); false when waiting for memory.
  bool AttachBuffer(NbdSlot* s);
  void LeaveNegotiation();
  NbdBufferPool* pool() const;
  bool ProcessHeader();
  void StartPayload(NbdSlot* s);
  void Dispatch(NbdSlot* s);
  void Complete(NbdSlot* s);
  void BuildReply(NbdSlot* s);
  void BuildReadReply(NbdSlot* s);
  void BuildBlockStatusReply(NbdSlot* s);
  void QueueReply(NbdSlot* s);
  // The slow-request line of `s`, replied at `reply_ns` (dispatch/slow_request.h).
  void LogSlow(const NbdSlot* s, uint64_t reply_ns) const;
  // A span for `s` (and one per stage) when it is sampled or slow (common/trace.h).
  void MaybeTrace(const NbdSlot* s, uint64_t reply_ns);
  // Bytes 8..15 of every request's correlation id: random per connection, so that ids (the
  // client's cookie in bytes 0..7) differ between connections and can be trace ids.
  uint8_t conn_id_[8] = {};
  uint64_t trace_count_ = 0;  // requests since the last sampled one
  void ScheduleFlush();
  void FlushOut();
  NbdSlot* TakeSlot();
  void ReleaseSlot(NbdSlot* s);
  void BeginClose(const char* why);
  void MaybeFinishClose();
  void Resume();

  NbdServer* server_;
  Reactor* reactor_;  // this connection's: sockets, parsing, replies, completions
  int fd_;
  std::string peer_;
  bool tcp_;
  // TLS: the session once STARTTLS was acknowledged, and whether its handshake is done (from
  // then on every byte goes through it). tls_stage_ gathers reply iovecs into one record.
  gnutls_session_t tls_ = nullptr;
  bool tls_up_ = false;
  std::unique_ptr<uint8_t[]> tls_stage_;
  // GnuTLS asks its transport for a record's header, then for its body: served from this
  // read-ahead buffer, one recv() brings many small records (requests) instead of two each.
  // Bytes here are not announced by any poll: readers drain it.
  std::unique_ptr<uint8_t[]> tls_in_;
  size_t tls_in_start_ = 0;
  size_t tls_in_end_ = 0;
  static ssize_t TlsPull(void* self, void* buf, size_t n);
  static int TlsPullTimeout(void* self, unsigned ms);
  bool TlsBuffered() const {
    return tls_in_start_ != tls_in_end_ || (tls_up_ && gnutls_record_check_pending(tls_) > 0);
  }
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
  // The uid check (NbdServerOptions::authorize_uid): whether it applies to this client (a
  // plaintext one on this host), and the client's uid when it could be told. authorize_ is
  // what the handshake asks: the uid's rights while the uid decides (UidDecides), the TLS
  // identity's otherwise. A refusal is counted and logged once per connection.
  bool uid_policy_ = false;
  bool uid_known_ = false;
  uint32_t uid_ = 0;
  bool uid_refused_ = false;
  uint32_t denials_seen_ = 0;
  nbd::ExportAuthorizer authorize_;
  bool UidDecides() const;
  void NoteDenials();
  const nbd::Export* export_ = nullptr;
  // A user registration on the volume's handle from transmission until the connection goes:
  // the volume cannot be deleted under our requests.
  std::shared_ptr<VolumeHandle> handle_;
  Volume* volume_ = nullptr;
  IoStatsSlot* stats_ = nullptr;  // this connection's in volume_->io_stats (transmission on)
  size_t handshake_sent_ = 0;

  // Uninitialised on purpose: pages are touched only when bytes arrive.
  std::unique_ptr<uint8_t[]> rx_;
  size_t rx_size_ = 0;
  size_t rx_start_ = 0;
  size_t rx_end_ = 0;
  NbdSlot* payload_slot_ = nullptr;  // slot receiving a write payload (kPayload/kDiscard)
  NbdSlot* buffer_slot_ = nullptr;   // slot waiting for its buffer (kBuffer)
  uint64_t discard_left_ = 0;

  std::unique_ptr<NbdSlot[]> slots_;
  uint64_t charged_bytes_ = 0;  // TlsBytes once TLS started, + TransmissionBytes once slots exist
  bool negotiating_ = true;
  // Which spd_nbd_connections{state} series counts this connection (SetCountedState).
  enum class CountedState : uint8_t { kNone, kNegotiating, kTransmission, kClosing };
  CountedState counted_ = CountedState::kNone;
  void SetCountedState(CountedState s);
  struct ConnTimer : Timer {
    NbdConnection* conn;
  };
  // Handshake timeout while negotiating, idle timeout after (when configured). One per
  // connection; requests only store a timestamp, the timer looks at it when it fires.
  ConnTimer timer_;
  uint64_t last_request_ns_ = 0;
  // Stall timeout: armed only while the connection waits for its peer (a write payload that
  // stopped arriving, replies the client does not read); byte counts say whether it moved.
  ConnTimer stall_timer_;
  uint64_t rx_bytes_ = 0;
  uint64_t tx_bytes_ = 0;
  uint64_t stall_rx_mark_ = 0;
  uint64_t stall_tx_mark_ = 0;
  void MaybeArmStall(bool send_blocked);
  static void OnStallTimer(Timer* t);
  struct MemWaiter : NbdMemoryWaiter {
    NbdConnection* conn;
  };
  MemWaiter mem_waiter_;
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
