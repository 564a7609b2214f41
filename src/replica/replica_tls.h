// TLS on the replication link (docs/replication.md, "TLS"), with GnuTLS, by one of two kinds of
// credentials:
//   - pre-shared keys from a psktool-format file (common/psk_file.h), the same file on every
//     node: a primary connects with the file's first identity and key; a replica accepts any
//     identity the file holds;
//   - x509 certificates: each node has its own certificate and key, signed by a CA every node
//     trusts, naming the node (--node-name) as a host name (a DNS subjectAltName, or the CN
//     without one). A primary verifies the replica's chain and that it names the node it
//     connects to; a replica asks for the primary's certificate and verifies its chain, and
//     the replica server asks etcd's record whether that node (PeerNode) is the volume's primary
//     at the hello's epoch (ReplicaServerOptions::authorize_primary). Each certificate serves
//     both ends (a node is a primary of some volumes and a replica of others): an extended key
//     usage, if it has one, must allow TLS server and client authentication.
// With either, a replica server takes only TLS sessions and a primary connects only over TLS:
// a peer without the key or an accepted certificate (or without TLS) fails the handshake, and
// nothing it sends is applied. TLS 1.3 and 1.2; with keys, the PSK key exchanges (ECDHE-PSK
// first: forward secrecy); AES-GCM first.
//
// Thread-safety: Load once; sessions from any thread (the credentials are read-only once
// loaded). Each session is used by one thread at a time.
#pragma once

#include <gnutls/gnutls.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/psk_file.h"
#include "common/status.h"

namespace spd {

class ReplicaTls {
 public:
  ~ReplicaTls();
  ReplicaTls(const ReplicaTls&) = delete;
  ReplicaTls& operator=(const ReplicaTls&) = delete;

  [[nodiscard]] static Result<std::unique_ptr<ReplicaTls>> Load(const std::string& psk_file);
  // This node's certificate (chain) and key, and the CAs that sign the nodes' certificates: PEM
  // files.
  // Refused: an expired certificate (or one not valid yet), or one that does not name
  // `node_name` as a host name (peers would refuse it).
  [[nodiscard]] static Result<std::unique_ptr<ReplicaTls>> LoadCertificates(
      const std::string& cert_file, const std::string& key_file, const std::string& ca_file,
      const std::string& node_name);

  // Sessions on a non-blocking socket; the caller owns them (gnutls_deinit). A client session
  // with certificates accepts only a certificate naming `peer_node`, the node it connects to.
  [[nodiscard]] Result<gnutls_session_t> NewServerSession(int fd) const;
  [[nodiscard]] Result<gnutls_session_t> NewClientSession(int fd,
                                                          const std::string& peer_node) const;

  const std::string& identity() const { return identity_; }
  // Whether the link authenticates nodes by certificates (LoadCertificates).
  bool certificates() const { return cert_ != nullptr; }
  // The node a session's peer is, by its certificate's CN (verified in the handshake); "" with
  // keys, or before the handshake.
  static std::string PeerNode(gnutls_session_t session);

 private:
  ReplicaTls() = default;
  Status InitPriority();
  static int Lookup(gnutls_session_t session, const gnutls_datum_t* username, gnutls_datum_t* key);
  static int VerifyPrimary(gnutls_session_t session);

  PskKeys keys_;
  std::string identity_;  // the file's first: what this node connects with
  gnutls_psk_server_credentials_t server_ = nullptr;
  gnutls_psk_client_credentials_t client_ = nullptr;
  gnutls_certificate_credentials_t cert_ = nullptr;  // both ends, with certificates
  gnutls_priority_t priority_ = nullptr;
};

// Non-blocking steps, in the terms of recv and send.
// Handshake: 0 done; 1 not yet (wait for TlsWantsWrite() ? writable : readable); -1 failed
// (*why says why).
int TlsHandshakeStep(gnutls_session_t s, std::string* why);
bool TlsWantsWrite(gnutls_session_t s);
// >0 bytes; 0 the peer closed; -1 with errno EAGAIN (nothing now) or EIO (a TLS error).
ssize_t TlsRecv(gnutls_session_t s, void* buf, size_t n);
// >0 bytes sent (all of them: records are not split); -1 with errno EAGAIN, *pending set:
// call again (any buf, it is not read again) once writable; -1 with errno EIO.
ssize_t TlsSend(gnutls_session_t s, const void* buf, size_t n, bool* pending);
// Blocking with a deadline (the connecting thread): the handshake, then exactly n bytes.
bool TlsHandshakeUntil(gnutls_session_t s, int fd, uint64_t deadline_ns, std::string* why);
bool TlsIoAll(gnutls_session_t s, int fd, void* buf, size_t n, bool out, uint64_t deadline_ns);

}  // namespace spd
