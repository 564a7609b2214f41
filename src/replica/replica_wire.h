// The replication wire protocol between a primary and a replica (docs/replication.md, "Wire
// protocol"). TCP; every message is a 48-byte header, then `length` bytes of payload for the
// messages that carry one. All integers little-endian (the machines spd2 runs on; static_asserts
// below pin the layout, and Decode checks every field it relies on).
//
//   primary -> replica                          replica -> primary
//   kHello     payload HelloBody                kHelloReply  payload HelloReplyBody
//   kWrite     payload: the data (crc32c)       kAck         seq = the message's, result
//   kWriteZeroes, kDiscard (no payload)         kAck
//   kBarrier   seq: the barrier's               kAck after the writes before it are durable
//                                                            and the generation recorded
//   kGrow      offset: the volume's new size    kAck once the copy is that big (durably)
//
// The primary numbers every message after the hello (seq: 1, 2, 3 ... per epoch, never reused)
// and never has two overlapping writes in flight: the replica applies writes concurrently, in
// any order, and answers each when it is done; it answers a barrier once every write received
// before it is durable and its generation (epoch, barrier seq) is recorded.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace spd::replica_wire {

constexpr uint32_t kMagic = 0x52445053u;  // "SPDR"
// 2: the primary's watermark in `result`; the hello reply carries the replica's activity.
// 3: the hello reply names the copy (HelloReplyBody::copy_id).
// 4: the hello reply counts the copy's power losses (HelloReplyBody::losses).
// 5: kGrow; a hello of a bigger volume grows a smaller copy (HelloBody::size_bytes).
constexpr uint16_t kVersion = 5;
constexpr size_t kHeaderBytes = 48;
// The largest payload of any message: a write (the replica says its own limit in the hello
// reply, at most this).
constexpr uint32_t kPayloadMax = 4u << 20;

enum class Type : uint16_t {
  kHello = 1,
  kHelloReply = 2,
  kWrite = 3,
  kWriteZeroes = 4,
  kDiscard = 5,
  kBarrier = 6,
  kAck = 7,
  // The volume grows to `offset` bytes (a primary sends it before its own copy grows, so that no
  // write past a replica's end ever reaches one). No payload.
  kGrow = 8,
};

enum Flags : uint16_t {
  kFlagFua = 1 << 0,        // write, write-zeroes: durable before the ack
  kFlagNoHole = 1 << 1,     // write-zeroes: keep the range allocated
  kFlagRebuild = 1 << 2,    // write, discard: a resync's copy (the QoS scheduler's rebuild class)
  kFlagResyncEnd = 1 << 3,  // barrier: a resync's last; once durable the copy holds the term
};

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t type = 0;
  uint16_t flags = 0;
  uint16_t reserved0 = 0;
  // kAck: 0 or -errno. From the primary (write, write-zeroes, discard, barrier): how many
  // messages before this one may still be incomplete: every message numbered below seq - result
  // is on every in-sync copy (the watermark, volume/replica_activity.h). 0 <= result <= seq.
  int32_t result = 0;
  uint64_t epoch = 0;   // the primary's epoch (every message)
  uint64_t seq = 0;     // the message's number (kAck: the answered one's)
  uint64_t offset = 0;  // bytes into the volume (write, write-zeroes, discard)
  uint32_t length = 0;  // bytes: of the range; of the payload for kWrite, hello and its reply
  uint32_t crc = 0;     // crc32c of the payload (0 without one)
};
static_assert(sizeof(Header) == kHeaderBytes);

// kHello's payload.
struct HelloBody {
  char volume[64] = {};  // NUL-padded name
  // The primary's copy's size. A smaller copy grows to it before the answer (the volume grew
  // while the replica was away); a bigger one answers kSizeMismatch (volumes never shrink).
  uint64_t size_bytes = 0;
  uint64_t base_epoch = 0;  // the primary's durable generation when it became primary
  uint64_t base_seq = 0;
  uint32_t write_bytes_max = 0;  // the largest write the primary would like to send
  uint32_t flags = 0;            // HelloFlags
};

enum HelloFlags : uint32_t {
  // The primary will resync an out-of-sync copy: the session applies writes even then (the
  // primary copies every region and ends with a barrier, after which the copy is in sync).
  kHelloResync = 1u << 0,
  // The primary's own copy is not clean at its base generation (it applied writes after it, or
  // cannot tell, having restarted): no copy is in sync with it at that generation, whatever it
  // holds. The replica answers out of sync; the primary resyncs it.
  kHelloPrimaryDirty = 1u << 1,
};
static_assert(sizeof(HelloBody) == 96);

enum class HelloStatus : uint32_t {
  kInSync = 0,      // the replica holds the primary's base generation and nothing after it
  kOutOfSync = 1,   // it holds something else: it needs a resync before it counts
  kStaleEpoch = 2,  // it follows a newer primary (fence > epoch): this primary is deposed
  kNoVolume = 3,    // no such volume here
  kSizeMismatch = 4,
  kBusy = 5,   // another primary session holds the volume
  kError = 6,  // anything else (see the reply's result)
};
const char* HelloStatusName(HelloStatus s);

// kHelloReply's payload: this body, then activity_ranges ActivityRange entries.
struct HelloReplyBody {
  uint32_t status = 0;           // HelloStatus
  uint32_t write_bytes_max = 0;  // writes longer than this are refused
  uint64_t gen_epoch = 0;        // the replica's durable generation
  uint64_t gen_seq = 0;
  uint64_t fence_epoch = 0;  // its durable fence (the primary's epoch once accepted)
  uint64_t size_bytes = 0;
  // What the copy applied of its previous primary's last writes, as it stood before this hello
  // (volume/replica_activity.h): the term, whether the record is complete, and how many ranges
  // of 64 KiB units follow.
  uint64_t activity_epoch = 0;
  uint32_t activity_ranges = 0;
  uint32_t activity_flags = 0;  // ActivityFlags
  // Which copy of the volume the replica holds: a tag of its pool (made at the pool's creation)
  // and of the volume's id in it (never reused). Another tag than at an earlier hello: a new
  // disk, or the volume deleted and created again; what the primary's map or checkpoint counts
  // as copied to the copy of before is not on this one.
  uint64_t copy_id = 0;
  // How many power losses the copy had, ever (volume/replica_activity.h; written back before
  // it answers). More than at its last hello to this primary: it may have lost what it had
  // acknowledged since its last barrier.
  uint64_t losses = 0;
};
static_assert(sizeof(HelloReplyBody) == 72);
enum ActivityFlags : uint32_t {
  kActivityComplete = 1u << 0,
  // The copy's record was left open by a boot that ended (a power loss or a kernel crash) and
  // no resync ended on it since: it may have lost what it had not made durable, so units a
  // map or a checkpoint counts as copied to it may be gone (the primary copies it whole).
  kActivityLeftOpen = 1u << 1,
  // With kActivityLeftOpen: the ranges are the copy's durable activity log of the term it was
  // the primary of (replica/activity_log.h), not its record: every unit in which it may differ
  // from that term's other copies after the power loss. A new primary whose map waits for this
  // copy's record of that term (prior_pending) copies those units and its own, not the whole.
  kActivityDurableLog = 1u << 2,
};
struct ActivityRange {
  uint32_t first_unit = 0;  // 64 KiB units
  uint32_t units = 0;
};
static_assert(sizeof(ActivityRange) == 8);
constexpr uint32_t kActivityRangesMax = 4096;

// Header <-> bytes. Decode checks magic, version, the type, and that the payload length is
// allowed for the type (a write's at most `payload_max`); "" or what is wrong.
void EncodeHeader(const Header& h, uint8_t out[kHeaderBytes]);
std::string DecodeHeader(const uint8_t in[kHeaderBytes], uint32_t payload_max, Header* h);
// The payload bytes a decoded header announces (0 for ranges without data).
uint32_t PayloadBytes(const Header& h);

}  // namespace spd::replica_wire
