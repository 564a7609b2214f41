// libFuzzer target: arbitrary bytes into the NBD handshake and, once
// negotiation ends, into the request parser and validator. Must never crash,
// assert or read out of bounds; it also traps when the engine breaks one of its
// own promises (see the checks below), so that the fuzzer finds wrong answers
// and not only memory errors.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "frontend/nbd/proto/nbd_format.h"
#include "frontend/nbd/proto/nbd_handshake.h"
#include "frontend/nbd/proto/nbd_request.h"
#include "frontend/nbd/proto/nbd_test_util.h"

namespace {

using spd::nbd::Handshake;

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

// Feeds the handshake in uneven pieces (sizes taken from the input) so that
// partial-input paths run; returns the offset where negotiation stopped
// consuming.
size_t Negotiate(Handshake& hs, const uint8_t* data, size_t size, size_t pos) {
  const size_t step = pos < size ? (data[pos] % 13) + 1 : 1;
  Require(hs.output().size() == spd::nbd::kGreetingBytes);
  while (pos < size && (hs.state() == Handshake::State::kNegotiating ||
                        hs.state() == Handshake::State::kStartTls)) {
    if (hs.state() == Handshake::State::kStartTls) {
      // The connection's TLS handshake succeeded: negotiation goes on "over TLS", as the
      // identity the next byte picks. STARTTLS is acknowledged once per session at most.
      Require(!hs.tls());
      hs.TlsStarted(data[pos++] & 1 ? "a" : "");
      Require(hs.tls() && !hs.structured_replies());
      continue;
    }
    const size_t n = std::min(step, size - pos);
    const size_t used = hs.Feed(data + pos, n);
    Require(used <= n);
    pos += used;
    hs.ConsumeOutput(hs.output().size());
    if (used < n) break;  // negotiation ended inside this piece
  }
  return pos;
}

void CheckVerdict(const spd::nbd::Request& r, const spd::nbd::Verdict& v) {
  using namespace spd::nbd;
  Require(v.payload_bytes == (r.type == kCmdWrite ? r.length : 0u));
  Require(v.error == 0 || v.error == kEPerm || v.error == kEInval || v.error == kENoSpc ||
          v.error == kEOverflow);
  Require(!v.close || r.type == kCmdDisc || r.length > kWritePayloadDiscardMax);
}

void Transmit(const Handshake& hs, const uint8_t* data, size_t size, size_t pos) {
  using namespace spd::nbd;
  uint8_t reply[64];
  while (size - pos >= kRequestHeaderBytes) {
    Request r;
    if (ParseRequest(data + pos, size - pos, &r) != ParseResult::kOk) return;
    pos += kRequestHeaderBytes;
    const Verdict v = Validate(r, hs);
    CheckVerdict(r, v);
    if (v.close) return;
    // An accepted request addresses bytes inside the export.
    if (v.error == 0 && r.type != kCmdFlush)
      Require(r.offset <= hs.selected()->size_bytes &&
              r.length <= hs.selected()->size_bytes - r.offset);
    pos += std::min<size_t>(v.payload_bytes, size - pos);
    EncodeSimpleReply(reply, r.cookie, v.error);
    if (v.error != 0) EncodeStructuredError(reply, r.cookie, v.error);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const spd::nbd::testing::TestCatalog catalog;
  // The first byte picks small limits half of the time, so that the TOO_BIG,
  // discard and too-many-options paths are reachable with short inputs.
  spd::nbd::HandshakeLimits limits;
  size_t pos = 0;
  if (size > 0 && (data[0] & 1)) {
    limits.option_length_max = data[0] >> 1;
    limits.option_discard_bytes_max = 4 * limits.option_length_max;
    limits.options_max = 8;
    limits.meta_queries_max = 2;
  }
  if (size > 0) ++pos;
  // The top bits pick the TLS mode (off, on, require) and whether an authorization callback
  // (identity "a" may use vol0 and ro, nobody else anything) is installed.
  static const spd::nbd::ExportAuthorizer authorize = [](std::string_view id,
                                                         std::string_view name) {
    return id == "a" && (name == "vol0" || name == "ro");
  };
  const unsigned sel = size > 0 ? data[0] >> 5 : 0;
  const spd::nbd::TlsMode mode = sel % 3 == 0   ? spd::nbd::TlsMode::kOff
                                 : sel % 3 == 1 ? spd::nbd::TlsMode::kOn
                                                : spd::nbd::TlsMode::kRequire;
  Handshake hs(&catalog, limits, mode, (sel & 4) ? &authorize : nullptr);
  pos = Negotiate(hs, data, size, pos);
  if (hs.state() != Handshake::State::kTransmission) return 0;
  Require(hs.selected() != nullptr);
  // Require mode never enters transmission in plaintext; the callback is always obeyed.
  Require(mode != spd::nbd::TlsMode::kRequire || hs.tls());
  Require(!(sel & 4) || authorize(hs.tls_identity(), hs.selected()->name));
  Require(hs.transmission_flags() & spd::nbd::kFlagHasFlags);
  Transmit(hs, data, size, pos);
  return 0;
}
