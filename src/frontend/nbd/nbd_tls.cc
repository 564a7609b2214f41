#include "frontend/nbd/nbd_tls.h"

#include <cstring>
#include <sstream>

#include "common/log.h"
#include "common/psk_file.h"
#include "common/psk_gnutls.h"
#include "common/x509_gnutls.h"

namespace spd {
namespace {

Status GnutlsError(const std::string& what, int rc) {
  return InvalidArgument("nbd tls: " + what + ": " + gnutls_strerror(rc));
}

// The handshake's check of the client's certificate (with --nbd-tls-ca): 0 when GnuTLS
// verifies the chain the client sent against the CA: trusted, every certificate of it within
// its validity period, fit for TLS client use (an extended key usage that leaves out TLS client
// authentication is refused; none at all means any use), and CertificateCommonName finds the
// subject's one CN, the client's identity. The CN, not a subjectAltName: a client certificate names
// a tenant, not a host, and the CN is the field every CA tool sets. Else a GnuTLS error code, which
// fails the handshake, and the reason in *why.
int CheckClientCertificate(gnutls_session_t s, std::string* why) {
  std::string cn;
  const int rc = VerifyPeerCertificate(s, GNUTLS_KP_TLS_WWW_CLIENT, &cn, why);
  if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND) *why = "no client certificate";
  return rc;
}

// The session's verify function (GnuTLS calls it once it has the client's certificate).
int VerifyClient(gnutls_session_t s) {
  std::string why;
  const int rc = CheckClientCertificate(s, &why);
  if (rc != 0) SPD_LOG_INFO("nbd tls: client certificate refused: %s", why.c_str());
  return rc;
}

}  // namespace

NbdTlsCredentials::~NbdTlsCredentials() {
  for (auto& [id, key] : keys_) WipeKey(&key);
  if (priority_) gnutls_priority_deinit(priority_);
  if (psk_) gnutls_psk_free_server_credentials(psk_);
  if (cert_) gnutls_certificate_free_credentials(cert_);
}

Status NbdTlsCredentials::LoadPsk(const std::string& path) {
  SPD_RETURN_IF_ERROR(LoadPskFile(path, "nbd tls", &keys_));
  int rc = gnutls_psk_allocate_server_credentials(&psk_);
  if (rc < 0) return GnutlsError("PSK credentials", rc);
  gnutls_psk_set_server_credentials_function2(psk_, &NbdTlsCredentials::PskLookup);
  rc = gnutls_psk_set_server_known_dh_params(psk_, GNUTLS_SEC_PARAM_MEDIUM);
  if (rc < 0) return GnutlsError("PSK DH parameters", rc);
  return Status::Ok();
}

int NbdTlsCredentials::PskLookup(gnutls_session_t session, const gnutls_datum_t* username,
                                 gnutls_datum_t* key) {
  const auto* self = static_cast<const NbdTlsCredentials*>(gnutls_session_get_ptr(session));
  return self == nullptr ? -1 : PskKeyFor(self->keys_, username, key);
}

Result<std::unique_ptr<NbdTlsCredentials>> NbdTlsCredentials::Load(const NbdTlsFiles& f) {
  std::unique_ptr<NbdTlsCredentials> c(new NbdTlsCredentials());
  if (f.psk_file.empty() && f.cert_file.empty())
    return InvalidArgument(
        "nbd tls: TLS needs credentials: --nbd-tls-psk FILE, or --nbd-tls-cert FILE with "
        "--nbd-tls-key FILE");
  if (f.cert_file.empty() != f.key_file.empty())
    return InvalidArgument("nbd tls: --nbd-tls-cert and --nbd-tls-key go together");
  if (!f.ca_file.empty() && f.cert_file.empty())
    return InvalidArgument("nbd tls: --nbd-tls-ca needs --nbd-tls-cert and --nbd-tls-key");
  if (!f.psk_file.empty()) SPD_RETURN_IF_ERROR(c->LoadPsk(f.psk_file));
  if (!f.cert_file.empty()) {
    int rc = gnutls_certificate_allocate_credentials(&c->cert_);
    if (rc < 0) return GnutlsError("certificate credentials", rc);
    rc = gnutls_certificate_set_x509_key_file(c->cert_, f.cert_file.c_str(), f.key_file.c_str(),
                                              GNUTLS_X509_FMT_PEM);
    if (rc < 0) return GnutlsError(f.cert_file + " / " + f.key_file, rc);
    rc = gnutls_certificate_set_known_dh_params(c->cert_, GNUTLS_SEC_PARAM_MEDIUM);
    if (rc < 0) return GnutlsError("certificate DH parameters", rc);
    if (!f.ca_file.empty()) {
      rc = gnutls_certificate_set_x509_trust_file(c->cert_, f.ca_file.c_str(), GNUTLS_X509_FMT_PEM);
      if (rc < 0) return GnutlsError(f.ca_file, rc);
      if (rc == 0) return InvalidArgument("nbd tls: no CA certificate in " + f.ca_file);
      c->want_client_cert_ = true;
    }
  }
  const char* err = nullptr;
  int rc = gnutls_priority_init2(&c->priority_, kPskTlsPriority, &err, 0);
  if (rc < 0) return GnutlsError(std::string("priorities near '") + (err ? err : "") + "'", rc);
  return c;
}

Result<gnutls_session_t> NbdTlsCredentials::NewSession(int fd) const {
  gnutls_session_t s = nullptr;
  int rc = gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (rc < 0) return GnutlsError("session", rc);
  // PskLookup finds the keys through the session.
  gnutls_session_set_ptr(s, const_cast<NbdTlsCredentials*>(this));
  rc = gnutls_priority_set(s, priority_);
  if (rc == 0 && psk_) rc = gnutls_credentials_set(s, GNUTLS_CRD_PSK, psk_);
  if (rc == 0 && cert_) rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cert_);
  if (rc < 0) {
    gnutls_deinit(s);
    return GnutlsError("session", rc);
  }
  if (want_client_cert_) {
    // A client without a certificate fails the handshake (REQUIRE, not REQUEST; VerifyClient
    // would refuse it too), and so does one whose certificate VerifyClient refuses: both are
    // counted as failed TLS handshakes. PSK handshakes are not asked for one.
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_function(s, &VerifyClient);
  }
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, 0);  // the connection's handshake timeout covers it
  return s;
}

std::string NbdTlsCredentials::Identity(gnutls_session_t session) {
  switch (gnutls_auth_get_type(session)) {
    case GNUTLS_CRD_PSK: {
      gnutls_datum_t name{};
      if (gnutls_psk_server_get_username2(session, &name) < 0 || name.data == nullptr) return "";
      return std::string(reinterpret_cast<const char*>(name.data), name.size);
    }
    case GNUTLS_CRD_CERTIFICATE: {
      // Without --nbd-tls-ca no client certificate was asked for (a client cannot send one
      // unasked): no identity. With it, a finished handshake means VerifyClient accepted the
      // client's certificate, whose CN is the identity.
      unsigned n = 0;
      const gnutls_datum_t* chain = gnutls_certificate_get_peers(session, &n);
      if (chain == nullptr || n == 0) return "";
      std::string cn, why;
      if (CertificateCommonName(chain[0], &cn, &why) != 0) {
        // Cannot happen after VerifyClient (short of memory): an identity no tenant can have
        // (not a valid tenant name), never "", which would be every volume.
        SPD_LOG_WARN("nbd tls: client certificate: %s", why.c_str());
        return kUnidentifiedCertificate;
      }
      return cn;
    }
    default:
      return "";
  }
}

}  // namespace spd
