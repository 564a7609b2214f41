#include "frontend/nbd/proto/nbd_handshake.h"

#include <algorithm>
#include <cstring>

#include "common/assert.h"
#include "common/counters.h"
#include "frontend/nbd/proto/nbd_format.h"
#include "frontend/nbd/proto/nbd_wire.h"

namespace spd::nbd {
namespace {

Counter option_errors_total("spd_nbd_option_errors_total",
                            "NBD options answered with an error reply (NBD_REP_ERR_*).");
Counter option_too_big_total("spd_nbd_option_too_big_total",
                             "NBD options longer than option_length_max (dropped unread).");
Counter handshake_violations_total("spd_nbd_handshake_violations_total",
                                   "NBD negotiations closed for a protocol violation or abuse.");

constexpr std::string_view kBaseAllocation = kBaseAllocationName;
// LIST_META_CONTEXT wildcard for every context in the base: namespace.
constexpr std::string_view kBaseNamespace = "base:";

bool IsPowerOfTwo(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

std::string_view AsString(const uint8_t* p, size_t n) {
  return std::string_view(reinterpret_cast<const char*>(p), n);
}

}  // namespace

bool BlockSizesValid(const Export& e) {
  return IsPowerOfTwo(e.block_min_bytes) && e.block_min_bytes <= kBlockMinBytesMax &&
         IsPowerOfTwo(e.block_pref_bytes) &&
         e.block_pref_bytes >= std::max<uint32_t>(e.block_min_bytes, 512) &&
         e.block_max_bytes >= e.block_pref_bytes;
}

Handshake::Handshake(const ExportCatalog* catalog, HandshakeLimits limits, TlsMode tls,
                     const ExportAuthorizer* authorize)
    : catalog_(catalog), limits_(limits), tls_mode_(tls), authorize_(authorize) {
  SPD_ASSERT(catalog_ != nullptr);
  out_.resize(kGreetingBytes);
  uint8_t* p = Put64(out_.data(), kNbdMagic);
  p = Put64(p, kIHaveOpt);
  Put16(p, kFlagFixedNewstyle | kFlagNoZeroes);
}

void Handshake::ConsumeOutput(size_t n) {
  n = std::min(n, out_.size());
  out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(n));
}

void Handshake::TlsStarted(std::string identity) {
  SPD_ASSERT(state_ == State::kStartTls);
  tls_ = true;
  identity_ = std::move(identity);
  // The spec: nothing negotiated before STARTTLS survives it (a man in the middle could have
  // sent it); the client negotiates again over TLS.
  structured_ = false;
  meta_export_ = nullptr;
  state_ = State::kNegotiating;
}

bool Handshake::Allowed(const Export& e) const {
  return authorize_ == nullptr || !*authorize_ || (*authorize_)(identity_, e.name);
}

const Export* Handshake::Resolve(std::string_view name, bool* denied) {
  *denied = false;
  const Export* e = nullptr;
  if (name.empty() && authorize_ != nullptr && *authorize_) {
    // The default export of this client: the first one it may use.
    bool any = false;
    for (const Export* x : catalog_->List()) {
      any = true;
      if (Allowed(*x)) return x;
    }
    *denied = any;
  } else {
    e = catalog_->Find(name);
    if (e != nullptr && !Allowed(*e)) {
      *denied = true;
      e = nullptr;
    }
  }
  if (*denied) {
    ++denials_;
    last_denied_ = name;
  }
  return e;
}

void Handshake::Close(const char* reason) {
  state_ = State::kClose;
  close_reason_ = reason;
}

void Handshake::Fail(const char* reason) {
  ++errors_;
  handshake_violations_total.Add();
  Close(reason);
}

uint16_t Handshake::FlagsFor(const Export& e) const {
  uint16_t f = kFlagHasFlags;
  if (e.read_only) f |= kFlagReadOnly;
  if (e.can_flush) f |= kFlagSendFlush;
  if (e.can_fua) f |= kFlagSendFua;
  if (e.rotational) f |= kFlagRotational;
  // A read-only export errors every write, so it does not advertise the
  // write-like commands.
  if (!e.read_only && e.can_trim) f |= kFlagSendTrim;
  if (!e.read_only && e.can_write_zeroes) {
    f |= kFlagSendWriteZeroes;
    // The spec forbids SEND_FAST_ZERO without SEND_WRITE_ZEROES.
    if (e.can_fast_zero) f |= kFlagSendFastZero;
  }
  // The spec forbids SEND_DF without structured replies.
  if (structured_) f |= kFlagSendDf;
  if (e.can_multi_conn) f |= kFlagCanMultiConn;
  if (e.can_cache) f |= kFlagSendCache;
  return f;
}

uint8_t* Handshake::AppendReply(uint32_t opt, uint32_t type, size_t len) {
  SPD_ASSERT(len <= UINT32_MAX - kOptionReplyHeaderBytes);
  const size_t at = out_.size();
  out_.resize(at + kOptionReplyHeaderBytes + len);
  uint8_t* p = out_.data() + at;
  p = Put64(p, kOptReplyMagic);
  p = Put32(p, opt);
  p = Put32(p, type);
  return Put32(p, static_cast<uint32_t>(len));
}

void Handshake::Reply(uint32_t opt, uint32_t type, const uint8_t* data, size_t len) {
  uint8_t* p = AppendReply(opt, type, len);
  if (len > 0) std::memcpy(p, data, len);
}

void Handshake::ReplyError(uint32_t opt, uint32_t type, const char* message) {
  SPD_ASSERT(type & kRepErrBit);
  ++errors_;
  option_errors_total.Add();
  Reply(opt, type, reinterpret_cast<const uint8_t*>(message), std::strlen(message));
}

// Appends bytes to in_ until it holds `want`; returns how many it took.
size_t Handshake::FeedBuffered(const uint8_t* data, size_t len, size_t want) {
  SPD_ASSERT(in_.size() <= want);
  const size_t take = std::min(want - in_.size(), len);
  in_.insert(in_.end(), data, data + take);
  return take;
}

size_t Handshake::Feed(const uint8_t* data, size_t len) {
  size_t used = 0;
  while (state_ == State::kNegotiating) {
    if (phase_ == Phase::kOptionDiscard) {
      const uint64_t n = std::min<uint64_t>(discard_left_, len - used);
      discard_left_ -= n;
      used += n;
      if (discard_left_ > 0) break;  // need more bytes
      OnOptionDiscarded();
      continue;
    }
    const size_t want = phase_ == Phase::kClientFlags    ? kClientFlagsBytes
                        : phase_ == Phase::kOptionHeader ? kOptionHeaderBytes
                                                         : cur_len_;
    used += FeedBuffered(data + used, len - used, want);
    if (in_.size() < want) break;  // need more bytes
    switch (phase_) {
      case Phase::kClientFlags:
        OnClientFlags();
        break;
      case Phase::kOptionHeader:
        OnOptionHeader();
        break;
      case Phase::kOptionData:
        phase_ = Phase::kOptionHeader;
        HandleOption(cur_opt_, in_.data(), cur_len_);
        break;
      case Phase::kOptionDiscard:
        SPD_ASSERT(false);
    }
    in_.clear();
  }
  return used;
}

void Handshake::OnClientFlags() {
  const uint32_t flags = Get32(in_.data());
  // The spec: drop the connection on any flag we did not advertise. A client
  // without FIXED_NEWSTYLE is still served as fixed newstyle, which the spec
  // allows; such clients only ever send NBD_OPT_EXPORT_NAME, which is the same
  // in both dialects.
  if (flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes))
    return Fail("client sent unknown handshake flags");
  no_zeroes_ = (flags & kClientFlagNoZeroes) != 0;
  // The spec: TLS needs fixed newstyle on both sides; without it the session is NOTLS, which
  // a server that requires TLS cannot serve.
  const bool fixed = (flags & kClientFlagFixedNewstyle) != 0;
  if (tls_mode_ == TlsMode::kRequire && !fixed)
    return Close("TLS is required and the client does not speak fixed newstyle");
  tls_offered_ = tls_mode_ != TlsMode::kOff && fixed;
  phase_ = Phase::kOptionHeader;
}

void Handshake::OnOptionHeader() {
  const uint64_t magic = Get64(in_.data());
  cur_opt_ = Get32(in_.data() + kOptionHeaderOffOption);
  cur_len_ = Get32(in_.data() + kOptionHeaderOffLength);
  if (magic != kIHaveOpt) return Fail("option without IHAVEOPT magic");
  // A client that never ends negotiation holds a connection slot: past the
  // limit that is a denial of service, which the spec lets us end with a hard
  // disconnect.
  if (++options_seen_ > limits_.options_max) return Fail("too many options");
  if (cur_len_ <= limits_.option_length_max) {
    phase_ = Phase::kOptionData;
    return;
  }
  option_too_big_total.Add();
  // NBD_OPT_EXPORT_NAME has no error reply; the spec says terminate the
  // session.
  if (cur_opt_ == kOptExportName) return Fail("NBD_OPT_EXPORT_NAME name too long");
  if (cur_len_ > limits_.option_discard_bytes_max) return Fail("option data absurdly large");
  discard_left_ = cur_len_;
  phase_ = Phase::kOptionDiscard;
}

void Handshake::OnOptionDiscarded() {
  phase_ = Phase::kOptionHeader;
  // The spec asks servers to ignore data sent with NBD_OPT_ABORT, however much.
  if (cur_opt_ == kOptAbort) {
    Reply(cur_opt_, kRepAck, nullptr, 0);
    return Close("client sent NBD_OPT_ABORT");
  }
  if (TlsRequiredNow() && cur_opt_ != kOptStartTls)
    return ReplyError(cur_opt_, kRepErrTlsReqd, "TLS is required: send NBD_OPT_STARTTLS first");
  ReplyError(cur_opt_, kRepErrTooBig, "option data too large");
}

void Handshake::HandleOption(uint32_t opt, const uint8_t* data, uint32_t len) {
  if (TlsRequiredNow()) {
    // FORCEDTLS: only STARTTLS and ABORT before TLS. NBD_OPT_EXPORT_NAME cannot be errored.
    if (opt == kOptExportName) return Close("NBD_OPT_EXPORT_NAME before TLS, which is required");
    if (opt != kOptStartTls && opt != kOptAbort)
      return ReplyError(opt, kRepErrTlsReqd, "TLS is required: send NBD_OPT_STARTTLS first");
  }
  switch (opt) {
    case kOptExportName:
      return HandleExportName(data, len);
    case kOptAbort:
      Reply(opt, kRepAck, nullptr, 0);
      return Close("client sent NBD_OPT_ABORT");
    case kOptList:
      return HandleList(len);
    case kOptInfo:
    case kOptGo:
      return HandleInfoOrGo(opt, data, len);
    case kOptStructuredReply:
      if (len != 0)
        return ReplyError(opt, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
      // A repeated state-changing option may be failed (spec, fixed newstyle
      // negotiation).
      if (structured_) return ReplyError(opt, kRepErrInvalid, "structured replies already on");
      structured_ = true;
      return Reply(opt, kRepAck, nullptr, 0);
    case kOptListMetaContext:
    case kOptSetMetaContext:
      return HandleMetaContext(opt, data, len);
    case kOptStartTls:
      if (len != 0) return ReplyError(opt, kRepErrInvalid, "NBD_OPT_STARTTLS takes no data");
      if (tls_) return ReplyError(opt, kRepErrInvalid, "TLS is already on");
      if (!tls_offered_)
        return ReplyError(opt, kRepErrPolicy, "TLS is not configured on this server");
      Reply(opt, kRepAck, nullptr, 0);
      state_ = State::kStartTls;
      return;
    default:
      // TODO(nbd): NBD_OPT_EXTENDED_HEADERS (64-bit lengths) once the extension settles.
      return ReplyError(opt, kRepErrUnsup, "option not supported");
  }
}

void Handshake::HandleExportName(const uint8_t* data, uint32_t len) {
  bool denied = false;
  const Export* e = Resolve(AsString(data, len), &denied);
  // NBD_OPT_EXPORT_NAME has no error reply: the spec says terminate the
  // session.
  if (e == nullptr) return Fail("unknown export requested with NBD_OPT_EXPORT_NAME");
  const uint16_t flags = FlagsFor(*e);
  const size_t at = out_.size();
  out_.resize(at + kExportNameReplyBytes + (no_zeroes_ ? 0 : kExportNameReplyZeroes), 0);
  Put16(Put64(out_.data() + at, e->size_bytes), flags);
  EnterTransmission(*e);
}

void Handshake::HandleList(uint32_t len) {
  if (len != 0) return ReplyError(kOptList, kRepErrInvalid, "NBD_OPT_LIST takes no data");
  for (const Export* e : catalog_->List()) {
    if (!Allowed(*e)) continue;  // not this client's: not shown
    uint8_t* p = AppendReply(kOptList, kRepServer, 4 + e->name.size() + e->description.size());
    p = Put32(p, static_cast<uint32_t>(e->name.size()));
    std::memcpy(p, e->name.data(), e->name.size());
    std::memcpy(p + e->name.size(), e->description.data(), e->description.size());
  }
  Reply(kOptList, kRepAck, nullptr, 0);
}

void Handshake::HandleInfoOrGo(uint32_t opt, const uint8_t* data, uint32_t len) {
  // u32 name length, name, u16 number of requests, u16 requests[].
  if (len < kInfoRequestFixedBytes) return ReplyError(opt, kRepErrInvalid, "option data too short");
  const uint32_t name_len = Get32(data);
  if (name_len > len - kInfoRequestFixedBytes)
    return ReplyError(opt, kRepErrInvalid, "export name length invalid");
  const std::string_view name = AsString(data + 4, name_len);
  const uint8_t* req = data + 4 + name_len;
  const uint16_t nreq = Get16(req);
  req += 2;
  if (static_cast<uint64_t>(len) != kInfoRequestFixedBytes + name_len + 2ull * nreq)
    return ReplyError(opt, kRepErrInvalid, "information request count does not match length");
  bool denied = false;
  const Export* e = Resolve(name, &denied);
  if (e == nullptr) {
    // SELECTIVETLS: an export this plaintext client may not use is TLS-only for it, which the
    // spec wants answered TLS_REQD. Otherwise the same answer as for a name that does not exist.
    if (denied && tls_offered_ && !tls_)
      return ReplyError(opt, kRepErrTlsReqd, "this export needs TLS credentials");
    return ReplyError(opt, kRepErrUnknown, "no such export");
  }
  bool want_name = false, want_desc = false, want_bs = false;
  for (uint16_t i = 0; i < nreq; ++i) {
    // Unknown information requests are ignored, as the spec requires.
    switch (Get16(req + 2 * i)) {
      case kInfoName:
        want_name = true;
        break;
      case kInfoDescription:
        want_desc = true;
        break;
      case kInfoBlockSize:
        want_bs = true;
        break;
    }
  }
  SendInfo(opt, *e, want_name, want_desc, want_bs);
  Reply(opt, kRepAck, nullptr, 0);
  if (opt == kOptGo) {
    block_sizes_negotiated_ = want_bs;
    EnterTransmission(*e);
  }
}

void Handshake::SendInfo(uint32_t opt, const Export& e, bool want_name, bool want_desc,
                         bool want_bs) {
  if (want_name) {
    uint8_t* p = AppendReply(opt, kRepInfo, 2 + e.name.size());
    std::memcpy(Put16(p, kInfoName), e.name.data(), e.name.size());
  }
  // An empty description is not worth a reply; the spec lets us skip requested
  // items.
  if (want_desc && !e.description.empty()) {
    uint8_t* p = AppendReply(opt, kRepInfo, 2 + e.description.size());
    std::memcpy(Put16(p, kInfoDescription), e.description.data(), e.description.size());
  }
  // Constraints other than the spec's defaults are advertised even when not
  // asked for: the spec says such servers SHOULD, and we enforce them whether
  // or not the client listened.
  const bool default_sizes = e.block_min_bytes == kDefaultBlockMinBytes &&
                             e.block_pref_bytes == kDefaultBlockPrefBytes &&
                             e.block_max_bytes >= kDefaultPayloadBytesMax;
  if (want_bs || !default_sizes) {
    uint8_t* p = AppendReply(opt, kRepInfo, kInfoBlockSizeBytes);
    p = Put16(p, kInfoBlockSize);
    p = Put32(p, e.block_min_bytes);
    p = Put32(p, e.block_pref_bytes);
    Put32(p, e.block_max_bytes);
  }
  // NBD_INFO_EXPORT last: the one item every successful reply must carry.
  uint8_t* p = AppendReply(opt, kRepInfo, kInfoExportBytes);
  Put16(Put64(Put16(p, kInfoExport), e.size_bytes), FlagsFor(e));
}

void Handshake::HandleMetaContext(uint32_t opt, const uint8_t* data, uint32_t len) {
  const bool set = opt == kOptSetMetaContext;
  // SET replaces the previous selection even when it fails (spec).
  if (set) meta_export_ = nullptr;
  if (set && !structured_)
    return ReplyError(opt, kRepErrInvalid, "meta contexts need structured replies first");
  // u32 export name length, name, u32 number of queries, queries (u32 length +
  // string).
  if (len < kMetaRequestFixedBytes) return ReplyError(opt, kRepErrInvalid, "option too short");
  const uint32_t name_len = Get32(data);
  if (name_len > len - kMetaRequestFixedBytes)
    return ReplyError(opt, kRepErrInvalid, "export name length invalid");
  const std::string_view name = AsString(data + 4, name_len);
  const uint32_t nq = Get32(data + 4 + name_len);
  if (nq > limits_.meta_queries_max) return ReplyError(opt, kRepErrTooBig, "too many queries");
  // With no query, LIST lists every context and SET selects none.
  bool match = nq == 0 && !set;
  size_t pos = kMetaRequestFixedBytes + name_len;
  for (uint32_t i = 0; i < nq; ++i) {
    if (len - pos < 4) return ReplyError(opt, kRepErrInvalid, "query length invalid");
    const uint32_t ql = Get32(data + pos);
    pos += 4;
    if (ql > len - pos) return ReplyError(opt, kRepErrInvalid, "query length invalid");
    const std::string_view q = AsString(data + pos, ql);
    pos += ql;
    // Other namespaces and unknown base: leaves are ignored, as the spec
    // requires; the bare namespace is a wildcard for LIST and is ignored by
    // SET.
    if (q == kBaseAllocation || (!set && q == kBaseNamespace)) match = true;
  }
  if (pos != len) return ReplyError(opt, kRepErrInvalid, "trailing bytes after queries");
  bool denied = false;
  const Export* e = Resolve(name, &denied);
  if (e == nullptr) return ReplyError(opt, kRepErrUnknown, "no such export");
  if (match) {
    uint8_t* p = AppendReply(opt, kRepMetaContext, 4 + kBaseAllocation.size());
    // LIST replies carry the reserved id 0: only SET assigns ids.
    p = Put32(p, set ? kBaseAllocationContextId : 0);
    std::memcpy(p, kBaseAllocation.data(), kBaseAllocation.size());
    if (set) meta_export_ = e;
  }
  Reply(opt, kRepAck, nullptr, 0);
}

void Handshake::EnterTransmission(const Export& e) {
  selected_ = &e;
  transmission_flags_ = FlagsFor(e);
  // Block status needs the context set for the export actually chosen (spec:
  // "the same export name"); we compare what the names resolve to.
  base_allocation_ = meta_export_ == &e;
  base_allocation_id_ = base_allocation_ ? kBaseAllocationContextId : 0;
  state_ = State::kTransmission;
}

}  // namespace spd::nbd
