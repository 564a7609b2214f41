// NBD's own TLS (NBD_OPT_STARTTLS): the server's credentials, loaded once at start, and the
// sessions made from them (one per connection that sends STARTTLS). GnuTLS does the TLS; the
// connection (nbd_connection.cc) drives it on its non-blocking socket.
//
// Credentials:
//   - pre-shared keys: the key file of GnuTLS's psktool, which libnbd, qemu and nbdkit read too:
//     one "IDENTITY:HEXKEY" per line. Read whole at start (a malformed line is an error naming
//     it); handshakes never touch the file. The identity a client proved is handed to the
//     handshake (its authorization callback) after TLS is up.
//   - x509: a certificate (chain) and its private key, PEM. With a CA file the server requires
//     a client certificate: a client without one, or whose certificate that CA did not sign, is
//     expired or not yet valid, is not for TLS clients (extended key usage) or whose subject
//     has not exactly one Common Name (CN), fails the TLS handshake. The CN is the client's
//     identity, as a PSK identity is. Without a CA file x509 clients have no identity.
// Either or both. TLS 1.2 and 1.3 (GnuTLS's NORMAL priorities plus the PSK key exchanges).
//
// Thread-safety: Load on any thread; NewSession from every connection reactor concurrently
// (the credentials are read-only once loaded).
#pragma once

#include <gnutls/gnutls.h>

#include <map>
#include <memory>
#include <string>

#include "common/status.h"

namespace spd {

struct NbdTlsFiles {
  std::string psk_file;   // psktool format; "" = no PSK
  std::string cert_file;  // PEM certificate (chain); "" = no x509
  std::string key_file;   // PEM private key of cert_file
  std::string ca_file;    // PEM CA for client certificates; "" = none asked for
};

class NbdTlsCredentials {
 public:
  ~NbdTlsCredentials();
  NbdTlsCredentials(const NbdTlsCredentials&) = delete;
  NbdTlsCredentials& operator=(const NbdTlsCredentials&) = delete;

  [[nodiscard]] static Result<std::unique_ptr<NbdTlsCredentials>> Load(const NbdTlsFiles& files);

  // A server session on `fd` (non-blocking), ready for gnutls_handshake. The caller owns it
  // (gnutls_deinit).
  [[nodiscard]] Result<gnutls_session_t> NewSession(int fd) const;

  // The identity a finished handshake proved: the PSK identity; for x509 the subject's Common
  // Name of the client's certificate (with a CA file), "" without a client certificate (no CA
  // file). "" for a session that proved none.
  static std::string Identity(gnutls_session_t session);
  // What Identity returns should a verified client certificate's CN not be readable after all
  // (it was at the handshake: short of memory): no valid tenant name, so it matches nothing.
  static constexpr const char* kUnidentifiedCertificate = "<unidentified x509 client>";

  size_t psk_identities() const { return keys_.size(); }

 private:
  NbdTlsCredentials() = default;
  static int PskLookup(gnutls_session_t session, const gnutls_datum_t* username,
                       gnutls_datum_t* key);
  Status LoadPsk(const std::string& path);

  std::map<std::string, std::string, std::less<>> keys_;  // identity -> key bytes
  gnutls_psk_server_credentials_t psk_ = nullptr;
  gnutls_certificate_credentials_t cert_ = nullptr;
  bool want_client_cert_ = false;
  gnutls_priority_t priority_ = nullptr;
};

}  // namespace spd
