// NbdConnection's replies: a completed request (its IoRequest's result and extents) turned
// into the bytes NBD sends (simple or structured, hole chunks, block status descriptors).
// Sending is in nbd_connection.cc.
#include <algorithm>
#include <cstring>

#include "common/assert.h"
#include "dispatch/request_trace.h"
#include "dispatch/slow_request.h"
#include "frontend/nbd/nbd_connection.h"
#include "frontend/nbd/proto/nbd_format.h"

namespace spd {

void NbdConnection::BuildBlockStatusReply(NbdSlot* s) {
  const nbd::Request& r = s->req;
  const std::vector<Extent>& extents = s->extents;
  size_t n = std::min<size_t>(extents.size(), s->io.extents_max);
  uint8_t* p = s->hdr;
  p += nbd::EncodeBlockStatusHeader(p, r.cookie, true, handshake_->base_allocation_id(),
                                    static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; ++i) {
    const Extent& e = extents[i];
    uint32_t state = 0;
    if (e.kind == ExtentKind::kHole) state = nbd::kStateHole | nbd::kStateZero;
    if (e.kind == ExtentKind::kZero) state = nbd::kStateZero;
    p += nbd::EncodeBlockDescriptor(p, static_cast<uint32_t>(e.length_bytes), state);
  }
  s->hdr_used = static_cast<size_t>(p - s->hdr);
  SPD_ASSERT(s->hdr_used <= NbdSlot::kHdrBytes);
  s->iov[0] = {s->hdr, s->hdr_used};
  s->iov_count = 1;
}

// The request of `s` as the slow-request line and traces describe it. `scratch` (16 bytes)
// holds a correlation id for a request the dispatcher never saw.
static SlowRequest Describe(const NbdSlot* s, uint64_t reply_ns, const nbd::Export* exp,
                            const uint8_t* conn_id, uint8_t* scratch) {
  const nbd::Request& r = s->req;
  SlowRequest sr;
  sr.volume = exp != nullptr ? std::string_view(exp->name) : std::string_view();
  sr.arrival_ns = s->t0_ns;
  sr.reply_ns = reply_ns;
  // Dispatch stamps the arrival with t0: a request answered without the dispatcher (refused,
  // or nothing to do) has only the slot's stale stamps and the NBD header's own fields.
  if (s->io.StageNs(Stage::kArrival) == s->t0_ns) {
    sr.op = RequestOpName(s->io.op);
    sr.offset_bytes = s->io.offset_bytes;
    sr.length_bytes = s->io.length_bytes;
    sr.correlation = s->io.correlation_id;
    sr.stage_ns = s->io.stage_ns;
  } else {
    sr.op = "refused";
    sr.offset_bytes = r.offset;
    sr.length_bytes = r.length;
    std::memcpy(scratch, &r.cookie, sizeof r.cookie);  // as Dispatch would have
    std::memcpy(scratch + 8, conn_id, 8);
    sr.correlation = scratch;
  }
  return sr;
}

void NbdConnection::LogSlow(const NbdSlot* s, uint64_t reply_ns) const {
  uint8_t scratch[16];
  LogSlowRequest(Describe(s, reply_ns, export_, conn_id_, scratch));
}

void NbdConnection::MaybeTrace(const NbdSlot* s, uint64_t reply_ns) {
  const NbdServerOptions& o = server_->options_;
  bool sampled = false;
  if (o.trace_sample_period > 0 && ++trace_count_ >= o.trace_sample_period) {
    trace_count_ = 0;
    sampled = true;
  }
  const bool slow = o.trace_slow_ns > 0 && reply_ns - s->t0_ns > o.trace_slow_ns;
  if (!sampled && !slow) return;
  uint8_t scratch[16];
  TraceRequest(Describe(s, reply_ns, export_, conn_id_, scratch), "nbd", slow ? "slow" : "sampled",
               static_cast<int>(s->reply_error));
}

void NbdConnection::Complete(NbdSlot* s) {
  BuildReply(s);
  QueueReply(s);
}

void NbdConnection::BuildReply(NbdSlot* s) {
  const nbd::Request& r = s->req;
  const bool structured = handshake_->structured_replies();
  s->iov_count = 0;
  s->hdr_used = 0;
  if (s->reply_error != 0) {
    if (structured && (r.type == nbd::kCmdRead || r.type == nbd::kCmdBlockStatus)) {
      s->hdr_used = nbd::EncodeStructuredError(s->hdr, r.cookie, s->reply_error);
    } else {
      s->hdr_used = nbd::EncodeSimpleReply(s->hdr, r.cookie, s->reply_error);
    }
    s->iov[s->iov_count++] = {s->hdr, s->hdr_used};
    return;
  }
  if (r.type == nbd::kCmdRead) return BuildReadReply(s);
  if (r.type == nbd::kCmdBlockStatus) return BuildBlockStatusReply(s);
  s->hdr_used = nbd::EncodeSimpleReply(s->hdr, r.cookie, 0);
  s->iov[s->iov_count++] = {s->hdr, s->hdr_used};
}

void NbdConnection::BuildReadReply(NbdSlot* s) {
  const nbd::Request& r = s->req;
  if (!handshake_->structured_replies()) {
    s->hdr_used = nbd::EncodeSimpleReply(s->hdr, r.cookie, 0);
    s->iov[s->iov_count++] = {s->hdr, s->hdr_used};
    if (r.length > 0) s->iov[s->iov_count++] = {s->buf, r.length};
    return;
  }
  if (r.length == 0) {
    s->hdr_used = nbd::EncodeStructuredDone(s->hdr, r.cookie);
    s->iov[s->iov_count++] = {s->hdr, s->hdr_used};
    return;
  }
  // Holes go out as OFFSET_HOLE chunks (no payload), data as OFFSET_DATA chunks pointing into
  // the buffer. A DF (don't fragment) read, or a range we cannot describe, is one data chunk.
  // The dispatcher described the range when we asked (not for DF reads); a read that took the
  // fast path covered allocated chunks only and comes back undescribed: all data.
  const std::vector<Extent>& extents = s->extents;
  bool fragment = (s->io.flags & kReqWantExtents) && s->io.extents_valid;
  if (fragment) {
    // Merge adjacent data/zero extents: only holes are worth a chunk of their own.
    uint64_t covered = 0;
    for (const Extent& e : extents) covered += e.length_bytes;
    if (covered != r.length) fragment = false;
  }
  if (!fragment) {
    s->hdr_used = nbd::EncodeOffsetDataHeader(s->hdr, r.cookie, true, r.offset, r.length);
    s->iov[s->iov_count++] = {s->hdr, s->hdr_used};
    s->iov[s->iov_count++] = {s->buf, r.length};
    return;
  }
  uint8_t* p = s->hdr;
  for (size_t i = 0; i < extents.size(); ++i) {
    const Extent& e = extents[i];
    const bool last = i + 1 == extents.size();
    const uint64_t rel = e.offset_bytes - r.offset;
    const uint32_t len = static_cast<uint32_t>(e.length_bytes);
    uint8_t* h = p;
    if (e.kind == ExtentKind::kData) {
      p += nbd::EncodeOffsetDataHeader(p, r.cookie, last, e.offset_bytes, len);
      s->iov[s->iov_count++] = {h, static_cast<size_t>(p - h)};
      s->iov[s->iov_count++] = {s->buf + rel, len};
    } else {
      p += nbd::EncodeOffsetHole(p, r.cookie, last, e.offset_bytes, len);
      s->iov[s->iov_count++] = {h, static_cast<size_t>(p - h)};
    }
  }
  s->hdr_used = static_cast<size_t>(p - s->hdr);
  SPD_ASSERT(s->hdr_used <= NbdSlot::kHdrBytes);
  SPD_ASSERT(s->iov_count <= NbdSlot::kIovMax);
}

}  // namespace spd
