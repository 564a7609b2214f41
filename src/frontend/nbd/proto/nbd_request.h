// NBD transmission phase: request parsing and validation, reply encoding.
// Sans-I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "frontend/nbd/proto/nbd_format.h"
#include "frontend/nbd/proto/nbd_handshake.h"

namespace spd::nbd {

struct Request {
  uint16_t flags = 0;  // NBD_CMD_FLAG_*
  uint16_t type = 0;   // NBD_CMD_*
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

constexpr size_t kRequestHeaderBytes = 28;
constexpr size_t kSimpleReplyBytes = 16;
constexpr size_t kStructuredReplyHeaderBytes = 20;
static_assert(kRequestHeaderBytes == kRequestBytes && kSimpleReplyBytes == kSimpleReplyWireBytes &&
              kStructuredReplyHeaderBytes == kChunkHeaderBytes);

// A WRITE we refuse is still read and dropped so that the next request header
// is found. A payload longer than this and longer than the export's maximum
// payload is not worth reading: the request is answered and the connection
// closed. It is well above 2^25, which the spec says must never be treated as
// abuse; an export that advertises a larger maximum raises it to that.
constexpr uint32_t kWritePayloadDiscardMax = 256u << 20;
static_assert(kWritePayloadDiscardMax >= kDefaultPayloadBytesMax);

enum class ParseResult {
  kOk,        // *req filled, kRequestHeaderBytes consumed
  kNeedMore,  // fewer than 28 bytes available
  kBadMagic,  // not a request: the specification says close the connection
};

ParseResult ParseRequest(const uint8_t* data, size_t len, Request* req);

// What the server does with a parsed request.
struct Verdict {
  // 0: execute it. Otherwise the NBD error to reply with (NBD_EINVAL,
  // NBD_EPERM, NBD_ENOSPC, NBD_EOVERFLOW) without touching the volume.
  uint32_t error = 0;
  // Bytes of write payload that follow the header and must be read (and, on
  // error, discarded) before the next request: `length` for NBD_CMD_WRITE, 0
  // otherwise.
  uint32_t payload_bytes = 0;
  // The request cannot be answered safely (a write payload larger than the
  // limit we can discard, NBD_CMD_DISC, ...): stop reading, finish in-flight
  // replies, close.
  bool close = false;
};

// Checks a request against the session (export size, read-only, negotiated
// features, flag validity per command, block size constraints, maximum request
// size) and says what to do. NBD_CMD_DISC yields close = true and error = 0.
// Zero-length READ/WRITE/TRIM/WRITE_ZEROES/ CACHE within the export are
// accepted (the server completes them without I/O); docs/nbd.md has the full
// table. REQUIRES: session.state() == Handshake::State::kTransmission.
Verdict Validate(const Request& req, const Handshake& session);

// Maps an errno from the volume layer to the NBD error code (EIO for anything
// unknown).
uint32_t ErrnoToNbd(int err);

// Encoders write to `out` and return the bytes written. Their REQUIRES are the
// spec's MUSTs for what a server sends; breaking one is a server bug, so they
// are asserted. Simple reply: 16 bytes.
size_t EncodeSimpleReply(uint8_t* out, uint64_t cookie, uint32_t nbd_error);
// Structured reply chunk header (20 bytes); the caller sends `payload_length`
// bytes after it.
size_t EncodeStructuredHeader(uint8_t* out, uint64_t cookie, uint16_t flags, uint16_t type,
                              uint32_t payload_length);
// NBD_REPLY_TYPE_OFFSET_DATA header + the 8-byte offset: 28 bytes; data
// follows.
size_t EncodeOffsetDataHeader(uint8_t* out, uint64_t cookie, bool done, uint64_t offset,
                              uint32_t data_length);
// NBD_REPLY_TYPE_OFFSET_HOLE chunk: 32 bytes.
size_t EncodeOffsetHole(uint8_t* out, uint64_t cookie, bool done, uint64_t offset,
                        uint32_t hole_length);
// NBD_REPLY_TYPE_ERROR chunk with an empty message, flagged done: 26 bytes.
// REQUIRES: nbd_error != 0.
size_t EncodeStructuredError(uint8_t* out, uint64_t cookie, uint32_t nbd_error);
// The same with a human-readable message (at most kStringBytesMax bytes, copied
// after the fixed part): 26 + message.size() bytes.
size_t EncodeStructuredErrorMessage(uint8_t* out, uint64_t cookie, uint32_t nbd_error,
                                    std::string_view message);
// NBD_REPLY_TYPE_NONE flagged done: 20 bytes.
size_t EncodeStructuredDone(uint8_t* out, uint64_t cookie);
// NBD_REPLY_TYPE_BLOCK_STATUS header + context id: 24 bytes; then 8 bytes per
// descriptor (EncodeBlockDescriptor). REQUIRES: 1 <= descriptors <=
// kBlockDescriptorsMax.
size_t EncodeBlockStatusHeader(uint8_t* out, uint64_t cookie, bool done, uint32_t context_id,
                               uint32_t descriptors);
size_t EncodeBlockDescriptor(uint8_t* out, uint32_t length, uint32_t status_flags);

}  // namespace spd::nbd
