#include "frontend/nbd/proto/nbd_request.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/assert.h"
#include "common/counters.h"
#include "frontend/nbd/proto/nbd_wire.h"

namespace spd::nbd {
namespace {

// One counter per reason a request is refused before it reaches the volume, so
// that a misbehaving client shows up as a reason and not just a number.
Counter bad_command_total("spd_nbd_request_bad_command_total",
                          "NBD requests with an unknown command (NBD_EINVAL).");
Counter bad_flags_total("spd_nbd_request_bad_flags_total",
                        "NBD requests with a flag not valid for the command (NBD_EINVAL).");
Counter read_only_total("spd_nbd_request_read_only_total",
                        "NBD writes, trims or zeroes on a read-only export (NBD_EPERM).");
Counter unadvertised_total("spd_nbd_request_unadvertised_total",
                           "NBD commands the export did not advertise (NBD_EINVAL).");
Counter no_meta_context_total("spd_nbd_request_no_meta_context_total",
                              "NBD_CMD_BLOCK_STATUS without base:allocation (NBD_EINVAL).");
Counter out_of_range_total("spd_nbd_request_out_of_range_total",
                           "NBD requests past the end of the export (NBD_EINVAL/NBD_ENOSPC).");
Counter misaligned_total("spd_nbd_request_misaligned_total",
                         "NBD requests not aligned to the minimum block size (NBD_EINVAL).");
Counter too_large_total("spd_nbd_request_too_large_total",
                        "NBD reads/writes longer than the maximum payload (EINVAL/EOVERFLOW).");
Counter payload_too_large_total("spd_nbd_request_payload_close_total",
                                "NBD writes too large to discard: answered, then closed.");

Verdict Reject(Counter& counter, uint32_t nbd_error, Verdict v) {
  counter.Add();
  v.error = nbd_error;
  return v;
}

bool IsWriteLike(uint16_t type) {
  return type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
}

// Command flags a request of `type` may carry, given the transmission flags we
// sent.
uint16_t AllowedFlags(uint16_t type, uint16_t tflags) {
  // FUA is valid on every command once SEND_FUA is advertised: the spec says
  // the server MUST accept it anywhere (clients are known to set it on reads),
  // ignoring it where nothing is written.
  uint16_t allowed = (tflags & kFlagSendFua) ? kCmdFlagFua : 0;
  switch (type) {
    case kCmdRead:
      if (tflags & kFlagSendDf) allowed |= kCmdFlagDf;
      break;
    case kCmdWriteZeroes:
      allowed |= kCmdFlagNoHole;
      if (tflags & kFlagSendFastZero) allowed |= kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      allowed |= kCmdFlagReqOne;
      break;
  }
  return allowed;
}

// Commands a client may only send when advertised. NBD_CMD_CACHE is served
// either way: the spec notes clients that send it unadvertised, and serving it
// costs nothing.
bool Advertised(uint16_t type, uint16_t tflags) {
  switch (type) {
    case kCmdFlush:
      return tflags & kFlagSendFlush;
    case kCmdTrim:
      return tflags & kFlagSendTrim;
    case kCmdWriteZeroes:
      return tflags & kFlagSendWriteZeroes;
    default:
      return true;
  }
}

// Offset, length, alignment and size limits of a command that addresses a
// range.
Verdict CheckRange(const Request& r, const Export& e, bool structured, bool sizes_negotiated,
                   Verdict v) {
  const bool grows = r.type == kCmdWrite || r.type == kCmdWriteZeroes;
  // Written so that offset + length cannot wrap: past the end is past the end,
  // which the spec answers with ENOSPC for writes and EINVAL otherwise
  // (EOVERFLOW is reserved for DF reads and oversized payload-less commands).
  if (r.offset > e.size_bytes || r.length > e.size_bytes - r.offset)
    return Reject(out_of_range_total, grows ? kENoSpc : kEInval, v);
  const uint64_t end = r.offset + r.length;
  // A client that asked for block sizes (NBD_INFO_BLOCK_SIZE in NBD_OPT_GO)
  // promised to honour the minimum; one that did not (NBD_OPT_EXPORT_NAME, the
  // kernel's nbd-client) may send any size, which the spec says a server SHOULD
  // then accept: the volume does read-modify-write below its alignment.
  const uint32_t min = sizes_negotiated ? e.block_min_bytes : 1;
  // The last block of an export whose size is not a multiple of the minimum is
  // reachable.
  if (min > 1 && (r.offset % min != 0 || (r.length % min != 0 && end != e.size_bytes)))
    return Reject(misaligned_total, kEInval, v);
  // A block status reply needs at least one extent of nonzero length to
  // describe.
  if (r.length == 0 && r.type == kCmdBlockStatus) return Reject(out_of_range_total, kEInval, v);
  // Only READ and WRITE carry a payload the size of the request. A structured
  // read may be refused with EOVERFLOW, which tells the client to retry
  // smaller; otherwise the client broke a MUST and gets EINVAL. TRIM,
  // WRITE_ZEROES, CACHE and BLOCK_STATUS may be larger.
  if ((r.type == kCmdRead || r.type == kCmdWrite) && r.length > e.block_max_bytes) {
    const bool overflow = r.type == kCmdRead && structured;
    return Reject(too_large_total, overflow ? kEOverflow : kEInval, v);
  }
  return v;
}

}  // namespace

ParseResult ParseRequest(const uint8_t* data, size_t len, Request* req) {
  if (len < kRequestHeaderBytes) return ParseResult::kNeedMore;
  if (Get32(data) != kRequestMagic) return ParseResult::kBadMagic;
  req->flags = Get16(data + kRequestOffFlags);
  req->type = Get16(data + kRequestOffType);
  req->cookie = Get64(data + kRequestOffCookie);
  req->offset = Get64(data + kRequestOffOffset);
  req->length = Get32(data + kRequestOffLength);
  return ParseResult::kOk;
}

Verdict Validate(const Request& r, const Handshake& session) {
  SPD_ASSERT(session.state() == Handshake::State::kTransmission);
  SPD_ASSERT(session.selected() != nullptr);
  const Export& e = *session.selected();
  const uint16_t tflags = session.transmission_flags();
  Verdict v;
  if (r.type == kCmdWrite) {
    v.payload_bytes = r.length;
    // A write the export allows is never refused by this limit, however large the allowed
    // maximum is: a refused one of up to that size is read and dropped like any other.
    if (r.length > std::max(kWritePayloadDiscardMax, e.block_max_bytes)) {
      v.close = true;
      return Reject(payload_too_large_total, kEInval, v);
    }
  }
  if (r.type == kCmdDisc) {
    v.close = true;
    return v;
  }
  if (r.type > kCmdBlockStatus) return Reject(bad_command_total, kEInval, v);
  if (r.flags & ~AllowedFlags(r.type, tflags)) return Reject(bad_flags_total, kEInval, v);
  if (IsWriteLike(r.type) && (tflags & kFlagReadOnly)) return Reject(read_only_total, kEPerm, v);
  if (!Advertised(r.type, tflags)) return Reject(unadvertised_total, kEInval, v);
  if (r.type == kCmdFlush) {
    // Offset and length of a flush are reserved and must be zero.
    if (r.offset != 0 || r.length != 0) return Reject(out_of_range_total, kEInval, v);
    return v;
  }
  if (r.type == kCmdBlockStatus && !session.base_allocation())
    return Reject(no_meta_context_total, kEInval, v);
  return CheckRange(r, e, session.structured_replies(), session.block_sizes_negotiated(), v);
}

uint32_t ErrnoToNbd(int err) {
  if (err < 0) err = -err;  // tolerate io_uring-style negative results
  switch (err) {
    case EPERM:
    case EACCES:
    case EROFS:
      return kEPerm;
    case EIO:
      return kEIo;
    case ENOMEM:
      return kENoMem;
    case EINVAL:
      return kEInval;
    case ENOSPC:
    case EDQUOT:  // the spec asks for these two to become ENOSPC
    case EFBIG:
      return kENoSpc;
    case EOVERFLOW:
      return kEOverflow;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
      return kENotSup;
    case ESHUTDOWN:
      return kEShutdown;
    default:
      return kEIo;
  }
}

size_t EncodeSimpleReply(uint8_t* out, uint64_t cookie, uint32_t nbd_error) {
  uint8_t* p = Put32(out, kSimpleReplyMagic);
  p = Put32(p, nbd_error);
  p = Put64(p, cookie);
  return static_cast<size_t>(p - out);
}

size_t EncodeStructuredHeader(uint8_t* out, uint64_t cookie, uint16_t flags, uint16_t type,
                              uint32_t payload_length) {
  uint8_t* p = Put32(out, kStructuredReplyMagic);
  p = Put16(p, flags);
  p = Put16(p, type);
  p = Put64(p, cookie);
  p = Put32(p, payload_length);
  return static_cast<size_t>(p - out);
}

size_t EncodeOffsetDataHeader(uint8_t* out, uint64_t cookie, bool done, uint64_t offset,
                              uint32_t data_length) {
  // The chunk length field is 32 bits and includes the offset.
  SPD_ASSERT(data_length >= 1 && data_length <= UINT32_MAX - kOffsetDataFixedBytes);
  size_t n = EncodeStructuredHeader(out, cookie, done ? kReplyFlagDone : 0, kReplyTypeOffsetData,
                                    static_cast<uint32_t>(kOffsetDataFixedBytes + data_length));
  Put64(out + n, offset);
  return n + kOffsetDataFixedBytes;
}

size_t EncodeOffsetHole(uint8_t* out, uint64_t cookie, bool done, uint64_t offset,
                        uint32_t hole_length) {
  SPD_ASSERT(hole_length != 0);  // the spec: hole size MUST be nonzero
  size_t n = EncodeStructuredHeader(out, cookie, done ? kReplyFlagDone : 0, kReplyTypeOffsetHole,
                                    kOffsetHolePayloadBytes);
  Put32(Put64(out + n, offset), hole_length);
  return n + kOffsetHolePayloadBytes;
}

size_t EncodeStructuredError(uint8_t* out, uint64_t cookie, uint32_t nbd_error) {
  return EncodeStructuredErrorMessage(out, cookie, nbd_error, {});
}

size_t EncodeStructuredErrorMessage(uint8_t* out, uint64_t cookie, uint32_t nbd_error,
                                    std::string_view message) {
  SPD_ASSERT(nbd_error != 0);  // the spec: error MUST be nonzero
  SPD_ASSERT(message.size() <= kStringBytesMax);
  const uint32_t payload = static_cast<uint32_t>(kErrorFixedBytes + message.size());
  size_t n = EncodeStructuredHeader(out, cookie, kReplyFlagDone, kReplyTypeError, payload);
  uint8_t* p = Put32(out + n, nbd_error);
  p = Put16(p, static_cast<uint16_t>(message.size()));
  if (!message.empty()) std::memcpy(p, message.data(), message.size());
  return n + payload;
}

size_t EncodeStructuredDone(uint8_t* out, uint64_t cookie) {
  return EncodeStructuredHeader(out, cookie, kReplyFlagDone, kReplyTypeNone, 0);
}

size_t EncodeBlockStatusHeader(uint8_t* out, uint64_t cookie, bool done, uint32_t context_id,
                               uint32_t descriptors) {
  SPD_ASSERT(descriptors >= 1 && descriptors <= kBlockDescriptorsMax);
  const uint32_t payload =
      static_cast<uint32_t>(kBlockStatusFixedBytes + kBlockDescriptorBytes * descriptors);
  size_t n = EncodeStructuredHeader(out, cookie, done ? kReplyFlagDone : 0, kReplyTypeBlockStatus,
                                    payload);
  Put32(out + n, context_id);
  return n + kBlockStatusFixedBytes;
}

size_t EncodeBlockDescriptor(uint8_t* out, uint32_t length, uint32_t status_flags) {
  SPD_ASSERT(length != 0);  // the spec: extent length MUST be nonzero
  Put32(Put32(out, length), status_flags);
  return kBlockDescriptorBytes;
}

}  // namespace spd::nbd
