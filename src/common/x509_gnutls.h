// The GnuTLS side of x509 peer certificates, shared by NBD's TLS (frontend/nbd/nbd_tls.cc: a
// client's certificate names a tenant) and the replication link's (replica/replica_tls.cc: a
// node's certificate names the node). Header-only: included only by components that link
// GnuTLS.
#pragma once

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <ctime>
#include <string>

namespace spd {

// Longest Common Name taken (X.520 allows 64 characters; UTF-8 may need 4 bytes each).
inline constexpr size_t kCommonNameBytesMax = 256;

// The one Common Name of the subject of `der` (a DER certificate), not empty and without control
// characters; else a GnuTLS error code and, in *why, the reason.
inline int CertificateCommonName(const gnutls_datum_t& der, std::string* cn, std::string* why) {
  gnutls_x509_crt_t crt = nullptr;
  int rc = gnutls_x509_crt_init(&crt);
  if (rc < 0) {
    *why = gnutls_strerror(rc);
    return rc;
  }
  rc = gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER);
  char name[kCommonNameBytesMax + 1];
  size_t size = sizeof name;
  if (rc == 0)
    rc = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, name, &size);
  size_t more = 0;
  const bool second =
      rc == 0 && gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 1, 0, nullptr,
                                               &more) != GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE;
  gnutls_x509_crt_deinit(crt);
  if (rc < 0) {
    *why = rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE ? "the subject has no Common Name (CN)"
           : rc == GNUTLS_E_SHORT_MEMORY_BUFFER        ? "the subject's Common Name is too long"
                                                       : gnutls_strerror(rc);
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  if (second) {
    *why = "the subject has more than one Common Name";
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  std::string got(name, size);
  for (char c : got) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      *why = "the subject's Common Name has control characters";
      return GNUTLS_E_CERTIFICATE_ERROR;
    }
  }
  if (got.empty()) {
    *why = "the subject's Common Name is empty";
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  *cn = std::move(got);
  return 0;
}

// Whether `cert_file` (PEM, a certificate and its chain) and `key_file` (PEM) make a server's
// credentials: both parse and the key is the certificate's. 0, or a GnuTLS error code and, in
// *why, the reason. (spd2 checks the control API's files with it before anything starts; gRPC,
// which serves them, says only that its server did not start.)
inline int CheckPemKeyPair(const std::string& cert_file, const std::string& key_file,
                           std::string* why) {
  gnutls_certificate_credentials_t c = nullptr;
  int rc = gnutls_certificate_allocate_credentials(&c);
  if (rc == 0)
    rc = gnutls_certificate_set_x509_key_file2(c, cert_file.c_str(), key_file.c_str(),
                                               GNUTLS_X509_FMT_PEM, nullptr, 0);
  if (c != nullptr) gnutls_certificate_free_credentials(c);
  if (rc >= 0) return 0;
  *why = gnutls_strerror(rc);
  return rc;
}

// The validity period of `der` (a DER certificate), in seconds since the epoch; a GnuTLS error
// code when it cannot be read.
inline int CertificateValidity(const gnutls_datum_t& der, time_t* not_before, time_t* not_after) {
  gnutls_x509_crt_t crt = nullptr;
  int rc = gnutls_x509_crt_init(&crt);
  if (rc < 0) return rc;
  rc = gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER);
  if (rc == 0) {
    *not_before = gnutls_x509_crt_get_activation_time(crt);
    *not_after = gnutls_x509_crt_get_expiration_time(crt);
    if (*not_before == static_cast<time_t>(-1) || *not_after == static_cast<time_t>(-1))
      rc = GNUTLS_E_CERTIFICATE_ERROR;
  }
  gnutls_x509_crt_deinit(crt);
  return rc;
}

// Whether `der` names `host` as a host name (its DNS subjectAltNames, or its CN without them):
// the check a peer makes (gnutls_session_set_verify_cert).
inline bool CertificateNamesHost(const gnutls_datum_t& der, const std::string& host) {
  gnutls_x509_crt_t crt = nullptr;
  if (gnutls_x509_crt_init(&crt) < 0) return false;
  const bool ok = gnutls_x509_crt_import(crt, &der, GNUTLS_X509_FMT_DER) == 0 &&
                  gnutls_x509_crt_check_hostname2(crt, host.c_str(), 0) != 0;
  gnutls_x509_crt_deinit(crt);
  return ok;
}

// The check of the peer's certificate in a handshake: 0 when GnuTLS verifies the chain the peer
// sent against the session's trusted CAs (trusted, every certificate of it within its validity
// period, fit for `purpose`, an extended key usage OID such as GNUTLS_KP_TLS_WWW_CLIENT: one
// that leaves it out is refused, none at all means any use) and CertificateCommonName finds the
// subject's one CN, in *cn. Else a GnuTLS error code, which fails the handshake, and the reason
// in *why.
inline int VerifyPeerCertificate(gnutls_session_t s, const char* purpose, std::string* cn,
                                 std::string* why) {
  if (gnutls_certificate_type_get2(s, GNUTLS_CTYPE_PEERS) != GNUTLS_CRT_X509) {
    *why = "not an x509 certificate";
    return GNUTLS_E_CERTIFICATE_ERROR;
  }
  unsigned n = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(s, &n);
  if (chain == nullptr || n == 0) {
    *why = "no certificate";
    return GNUTLS_E_NO_CERTIFICATE_FOUND;
  }
  gnutls_typed_vdata_st data{};
  data.type = GNUTLS_DT_KEY_PURPOSE_OID;
  data.data = reinterpret_cast<unsigned char*>(const_cast<char*>(purpose));
  unsigned status = 0;
  int rc = gnutls_certificate_verify_peers(s, &data, 1, &status);
  if (rc < 0) {
    *why = std::string("verification failed: ") + gnutls_strerror(rc);
    return rc;
  }
  if (status != 0) {
    gnutls_datum_t text{};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
      *why = std::string(reinterpret_cast<const char*>(text.data), text.size);
      gnutls_free(text.data);
    } else {
      *why = "not trusted";
    }
    return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
  }
  return CertificateCommonName(chain[0], cn, why);
}

}  // namespace spd
