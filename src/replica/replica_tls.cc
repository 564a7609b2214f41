#include "replica/replica_tls.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/counters.h"
#include "common/log.h"
#include "common/psk_gnutls.h"
#include "common/x509_gnutls.h"
#include "reactor/reactor.h"

namespace spd {
namespace {

Gauge certificate_expiry("spd_replication_tls_certificate_expiry_seconds",
                         "When this node's replication certificate expires (seconds since the "
                         "epoch; 0 without --replication-tls-cert)");

Status GnutlsError(const std::string& what, int rc) {
  return InvalidArgument("replication tls: " + what + ": " + gnutls_strerror(rc));
}

bool Wait(int fd, bool out, uint64_t deadline_ns) {
  for (;;) {
    const uint64_t now = MonotonicNs();
    if (now >= deadline_ns) return false;
    pollfd p{fd, static_cast<short>(out ? POLLOUT : POLLIN), 0};
    const int r = poll(&p, 1, static_cast<int>((deadline_ns - now) / 1'000'000 + 1));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

}  // namespace

ReplicaTls::~ReplicaTls() {
  for (auto& [id, key] : keys_) WipeKey(&key);
  if (priority_) gnutls_priority_deinit(priority_);
  if (server_) gnutls_psk_free_server_credentials(server_);
  if (client_) gnutls_psk_free_client_credentials(client_);
  if (cert_) gnutls_certificate_free_credentials(cert_);
}

Status ReplicaTls::InitPriority() {
  const char* err = nullptr;
  const int rc = gnutls_priority_init2(&priority_, kPskTlsPriority, &err, 0);
  if (rc < 0) return GnutlsError(std::string("priorities near '") + (err ? err : "") + "'", rc);
  return Status::Ok();
}

Result<std::unique_ptr<ReplicaTls>> ReplicaTls::LoadCertificates(const std::string& cert_file,
                                                                 const std::string& key_file,
                                                                 const std::string& ca_file,
                                                                 const std::string& node_name) {
  std::unique_ptr<ReplicaTls> t(new ReplicaTls());
  int rc = gnutls_certificate_allocate_credentials(&t->cert_);
  if (rc < 0) return GnutlsError("certificate credentials", rc);
  rc = gnutls_certificate_set_x509_key_file(t->cert_, cert_file.c_str(), key_file.c_str(),
                                            GNUTLS_X509_FMT_PEM);
  if (rc < 0) return GnutlsError(cert_file + " / " + key_file, rc);
  // What peers check of it, checked now: a certificate they would refuse cannot take effect.
  gnutls_datum_t der{};
  rc = gnutls_certificate_get_crt_raw(t->cert_, 0, 0, &der);
  time_t not_before = 0, not_after = 0;
  if (rc == 0) rc = CertificateValidity(der, &not_before, &not_after);
  if (rc < 0) return GnutlsError(cert_file, rc);
  const time_t now = time(nullptr);
  const auto date = [](time_t t) {
    char b[32];
    tm u{};
    gmtime_r(&t, &u);
    strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S UTC", &u);
    return std::string(b);
  };
  if (now >= not_after)
    return InvalidArgument("replication tls: " + cert_file + " expired on " + date(not_after));
  if (now < not_before)
    return InvalidArgument("replication tls: " + cert_file + " is not valid before " +
                           date(not_before));
  if (!CertificateNamesHost(der, node_name))
    return InvalidArgument("replication tls: " + cert_file + " does not name this node, '" +
                           node_name +
                           "' (its DNS subjectAltNames, or its CN without them): primaries would "
                           "refuse it");
  certificate_expiry.Set(static_cast<uint64_t>(not_after));
  if (not_after - now < 7 * 86400)
    SPD_LOG_WARN("replication tls: %s expires on %s", cert_file.c_str(), date(not_after).c_str());
  rc = gnutls_certificate_set_known_dh_params(t->cert_, GNUTLS_SEC_PARAM_MEDIUM);
  if (rc < 0) return GnutlsError("certificate DH parameters", rc);
  rc = gnutls_certificate_set_x509_trust_file(t->cert_, ca_file.c_str(), GNUTLS_X509_FMT_PEM);
  if (rc < 0) return GnutlsError(ca_file, rc);
  if (rc == 0) return InvalidArgument("replication tls: no CA certificate in " + ca_file);
  SPD_RETURN_IF_ERROR(t->InitPriority());
  return t;
}

// The replica's check of a primary's certificate, in the handshake: its chain, fit for TLS
// client use, with one CN (the node's name, logged when refused).
int ReplicaTls::VerifyPrimary(gnutls_session_t session) {
  std::string cn, why;
  const int rc = VerifyPeerCertificate(session, GNUTLS_KP_TLS_WWW_CLIENT, &cn, &why);
  if (rc != 0) SPD_LOG_INFO("replication tls: a primary's certificate refused: %s", why.c_str());
  return rc;
}

Result<std::unique_ptr<ReplicaTls>> ReplicaTls::Load(const std::string& psk_file) {
  std::unique_ptr<ReplicaTls> t(new ReplicaTls());
  SPD_RETURN_IF_ERROR(LoadPskFile(psk_file, "replication tls", &t->keys_, &t->identity_));
  int rc = gnutls_psk_allocate_server_credentials(&t->server_);
  if (rc < 0) return GnutlsError("PSK server credentials", rc);
  gnutls_psk_set_server_credentials_function2(t->server_, &ReplicaTls::Lookup);
  rc = gnutls_psk_set_server_known_dh_params(t->server_, GNUTLS_SEC_PARAM_MEDIUM);
  if (rc < 0) return GnutlsError("PSK DH parameters", rc);
  rc = gnutls_psk_allocate_client_credentials(&t->client_);
  if (rc < 0) return GnutlsError("PSK client credentials", rc);
  const std::string& key = t->keys_.at(t->identity_);
  const gnutls_datum_t k{reinterpret_cast<unsigned char*>(const_cast<char*>(key.data())),
                         static_cast<unsigned>(key.size())};
  rc = gnutls_psk_set_client_credentials(t->client_, t->identity_.c_str(), &k, GNUTLS_PSK_KEY_RAW);
  if (rc < 0) return GnutlsError("PSK client credentials", rc);
  SPD_RETURN_IF_ERROR(t->InitPriority());
  return t;
}

int ReplicaTls::Lookup(gnutls_session_t session, const gnutls_datum_t* username,
                       gnutls_datum_t* key) {
  const auto* self = static_cast<const ReplicaTls*>(gnutls_session_get_ptr(session));
  return self == nullptr ? -1 : PskKeyFor(self->keys_, username, key);
}

std::string ReplicaTls::PeerNode(gnutls_session_t session) {
  if (gnutls_auth_get_type(session) != GNUTLS_CRD_CERTIFICATE) return "";
  unsigned n = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(session, &n);
  std::string cn, why;
  if (chain == nullptr || n == 0 || CertificateCommonName(chain[0], &cn, &why) != 0) return "";
  return cn;
}

Result<gnutls_session_t> ReplicaTls::NewServerSession(int fd) const {
  gnutls_session_t s = nullptr;
  int rc = gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (rc < 0) return GnutlsError("session", rc);
  gnutls_session_set_ptr(s, const_cast<ReplicaTls*>(this));
  rc = gnutls_priority_set(s, priority_);
  if (rc == 0)
    rc = cert_ ? gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cert_)
               : gnutls_credentials_set(s, GNUTLS_CRD_PSK, server_);
  if (rc < 0) {
    gnutls_deinit(s);
    return GnutlsError("session", rc);
  }
  if (cert_) {
    // A primary without a certificate, or with one VerifyPrimary refuses, fails the handshake.
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_function(s, &ReplicaTls::VerifyPrimary);
  }
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, 0);  // the session's hello timeout covers it
  return s;
}

Result<gnutls_session_t> ReplicaTls::NewClientSession(int fd, const std::string& peer_node) const {
  gnutls_session_t s = nullptr;
  int rc = gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (rc < 0) return GnutlsError("session", rc);
  rc = gnutls_priority_set(s, priority_);
  if (rc == 0)
    rc = cert_ ? gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cert_)
               : gnutls_credentials_set(s, GNUTLS_CRD_PSK, client_);
  // The replica's chain, fit for TLS server use, naming the node this primary connects to (as
  // a host name: its DNS subjectAltNames, or its CN without them), else the handshake fails.
  if (rc == 0 && cert_) gnutls_session_set_verify_cert(s, peer_node.c_str(), 0);
  if (rc < 0) {
    gnutls_deinit(s);
    return GnutlsError("session", rc);
  }
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, 0);  // the caller's deadline covers it
  return s;
}

int TlsHandshakeStep(gnutls_session_t s, std::string* why) {
  for (;;) {
    const int rc = gnutls_handshake(s);
    if (rc == GNUTLS_E_SUCCESS) return 0;
    if (rc == GNUTLS_E_AGAIN) return 1;
    if (rc == GNUTLS_E_INTERRUPTED || (rc < 0 && !gnutls_error_is_fatal(rc))) continue;
    *why = gnutls_strerror(rc);
    gnutls_datum_t text{};
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
        gnutls_certificate_verification_status_print(gnutls_session_get_verify_cert_status(s),
                                                     GNUTLS_CRT_X509, &text, 0) == 0) {
      *why += std::string(" ") + std::string(reinterpret_cast<const char*>(text.data), text.size);
      gnutls_free(text.data);
    }
    return -1;
  }
}

bool TlsWantsWrite(gnutls_session_t s) { return gnutls_record_get_direction(s) == 1; }

ssize_t TlsRecv(gnutls_session_t s, void* buf, size_t n) {
  for (;;) {
    const ssize_t r = gnutls_record_recv(s, buf, n);
    if (r >= 0) return r;
    if (r == GNUTLS_E_INTERRUPTED) continue;
    if (r == GNUTLS_E_AGAIN) {
      errno = EAGAIN;
      return -1;
    }
    if (r == GNUTLS_E_PREMATURE_TERMINATION) return 0;  // closed without close_notify
    errno = EIO;
    return -1;
  }
}

ssize_t TlsSend(gnutls_session_t s, const void* buf, size_t n, bool* pending) {
  for (;;) {
    const ssize_t r = *pending ? gnutls_record_send(s, nullptr, 0) : gnutls_record_send(s, buf, n);
    if (r >= 0) {
      *pending = false;
      return r;
    }
    if (r == GNUTLS_E_INTERRUPTED) continue;
    if (r == GNUTLS_E_AGAIN) {
      *pending = true;
      errno = EAGAIN;
      return -1;
    }
    errno = EIO;
    return -1;
  }
}

bool TlsHandshakeUntil(gnutls_session_t s, int fd, uint64_t deadline_ns, std::string* why) {
  for (;;) {
    const int rc = TlsHandshakeStep(s, why);
    if (rc == 0) return true;
    if (rc < 0) return false;
    if (!Wait(fd, TlsWantsWrite(s), deadline_ns)) {
      *why = "no TLS handshake in time";
      return false;
    }
  }
}

bool TlsIoAll(gnutls_session_t s, int fd, void* buf, size_t n, bool out, uint64_t deadline_ns) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t done = 0;
  bool pending = false;
  while (done < n) {
    const ssize_t r =
        out ? TlsSend(s, p + done, n - done, &pending) : TlsRecv(s, p + done, n - done);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0 || errno != EAGAIN) return false;
    if (!Wait(fd, out || TlsWantsWrite(s), deadline_ns)) return false;
  }
  return true;
}

}  // namespace spd
