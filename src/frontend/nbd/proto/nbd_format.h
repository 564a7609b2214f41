// NBD wire constants and layouts, from the NBD project's doc/proto.md (fixed
// newstyle negotiation, simple and structured replies, base:allocation). Every
// field is big-endian on the wire; the offsets below are byte offsets inside
// each message, and the static_asserts tie each layout's fields to its total
// size. docs/nbd.md explains what we do with them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace spd::nbd {

// ---- Handshake
// ---------------------------------------------------------------------------
//
// Server greeting (18 bytes):
//   +0  u64 NBDMAGIC  +8  u64 IHAVEOPT  +16 u16 handshake flags
// Client flags (4 bytes):
//   +0  u32 client flags
// Option request header (16 bytes), then `length` bytes of option data:
//   +0  u64 IHAVEOPT  +8  u32 option  +12 u32 length
// Option reply header (20 bytes), then `length` bytes of reply data:
//   +0  u64 reply magic  +8  u32 option  +12 u32 reply type  +16 u32 length
// NBD_OPT_EXPORT_NAME reply (10 bytes, then 124 zero bytes unless NO_ZEROES was
// negotiated):
//   +0  u64 export size  +8  u16 transmission flags
constexpr uint64_t kNbdMagic = 0x4e42444d41474943ull;  // "NBDMAGIC"
constexpr uint64_t kIHaveOpt = 0x49484156454F5054ull;  // "IHAVEOPT"
constexpr uint64_t kOptReplyMagic = 0x3e889045565a9ull;

constexpr size_t kGreetingBytes = 8 + 8 + 2;
constexpr size_t kClientFlagsBytes = 4;
constexpr size_t kOptionHeaderOffOption = 8;
constexpr size_t kOptionHeaderOffLength = 12;
constexpr uint32_t kOptionHeaderBytes = 16;
static_assert(kOptionHeaderOffLength + 4 == kOptionHeaderBytes);
constexpr size_t kOptionReplyOffOption = 8;
constexpr size_t kOptionReplyOffType = 12;
constexpr size_t kOptionReplyOffLength = 16;
constexpr uint32_t kOptionReplyHeaderBytes = 20;
static_assert(kOptionReplyOffLength + 4 == kOptionReplyHeaderBytes);
constexpr size_t kExportNameReplyBytes = 8 + 2;
constexpr size_t kExportNameReplyZeroes = 124;
static_assert(kGreetingBytes == 18 && kExportNameReplyBytes == 10);

// Handshake flags (server, 16 bits).
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
// Client flags (32 bits). Any other bit: the server must drop the connection.
constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Options.
constexpr uint32_t kOptExportName = 1;
constexpr uint32_t kOptAbort = 2;
constexpr uint32_t kOptList = 3;
constexpr uint32_t kOptPeekExport = 4;  // withdrawn; answered as unsupported
constexpr uint32_t kOptStartTls = 5;
constexpr uint32_t kOptInfo = 6;
constexpr uint32_t kOptGo = 7;
constexpr uint32_t kOptStructuredReply = 8;
constexpr uint32_t kOptListMetaContext = 9;
constexpr uint32_t kOptSetMetaContext = 10;
constexpr uint32_t kOptExtendedHeaders = 11;  // experimental; answered as unsupported

// Option reply types. Errors have bit 31 set.
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepServer = 2;
constexpr uint32_t kRepInfo = 3;
constexpr uint32_t kRepMetaContext = 4;
constexpr uint32_t kRepErrBit = 1u << 31;
constexpr uint32_t kRepErrUnsup = kRepErrBit + 1;
constexpr uint32_t kRepErrPolicy = kRepErrBit + 2;
constexpr uint32_t kRepErrInvalid = kRepErrBit + 3;
constexpr uint32_t kRepErrPlatform = kRepErrBit + 4;
constexpr uint32_t kRepErrTlsReqd = kRepErrBit + 5;
constexpr uint32_t kRepErrUnknown = kRepErrBit + 6;
constexpr uint32_t kRepErrShutdown = kRepErrBit + 7;
constexpr uint32_t kRepErrBlockSizeReqd = kRepErrBit + 8;
constexpr uint32_t kRepErrTooBig = kRepErrBit + 9;
constexpr uint32_t kRepErrExtHeaderReqd = kRepErrBit + 10;

// NBD_REP_SERVER data: u32 name length, name, then a human-readable
// description.
//
// NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 request count, u16
// requests[].
constexpr size_t kInfoRequestFixedBytes = 4 + 2;
// NBD_OPT_{LIST,SET}_META_CONTEXT data: u32 name length, name, u32 query count,
// then per query: u32 length, query string.
constexpr size_t kMetaRequestFixedBytes = 4 + 4;

// NBD_REP_INFO data starts with a u16 information type.
constexpr uint16_t kInfoExport = 0;       // +2 u64 size, +10 u16 transmission flags
constexpr uint16_t kInfoName = 1;         // +2 name
constexpr uint16_t kInfoDescription = 2;  // +2 description
constexpr uint16_t kInfoBlockSize = 3;    // +2 u32 minimum, +6 u32 preferred, +10 u32 maximum
constexpr size_t kInfoExportBytes = 2 + 8 + 2;
constexpr size_t kInfoBlockSizeBytes = 2 + 4 + 4 + 4;
static_assert(kInfoExportBytes == 12 && kInfoBlockSizeBytes == 14);

// NBD_REP_META_CONTEXT data: u32 context id, context name.
constexpr size_t kMetaContextReplyFixedBytes = 4;

// Strings (export names, queries, messages) must not be longer than this.
constexpr uint32_t kStringBytesMax = 4096;

// Size constraints a client may assume when the server advertises none (spec,
// "Size constraints"); a server with other constraints should advertise
// NBD_INFO_BLOCK_SIZE.
constexpr uint32_t kDefaultBlockMinBytes = 1;
constexpr uint32_t kDefaultBlockPrefBytes = 4096;
constexpr uint32_t kDefaultPayloadBytesMax = 32u << 20;
constexpr uint32_t kBlockMinBytesMax = 64 * 1024;  // largest legal minimum block size

// Transmission flags (16 bits), sent after negotiation.
constexpr uint16_t kFlagHasFlags = 1 << 0;
constexpr uint16_t kFlagReadOnly = 1 << 1;
constexpr uint16_t kFlagSendFlush = 1 << 2;
constexpr uint16_t kFlagSendFua = 1 << 3;
constexpr uint16_t kFlagRotational = 1 << 4;
constexpr uint16_t kFlagSendTrim = 1 << 5;
constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
constexpr uint16_t kFlagSendDf = 1 << 7;
constexpr uint16_t kFlagCanMultiConn = 1 << 8;
constexpr uint16_t kFlagSendResize = 1 << 9;  // experimental; never sent
constexpr uint16_t kFlagSendCache = 1 << 10;
constexpr uint16_t kFlagSendFastZero = 1 << 11;
constexpr uint16_t kFlagBlockStatusPayload = 1 << 12;  // experimental; never sent

// The one metadata context we serve, and the id SET_META_CONTEXT assigns it.
constexpr char kBaseAllocationName[] = "base:allocation";
constexpr uint32_t kBaseAllocationContextId = 1;

// ---- Transmission
// ------------------------------------------------------------------------
//
// Request (28 bytes), then `length` bytes of data for NBD_CMD_WRITE:
//   +0  u32 magic  +4  u16 command flags  +6  u16 type  +8  u64 cookie  +16 u64
//   offset +24 u32 length
// Simple reply (16 bytes), then data for a successful NBD_CMD_READ:
//   +0  u32 magic  +4  u32 error  +8  u64 cookie
// Structured reply chunk header (20 bytes), then `length` bytes of payload:
//   +0  u32 magic  +4  u16 flags  +6  u16 type  +8  u64 cookie  +16 u32 length
constexpr uint32_t kRequestMagic = 0x25609513u;
constexpr uint32_t kSimpleReplyMagic = 0x67446698u;
constexpr uint32_t kStructuredReplyMagic = 0x668e33efu;

constexpr size_t kRequestOffFlags = 4;
constexpr size_t kRequestOffType = 6;
constexpr size_t kRequestOffCookie = 8;
constexpr size_t kRequestOffOffset = 16;
constexpr size_t kRequestOffLength = 24;
constexpr size_t kRequestBytes = 28;
static_assert(kRequestOffLength + 4 == kRequestBytes);

constexpr size_t kSimpleReplyOffError = 4;
constexpr size_t kSimpleReplyOffCookie = 8;
constexpr size_t kSimpleReplyWireBytes = 16;
static_assert(kSimpleReplyOffCookie + 8 == kSimpleReplyWireBytes);

constexpr size_t kChunkOffFlags = 4;
constexpr size_t kChunkOffType = 6;
constexpr size_t kChunkOffCookie = 8;
constexpr size_t kChunkOffLength = 16;
constexpr size_t kChunkHeaderBytes = 20;
static_assert(kChunkOffLength + 4 == kChunkHeaderBytes);

// Structured chunk payloads.
//   OFFSET_DATA:  u64 offset, data                          (length = 8 + data,
//   data >= 1) OFFSET_HOLE:  u64 offset, u32 hole size                 (length
//   = 12) BLOCK_STATUS: u32 context id, {u32 length, u32 flags}+  (length = 4 +
//   8n, n >= 1) ERROR:        u32 error, u16 message length, message    (length
//   = 6 + message)
constexpr size_t kOffsetDataFixedBytes = 8;
constexpr size_t kOffsetHolePayloadBytes = 8 + 4;
constexpr size_t kBlockStatusFixedBytes = 4;
constexpr size_t kBlockDescriptorBytes = 4 + 4;
constexpr size_t kErrorFixedBytes = 4 + 2;
static_assert(kOffsetHolePayloadBytes == 12 && kErrorFixedBytes == 6);
// The spec asks servers not to send more than 2^20 descriptors in one chunk.
constexpr uint32_t kBlockDescriptorsMax = 1u << 20;

constexpr uint16_t kCmdRead = 0;
constexpr uint16_t kCmdWrite = 1;
constexpr uint16_t kCmdDisc = 2;
constexpr uint16_t kCmdFlush = 3;
constexpr uint16_t kCmdTrim = 4;
constexpr uint16_t kCmdCache = 5;
constexpr uint16_t kCmdWriteZeroes = 6;
constexpr uint16_t kCmdBlockStatus = 7;
constexpr uint16_t kCmdResize = 8;  // experimental; rejected

constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;
constexpr uint16_t kCmdFlagDf = 1 << 2;
constexpr uint16_t kCmdFlagReqOne = 1 << 3;
constexpr uint16_t kCmdFlagFastZero = 1 << 4;
constexpr uint16_t kCmdFlagPayloadLen = 1 << 5;  // experimental; rejected

constexpr uint16_t kReplyFlagDone = 1 << 0;
constexpr uint16_t kReplyTypeNone = 0;
constexpr uint16_t kReplyTypeOffsetData = 1;
constexpr uint16_t kReplyTypeOffsetHole = 2;
constexpr uint16_t kReplyTypeBlockStatus = 5;
constexpr uint16_t kReplyTypeError = (1 << 15) + 1;
constexpr uint16_t kReplyTypeErrorOffset = (1 << 15) + 2;

// base:allocation state bits.
constexpr uint32_t kStateHole = 1 << 0;
constexpr uint32_t kStateZero = 1 << 1;

// Error values (the spec's, not necessarily the host's errno values).
constexpr uint32_t kEPerm = 1;
constexpr uint32_t kEIo = 5;
constexpr uint32_t kENoMem = 12;
constexpr uint32_t kEInval = 22;
constexpr uint32_t kENoSpc = 28;
constexpr uint32_t kEOverflow = 75;
constexpr uint32_t kENotSup = 95;
constexpr uint32_t kEShutdown = 108;

}  // namespace spd::nbd
