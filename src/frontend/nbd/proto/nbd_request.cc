#include "frontend/nbd/proto/nbd_request.h"

#include <cerrno>
#include <cstring>

#include "frontend/nbd/proto/nbd_format.h"
#include "frontend/nbd/proto/nbd_wire.h"

namespace spd::nbd {
namespace {

// A WRITE whose payload we refuse is still read and dropped to stay in sync with the client;
// beyond this size reading it costs more than closing, so the connection closes instead.
constexpr uint32_t kDiscardPayloadMax = 256u << 20;

bool Aligned(uint64_t v, uint32_t a) { return a <= 1 || v % a == 0; }

}  // namespace

ParseResult ParseRequest(const uint8_t* data, size_t len, Request* req) {
  if (len < kRequestHeaderBytes) return ParseResult::kNeedMore;
  if (Get32(data) != kRequestMagic) return ParseResult::kBadMagic;
  req->flags = Get16(data + 4);
  req->type = Get16(data + 6);
  req->cookie = Get64(data + 8);
  req->offset = Get64(data + 16);
  req->length = Get32(data + 24);
  return ParseResult::kOk;
}

Verdict Validate(const Request& r, const Handshake& session) {
  Verdict v;
  if (r.type == kCmdWrite) {
    v.payload_bytes = r.length;
    if (r.length > kDiscardPayloadMax) {
      v.error = kEInval;
      v.close = true;
      return v;
    }
  }
  const Export* e = session.selected();
  if (r.type == kCmdDisc) {
    v.close = true;
    return v;
  }
  uint16_t allowed = kCmdFlagFua;  // FUA is harmless on any command; we honour it on writes
  switch (r.type) {
    case kCmdRead:
      if (session.structured_replies()) allowed |= kCmdFlagDf;
      break;
    case kCmdWrite:
    case kCmdFlush:
    case kCmdTrim:
    case kCmdCache:
      break;
    case kCmdWriteZeroes:
      allowed |= kCmdFlagNoHole;
      if (e->can_fast_zero) allowed |= kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      allowed |= kCmdFlagReqOne;
      if (!session.base_allocation()) {
        v.error = kEInval;  // no meta context was negotiated
        return v;
      }
      break;
    default:
      v.error = kEInval;
      return v;
  }
  if (r.flags & ~allowed) {
    v.error = kEInval;
    return v;
  }
  if (e->read_only && (r.type == kCmdWrite || r.type == kCmdTrim || r.type == kCmdWriteZeroes)) {
    v.error = kEPerm;
    return v;
  }
  if (r.type == kCmdFlush) return v;
  if (r.length == 0) {
    v.error = kEInval;
    return v;
  }
  const uint64_t end = r.offset + r.length;
  if (end < r.offset) {
    v.error = kEOverflow;
    return v;
  }
  if ((r.type == kCmdRead || r.type == kCmdWrite || r.type == kCmdCache) &&
      r.length > e->block_max_bytes) {
    v.error = kEInval;
    return v;
  }
  if (!Aligned(r.offset, e->block_min_bytes) || !Aligned(r.length, e->block_min_bytes)) {
    v.error = kEInval;
    return v;
  }
  if (end > e->size_bytes) {
    v.error = (r.type == kCmdWrite || r.type == kCmdWriteZeroes) ? kENoSpc : kEInval;
    return v;
  }
  return v;
}

uint32_t ErrnoToNbd(int err) {
  switch (err) {
    case EPERM:
    case EROFS:
      return kEPerm;
    case EIO:
      return kEIo;
    case ENOMEM:
      return kENoMem;
    case EINVAL:
      return kEInval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kENoSpc;
    case EOVERFLOW:
      return kEOverflow;
    case ENOTSUP:
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
  size_t n = EncodeStructuredHeader(out, cookie, done ? kReplyFlagDone : 0, kReplyTypeOffsetData,
                                    8 + data_length);
  Put64(out + n, offset);
  return n + 8;
}

size_t EncodeOffsetHole(uint8_t* out, uint64_t cookie, bool done, uint64_t offset,
                        uint32_t hole_length) {
  size_t n =
      EncodeStructuredHeader(out, cookie, done ? kReplyFlagDone : 0, kReplyTypeOffsetHole, 12);
  Put64(out + n, offset);
  Put32(out + n + 8, hole_length);
  return n + 12;
}

size_t EncodeStructuredError(uint8_t* out, uint64_t cookie, uint32_t nbd_error) {
  size_t n = EncodeStructuredHeader(out, cookie, kReplyFlagDone, kReplyTypeError, 6);
  Put32(out + n, nbd_error);
  Put16(out + n + 4, 0);  // message length
  return n + 6;
}

size_t EncodeStructuredDone(uint8_t* out, uint64_t cookie) {
  return EncodeStructuredHeader(out, cookie, kReplyFlagDone, kReplyTypeNone, 0);
}

size_t EncodeBlockStatusHeader(uint8_t* out, uint64_t cookie, bool done, uint32_t context_id,
                               uint32_t descriptors) {
  size_t n = EncodeStructuredHeader(out, cookie, done ? kReplyFlagDone : 0, kReplyTypeBlockStatus,
                                    4 + 8 * descriptors);
  Put32(out + n, context_id);
  return n + 4;
}

size_t EncodeBlockDescriptor(uint8_t* out, uint32_t length, uint32_t status_flags) {
  Put32(out, length);
  Put32(out + 4, status_flags);
  return 8;
}

}  // namespace spd::nbd
