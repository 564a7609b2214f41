// The replica server's session (replica_server.h), shared by the files that implement it:
// replica_server.cc (messages, barriers, replies, the listener) and replica_server_hello.cc
// (a session's hello and its answer). Not for other users.
#pragma once

#include <gnutls/gnutls.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frontend/inproc/inproc_frontend.h"
#include "replica/replica_server.h"
#include "replica/replica_wire.h"

namespace spd {

namespace replica_session {
// Messages are read in bulk through a buffer of this size; a payload bigger than half of it
// that is not in the buffer yet is read straight into its request.
inline constexpr size_t kInBytes = 64u << 10;
}  // namespace replica_session

struct ReplicaServer::Session {
  ReplicaServer* server = nullptr;
  Session* next = nullptr;
  Session* prev = nullptr;
  int fd = -1;
  struct Watch : Completion {
    Session* s = nullptr;
  } rx, tx;
  bool rx_armed = false;
  bool tx_armed = false;
  struct Tick : Timer {
    Session* s = nullptr;
  } tick;
  bool tick_armed = false;
  bool closing = false;
  bool hello_done = false;
  uint64_t hello_deadline_ns = 0;
  uint64_t partial_since_ns = 0;  // a message or reply half-way since; 0: none
  uint64_t epoch = 0;
  bool applying = false;  // hello accepted and in sync: writes are applied
  // Bytes read from the socket, not yet taken: in[in_beg, in_end).
  std::unique_ptr<uint8_t[]> in{new uint8_t[replica_session::kInBytes]};
  size_t in_beg = 0;
  size_t in_end = 0;
  // The message being read.
  bool hdr_ready = false;  // decoded, waiting for a free request slot
  // Pumps again after a completion, once its request is back in the free list (the frontend
  // frees it only after the callback returns).
  struct PumpTask : Task {
    Session* s = nullptr;
  } pump;
  bool pump_pending = false;
  // Sends the replies made during the reactor's current batch of events in one send.
  struct FlushTask : Task {
    Session* s = nullptr;
  } flush;
  bool flush_pending = false;
  replica_wire::Header hdr;
  bool in_payload = false;
  uint8_t* payload = nullptr;
  uint32_t payload_got = 0;
  IoRequest* req = nullptr;  // a write's request while its payload arrives
  replica_wire::HelloBody hello;
  // The volume, once the hello named one.
  std::shared_ptr<VolumeHandle> handle;
  bool user = false;
  Volume* volume = nullptr;
  std::unique_ptr<InprocFrontend> fe;
  // A barrier waiting for the writes before it (reading paused meanwhile), or being recorded.
  bool barrier_waiting = false;
  bool record_pending = false;
  GenerationRecord record;
  // The copy's fence before this hello raised it: the last term it took part in.
  uint64_t fence_before = 0;
  // The copy growing (a kGrow, or a hello of a bigger volume), reading paused meanwhile; the
  // VolumeManager's answer comes back to the session's reactor through grow_task.
  bool grow_pending = false;
  replica_wire::Header grow;  // the kGrow being done (type 0: the hello's)
  struct GrowTask : Task {
    Session* s = nullptr;
    Status status;
  } grow_task;
  replica_wire::Header barrier;
  // Replies not yet sent.
  std::vector<uint8_t> out;
  size_t out_off = 0;
  // TLS (ReplicaServerOptions::tls): the session, its handshake not done yet, a record send
  // that must be called again.
  gnutls_session_t tls = nullptr;
  bool handshaking = false;
  bool tls_send_pending = false;

  std::string Peer() const { return "replica session fd " + std::to_string(fd); }
};

namespace replica_session {

using Session = ReplicaServer::Session;

// Queues a reply (sent once the reactor's current batch of events is done).
void Reply(Session* s, const replica_wire::Header& h, const void* payload = nullptr, size_t n = 0);
// Closes the session (replies made so far go first); it is freed once nothing is pending.
void Close(Session* s, const char* why);
// Goes on with the session: a waiting barrier, more messages.
void Pump(Session* s);
// A generation record (the hello's fence, or a barrier) is durable, or failed.
void OnRecorded(GenerationRecord* r);

// replica_server_hello.cc: the hello arrived whole: find the volume, check the fence, record
// the new one (answered from OnRecorded, through AnswerHello).
void HandleHello(Session* s);
// The fence of an accepted hello is recorded (`result` 0) or failed: answer it.
void AnswerHello(Session* s, int32_t result);
// Grows the session's copy to `size_bytes` (a kGrow in s->grow, or the hello's); Grown runs on
// the session's reactor when done.
void StartGrow(Session* s, uint64_t size_bytes);
// replica_server_hello.cc: the copy grew for the hello (or failed to): go on with it.
void HelloGrown(Session* s, const Status& status);

}  // namespace replica_session
}  // namespace spd
