#include "frontend/nbd/proto/nbd_handshake.h"

#include <algorithm>
#include <cstring>

#include "frontend/nbd/proto/nbd_format.h"
#include "frontend/nbd/proto/nbd_wire.h"

namespace spd::nbd {
namespace {

enum Phase { kClientFlags = 0, kOptionHeader = 1, kOptionData = 2, kOptionSkip = 3 };

// An option whose data we will not buffer but can still read past. Anything longer closes.
constexpr uint64_t kOptionSkipMax = 64ull << 20;
constexpr std::string_view kBaseAllocation = "base:allocation";

}  // namespace

Handshake::Handshake(const ExportCatalog* catalog, HandshakeLimits limits)
    : catalog_(catalog), limits_(limits) {
  out_.resize(18);
  Put64(out_.data(), kNbdMagic);
  Put64(out_.data() + 8, kIHaveOpt);
  Put16(out_.data() + 16, kFlagFixedNewstyle | kFlagNoZeroes);
}

void Handshake::ConsumeOutput(size_t n) {
  n = std::min(n, out_.size());
  out_.erase(out_.begin(), out_.begin() + static_cast<long>(n));
}

void Handshake::Close(const char* reason) {
  state_ = State::kClose;
  close_reason_ = reason;
}

uint16_t Handshake::FlagsFor(const Export& e) const {
  uint16_t f = kFlagHasFlags;
  if (e.read_only) f |= kFlagReadOnly;
  if (e.can_flush) f |= kFlagSendFlush;
  if (e.can_fua) f |= kFlagSendFua;
  if (e.rotational) f |= kFlagRotational;
  if (!e.read_only && e.can_trim) f |= kFlagSendTrim;
  if (!e.read_only && e.can_write_zeroes) {
    f |= kFlagSendWriteZeroes;
    if (e.can_fast_zero) f |= kFlagSendFastZero;
  }
  if (structured_) f |= kFlagSendDf;
  if (e.can_multi_conn) f |= kFlagCanMultiConn;
  if (e.can_cache) f |= kFlagSendCache;
  return f;
}

void Handshake::Reply(uint32_t opt, uint32_t type, const uint8_t* data, uint32_t len) {
  size_t at = out_.size();
  out_.resize(at + kOptionReplyHeaderBytes + len);
  uint8_t* p = out_.data() + at;
  p = Put64(p, kOptReplyMagic);
  p = Put32(p, opt);
  p = Put32(p, type);
  p = Put32(p, len);
  if (len) std::memcpy(p, data, len);
}

void Handshake::ReplyError(uint32_t opt, uint32_t type, const char* message) {
  ++errors_;
  Reply(opt, type, reinterpret_cast<const uint8_t*>(message),
        static_cast<uint32_t>(std::strlen(message)));
}

size_t Handshake::Feed(const uint8_t* data, size_t len) {
  size_t used = 0;
  while (state_ == State::kNegotiating && used < len) {
    const uint8_t* p = data + used;
    const size_t avail = len - used;
    if (phase_ == kOptionSkip) {
      uint64_t n = std::min<uint64_t>(skip_bytes_, avail);
      skip_bytes_ -= n;
      used += n;
      if (skip_bytes_ == 0) {
        ReplyError(cur_opt_, kRepErrTooBig, "option data too large");
        phase_ = kOptionHeader;
      }
      continue;
    }
    size_t want = phase_ == kClientFlags    ? 4
                  : phase_ == kOptionHeader ? kOptionHeaderBytes
                                            : cur_len_;
    size_t take = std::min(want - in_.size(), avail);
    in_.insert(in_.end(), p, p + take);
    used += take;
    if (in_.size() < want) break;  // need more bytes
    if (phase_ == kClientFlags) {
      client_flags_ = Get32(in_.data());
      in_.clear();
      if (client_flags_ & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) {
        ++errors_;
        Close("client sent unknown handshake flags");
      } else if (!(client_flags_ & kClientFlagFixedNewstyle)) {
        ++errors_;
        Close("client does not speak fixed newstyle");
      } else {
        no_zeroes_ = client_flags_ & kClientFlagNoZeroes;
        phase_ = kOptionHeader;
      }
      continue;
    }
    if (phase_ == kOptionHeader) {
      uint64_t magic = Get64(in_.data());
      cur_opt_ = Get32(in_.data() + 8);
      cur_len_ = Get32(in_.data() + 12);
      in_.clear();
      if (magic != kIHaveOpt) {
        ++errors_;
        Close("option without IHAVEOPT magic");
        continue;
      }
      if (++options_seen_ > limits_.options_max) {
        ++errors_;
        Close("too many options");
        continue;
      }
      if (cur_len_ > limits_.option_length_max) {
        if (cur_len_ > kOptionSkipMax) {
          ++errors_;
          Close("option data absurdly large");
          continue;
        }
        skip_bytes_ = cur_len_;
        phase_ = kOptionSkip;
        continue;
      }
      phase_ = kOptionData;
      if (cur_len_ > 0) continue;
    }
    // kOptionData complete.
    std::vector<uint8_t> opt_data;
    opt_data.swap(in_);
    phase_ = kOptionHeader;
    HandleOption(cur_opt_, opt_data.data(), static_cast<uint32_t>(opt_data.size()));
  }
  return used;
}

void Handshake::HandleOption(uint32_t opt, const uint8_t* data, uint32_t len) {
  switch (opt) {
    case kOptExportName: {
      const Export* e = catalog_->Find(std::string_view(reinterpret_cast<const char*>(data), len));
      if (!e) {
        ++errors_;
        // EXPORT_NAME has no error reply: the specification says to close.
        return Close("unknown export requested with NBD_OPT_EXPORT_NAME");
      }
      selected_ = e;
      transmission_flags_ = FlagsFor(*e);
      size_t at = out_.size();
      out_.resize(at + 10 + (no_zeroes_ ? 0 : kExportNameReplyZeroes), 0);
      Put64(out_.data() + at, e->size_bytes);
      Put16(out_.data() + at + 8, transmission_flags_);
      state_ = State::kTransmission;
      return;
    }
    case kOptAbort:
      Reply(opt, kRepAck, nullptr, 0);
      return Close("client sent NBD_OPT_ABORT");
    case kOptList: {
      if (len != 0) return ReplyError(opt, kRepErrInvalid, "NBD_OPT_LIST takes no data");
      for (const Export* e : catalog_->List()) {
        std::vector<uint8_t> d(4 + e->name.size());
        Put32(d.data(), static_cast<uint32_t>(e->name.size()));
        std::memcpy(d.data() + 4, e->name.data(), e->name.size());
        d.insert(d.end(), e->description.begin(), e->description.end());
        Reply(opt, kRepServer, d.data(), static_cast<uint32_t>(d.size()));
      }
      return Reply(opt, kRepAck, nullptr, 0);
    }
    case kOptInfo:
    case kOptGo:
      return HandleInfoOrGo(opt, data, len);
    case kOptStructuredReply:
      if (len != 0)
        return ReplyError(opt, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
      if (structured_) return ReplyError(opt, kRepErrInvalid, "structured replies already on");
      structured_ = true;
      return Reply(opt, kRepAck, nullptr, 0);
    case kOptListMetaContext:
    case kOptSetMetaContext:
      return HandleMetaContext(opt, data, len);
    case kOptStartTls:
      return ReplyError(opt, kRepErrPolicy, "TLS is not configured on this server");
    default:
      return ReplyError(opt, kRepErrUnsup, "option not supported");
  }
}

void Handshake::HandleInfoOrGo(uint32_t opt, const uint8_t* data, uint32_t len) {
  // u32 name length, name, u16 number of requests, u16 requests[].
  if (len < 6) return ReplyError(opt, kRepErrInvalid, "option data too short");
  uint32_t name_len = Get32(data);
  if (name_len > len - 6) return ReplyError(opt, kRepErrInvalid, "export name length invalid");
  std::string_view name(reinterpret_cast<const char*>(data + 4), name_len);
  uint16_t nreq = Get16(data + 4 + name_len);
  if (static_cast<uint64_t>(len) != 6ull + name_len + 2ull * nreq)
    return ReplyError(opt, kRepErrInvalid, "information request count does not match length");
  const Export* e = catalog_->Find(name);
  if (!e) return ReplyError(opt, kRepErrUnknown, "no such export");
  bool want_name = false, want_desc = false;
  for (uint16_t i = 0; i < nreq; ++i) {
    uint16_t t = Get16(data + 6 + name_len + 2 * i);
    if (t == kInfoName) want_name = true;
    if (t == kInfoDescription) want_desc = true;
  }
  const uint16_t flags = FlagsFor(*e);
  if (want_name) {
    std::vector<uint8_t> d(2 + e->name.size());
    Put16(d.data(), kInfoName);
    std::memcpy(d.data() + 2, e->name.data(), e->name.size());
    Reply(opt, kRepInfo, d.data(), static_cast<uint32_t>(d.size()));
  }
  if (want_desc && !e->description.empty()) {
    std::vector<uint8_t> d(2 + e->description.size());
    Put16(d.data(), kInfoDescription);
    std::memcpy(d.data() + 2, e->description.data(), e->description.size());
    Reply(opt, kRepInfo, d.data(), static_cast<uint32_t>(d.size()));
  }
  // Block sizes always: they are the constraints this server enforces.
  uint8_t bs[14];
  Put16(bs, kInfoBlockSize);
  Put32(bs + 2, e->block_min_bytes);
  Put32(bs + 6, e->block_pref_bytes);
  Put32(bs + 10, e->block_max_bytes);
  Reply(opt, kRepInfo, bs, sizeof bs);
  uint8_t ex[12];
  Put16(ex, kInfoExport);
  Put64(ex + 2, e->size_bytes);
  Put16(ex + 10, flags);
  Reply(opt, kRepInfo, ex, sizeof ex);
  Reply(opt, kRepAck, nullptr, 0);
  if (opt == kOptGo) {
    selected_ = e;
    transmission_flags_ = flags;
    state_ = State::kTransmission;
  }
}

void Handshake::HandleMetaContext(uint32_t opt, const uint8_t* data, uint32_t len) {
  // u32 export name length, name, u32 number of queries, queries (u32 length + string).
  if (opt == kOptSetMetaContext && !structured_)
    return ReplyError(opt, kRepErrInvalid, "meta contexts need structured replies first");
  if (len < 8) return ReplyError(opt, kRepErrInvalid, "option data too short");
  uint32_t name_len = Get32(data);
  if (name_len > len - 8) return ReplyError(opt, kRepErrInvalid, "export name length invalid");
  std::string_view name(reinterpret_cast<const char*>(data + 4), name_len);
  uint32_t nq = Get32(data + 4 + name_len);
  if (nq > limits_.meta_queries_max) return ReplyError(opt, kRepErrTooBig, "too many queries");
  std::vector<std::string_view> queries;
  uint64_t pos = 8ull + name_len;
  for (uint32_t i = 0; i < nq; ++i) {
    if (pos + 4 > len) return ReplyError(opt, kRepErrInvalid, "query length invalid");
    uint32_t ql = Get32(data + pos);
    if (pos + 4 + ql > len) return ReplyError(opt, kRepErrInvalid, "query length invalid");
    queries.emplace_back(reinterpret_cast<const char*>(data + pos + 4), ql);
    pos += 4ull + ql;
  }
  if (pos != len) return ReplyError(opt, kRepErrInvalid, "trailing bytes after queries");
  if (!catalog_->Find(name)) return ReplyError(opt, kRepErrUnknown, "no such export");
  bool match = false;
  if (queries.empty()) {
    match = opt == kOptListMetaContext;  // LIST with no query lists everything; SET selects none
  } else {
    for (std::string_view q : queries) {
      if (q == kBaseAllocation || (opt == kOptListMetaContext && q == "base:")) match = true;
    }
  }
  if (opt == kOptSetMetaContext) base_allocation_ = match;
  if (match) {
    uint8_t d[4 + kBaseAllocation.size()];
    // LIST replies carry id 0: only SET assigns ids.
    Put32(d, opt == kOptSetMetaContext ? kBaseAllocationContextId : 0);
    std::memcpy(d + 4, kBaseAllocation.data(), kBaseAllocation.size());
    Reply(opt, kRepMetaContext, d, sizeof d);
    if (opt == kOptSetMetaContext) base_allocation_id_ = kBaseAllocationContextId;
  }
  Reply(opt, kRepAck, nullptr, 0);
}

}  // namespace spd::nbd
