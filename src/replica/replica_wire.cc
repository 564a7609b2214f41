#include "replica/replica_wire.h"

#include <cstring>

namespace spd::replica_wire {

const char* HelloStatusName(HelloStatus s) {
  switch (s) {
    case HelloStatus::kInSync:
      return "in-sync";
    case HelloStatus::kOutOfSync:
      return "out-of-sync";
    case HelloStatus::kStaleEpoch:
      return "stale-epoch";
    case HelloStatus::kNoVolume:
      return "no-volume";
    case HelloStatus::kSizeMismatch:
      return "size-mismatch";
    case HelloStatus::kBusy:
      return "busy";
    case HelloStatus::kError:
      return "error";
  }
  return "unknown";
}

void EncodeHeader(const Header& h, uint8_t out[kHeaderBytes]) {
  std::memcpy(out, &h, kHeaderBytes);
}

uint32_t PayloadBytes(const Header& h) {
  switch (static_cast<Type>(h.type)) {
    case Type::kHello:
    case Type::kHelloReply:
    case Type::kWrite:
      return h.length;
    default:
      return 0;
  }
}

std::string DecodeHeader(const uint8_t in[kHeaderBytes], uint32_t payload_max, Header* h) {
  std::memcpy(h, in, kHeaderBytes);
  if (h->magic != kMagic) return "bad magic";
  if (h->version != kVersion) return "unsupported version " + std::to_string(h->version);
  const auto type = static_cast<Type>(h->type);
  if ((type == Type::kWrite || type == Type::kWriteZeroes || type == Type::kDiscard ||
       type == Type::kBarrier || type == Type::kGrow) &&
      (h->result < 0 || static_cast<uint64_t>(h->result) > h->seq))
    return "watermark outside the message's number";
  switch (type) {
    case Type::kHello:
      if (h->length != sizeof(HelloBody)) return "hello of the wrong length";
      return "";
    case Type::kHelloReply:
      if (h->length < sizeof(HelloReplyBody) ||
          (h->length - sizeof(HelloReplyBody)) % sizeof(ActivityRange) != 0 ||
          h->length > sizeof(HelloReplyBody) + kActivityRangesMax * sizeof(ActivityRange))
        return "hello reply of the wrong length";
      return "";
    case Type::kWrite:
      if (h->length == 0) return "empty write";
      if (h->length > payload_max || h->length > kPayloadMax)
        return "write of " + std::to_string(h->length) + " bytes, above the limit of " +
               std::to_string(payload_max < kPayloadMax ? payload_max : kPayloadMax);
      if ((h->flags & ~(kFlagFua | kFlagRebuild)) != 0) return "unknown write flags";
      return "";
    case Type::kWriteZeroes:
    case Type::kDiscard:
      if (h->length == 0) return "empty range";
      if ((h->flags & ~(kFlagFua | kFlagNoHole | kFlagRebuild)) != 0) return "unknown flags";
      return "";
    case Type::kGrow:
      if (h->offset == 0 || h->length != 0) return "a grow to no size";
      return "";
    case Type::kBarrier:
    case Type::kAck:
      return "";
  }
  return "unknown message type " + std::to_string(h->type);
}

}  // namespace spd::replica_wire
