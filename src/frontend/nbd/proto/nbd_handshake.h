// NBD fixed-newstyle handshake as a sans-I/O state machine (no sockets, no
// clock), so that the same code runs in the server, in unit tests and under
// libFuzzer.
//
// The server feeds every byte received during negotiation to Feed() and sends
// whatever output() holds. When state() becomes kTransmission, negotiation is
// over: selected() is the export and the negotiated features are readable.
// kClose means: send the pending output, then close the connection
// (NBD_OPT_ABORT, a fatal protocol error, or a client that asked for something
// the specification says ends the session).
//
// TLS (NBD_OPT_STARTTLS): the handshake only decides; the connection runs TLS.
// When state() becomes kStartTls, the server sends the pending output (ending
// with the NBD_REP_ACK) in plaintext, runs a TLS handshake on the same socket,
// and calls TlsStarted() once it succeeded (or closes when it failed); every
// byte after that goes through TLS. Modes (the spec's names):
//   kOff      NOTLS: STARTTLS is refused with NBD_REP_ERR_POLICY.
//   kOn       SELECTIVETLS: STARTTLS is accepted, plaintext clients are served.
//   kRequire  FORCEDTLS: until TLS is up every option but STARTTLS and ABORT is
//             answered NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME closes.
//
// Authorization: an optional callback says whether a client (its TLS identity,
// "" without one) may use an export. NBD_OPT_LIST shows only the exports it
// allows; NBD_OPT_INFO, NBD_OPT_GO and the META_CONTEXT options answer
// NBD_REP_ERR_UNKNOWN for the others, exactly as for a name that does not
// exist (no oracle), except that in kOn mode before TLS an export the
// plaintext client may not use is TLS-only for it, which the spec wants
// answered NBD_REP_ERR_TLS_REQD; NBD_OPT_EXPORT_NAME, which cannot fail,
// closes.
//
// Thread-safety: none; one instance per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace spd::nbd {

struct Export {
  std::string name;
  std::string description;
  uint64_t size_bytes = 0;
  bool read_only = false;
  bool can_trim = true;
  bool can_write_zeroes = true;
  bool can_fast_zero = true;
  bool can_cache = true;
  bool can_multi_conn = true;
  bool can_flush = true;
  bool can_fua = true;
  bool rotational = false;
  uint32_t block_min_bytes = 1;
  uint32_t block_pref_bytes = 4096;
  uint32_t block_max_bytes = 32u << 20;  // the advertised and enforced maximum request size
  void* cookie = nullptr;                // the server's handle (its Volume*)
};

class ExportCatalog {
 public:
  virtual ~ExportCatalog() = default;
  // nullptr when unknown. The empty name selects the default export (the first
  // one).
  virtual const Export* Find(std::string_view name) const = 0;
  virtual std::vector<const Export*> List() const = 0;
};

// True when e's block sizes obey the spec's rules for NBD_INFO_BLOCK_SIZE
// (minimum a power of two <= 64 KiB; preferred a power of two >= max(minimum,
// 512); maximum >= preferred). The server checks its catalog with it before
// serving: the handshake sends what it is given.
bool BlockSizesValid(const Export& e);

enum class TlsMode { kOff, kOn, kRequire };

// May `identity` (the TLS PSK identity or x509 client certificate's CN; "" for a
// plaintext client or one without an identity) use the export named `export_name`? Called on
// connection reactors, possibly concurrently: it must be thread-safe and must not block.
using ExportAuthorizer =
    std::function<bool(std::string_view identity, std::string_view export_name)>;

struct HandshakeLimits {
  // Option data we buffer. A longer option is read and dropped without
  // buffering, then answered with NBD_REP_ERR_TOO_BIG, and negotiation
  // continues (the spec wants servers to error options, not hang up).
  // NBD_OPT_EXPORT_NAME cannot be errored: too long, we close.
  uint32_t option_length_max = 64 * 1024;
  // An option longer than this is not worth reading to stay in sync: we close
  // at once.
  uint32_t option_discard_bytes_max = 16u << 20;
  uint32_t options_max = 256;      // options per session; one more and we close
  uint32_t meta_queries_max = 64;  // queries in one LIST/SET_META_CONTEXT (more: TOO_BIG)
};

class Handshake {
 public:
  enum class State { kNegotiating, kStartTls, kTransmission, kClose };

  // `authorize` (may be null or empty: every export) must outlive the handshake.
  Handshake(const ExportCatalog* catalog, HandshakeLimits limits = {}, TlsMode tls = TlsMode::kOff,
            const ExportAuthorizer* authorize = nullptr);

  // Consumes a prefix of `data` (possibly all of it, possibly none when more
  // bytes are needed to make progress) and returns how many bytes it consumed.
  // Bytes after the end of negotiation are not consumed: they belong to the
  // transmission phase.
  size_t Feed(const uint8_t* data, size_t len);

  // Bytes to send, in order. The greeting is there from construction.
  const std::vector<uint8_t>& output() const { return out_; }
  void ConsumeOutput(size_t n);

  State state() const { return state_; }
  // In kStartTls: the TLS handshake succeeded; negotiation goes on over TLS
  // with every option state from before reset (spec, NBD_OPT_STARTTLS).
  // `identity` is the client's PSK identity or certificate CN ("" without one).
  void TlsStarted(std::string identity);
  bool tls() const { return tls_; }
  const std::string& tls_identity() const { return identity_; }
  // Why the session closes (for the log), when state() == kClose.
  const std::string& close_reason() const { return close_reason_; }

  // Valid in kTransmission.
  const Export* selected() const { return selected_; }
  bool structured_replies() const { return structured_; }
  bool no_zeroes() const { return no_zeroes_; }
  // The client asked for block size constraints when it chose the export (NBD_OPT_GO with
  // NBD_INFO_BLOCK_SIZE), and so must honour them.
  bool block_sizes_negotiated() const { return block_sizes_negotiated_; }
  // NBD_CMD_BLOCK_STATUS is allowed only when base:allocation was set with
  // SET_META_CONTEXT.
  bool base_allocation() const { return base_allocation_; }
  uint32_t base_allocation_id() const { return base_allocation_id_; }
  // Transmission flags sent to the client (NBD_FLAG_HAS_FLAGS | ...).
  uint16_t transmission_flags() const { return transmission_flags_; }

  // Counts of protocol errors seen (for metrics); each Feed may add some.
  uint64_t errors() const { return errors_; }
  // Requests for an export that exists but that the authorization callback refused this client
  // (INFO, GO, EXPORT_NAME, the META_CONTEXT options; not LIST, which only leaves it out), and
  // the name the last one asked for ("" for the default export). Each Feed may add some.
  uint32_t denials() const { return denials_; }
  const std::string& last_denied() const { return last_denied_; }

 private:
  // Implementation detail, owned by nbd_handshake.cc.
  enum class Phase { kClientFlags, kOptionHeader, kOptionData, kOptionDiscard };

  const ExportCatalog* catalog_;
  HandshakeLimits limits_;
  TlsMode tls_mode_;
  const ExportAuthorizer* authorize_;
  bool tls_offered_ = false;  // STARTTLS is accepted (TLS mode and fixed newstyle)
  bool tls_ = false;          // TLS is up
  std::string identity_;
  State state_ = State::kNegotiating;
  std::string close_reason_;
  std::vector<uint8_t> out_;
  std::vector<uint8_t> in_;  // the partial client flags, option header or option data
  Phase phase_ = Phase::kClientFlags;
  uint32_t options_seen_ = 0;
  const Export* selected_ = nullptr;
  bool structured_ = false;
  bool no_zeroes_ = false;
  bool block_sizes_negotiated_ = false;
  bool base_allocation_ = false;
  uint32_t base_allocation_id_ = 0;
  // The export the last NBD_OPT_SET_META_CONTEXT selected base:allocation for
  // (nullptr when it selected nothing); block status works only if the client
  // then picks that export.
  const Export* meta_export_ = nullptr;
  uint16_t transmission_flags_ = 0;
  uint64_t errors_ = 0;
  uint32_t denials_ = 0;
  std::string last_denied_;
  uint64_t discard_left_ = 0;  // option data still to drop (Phase::kOptionDiscard)
  uint32_t cur_opt_ = 0;
  uint32_t cur_len_ = 0;

  size_t FeedBuffered(const uint8_t* data, size_t len, size_t want);
  void OnClientFlags();
  void OnOptionHeader();
  void OnOptionDiscarded();
  uint8_t* AppendReply(uint32_t opt, uint32_t type, size_t len);
  void Reply(uint32_t opt, uint32_t type, const uint8_t* data, size_t len);
  void ReplyError(uint32_t opt, uint32_t type, const char* message);
  void HandleOption(uint32_t opt, const uint8_t* data, uint32_t len);
  void HandleExportName(const uint8_t* data, uint32_t len);
  void HandleList(uint32_t len);
  void HandleInfoOrGo(uint32_t opt, const uint8_t* data, uint32_t len);
  void SendInfo(uint32_t opt, const Export& e, bool want_name, bool want_desc, bool want_bs);
  void HandleMetaContext(uint32_t opt, const uint8_t* data, uint32_t len);
  void EnterTransmission(const Export& e);
  // FORCEDTLS before TLS: options other than STARTTLS and ABORT are refused.
  bool TlsRequiredNow() const { return tls_mode_ == TlsMode::kRequire && !tls_; }
  bool Allowed(const Export& e) const;
  // The export `name` selects for this client ("" is the first one it may use),
  // or null when none exists; *denied says an export exists that it may not use.
  // Counts a refusal in denials_.
  const Export* Resolve(std::string_view name, bool* denied);
  void Close(const char* reason);
  void Fail(const char* reason);  // a protocol violation: count it, then close
  uint16_t FlagsFor(const Export& e) const;
};

}  // namespace spd::nbd
