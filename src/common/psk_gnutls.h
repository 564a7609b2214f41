// The GnuTLS side of pre-shared keys (common/psk_file.h), shared by NBD's TLS
// (frontend/nbd/nbd_tls.cc) and the replication link's (replica/replica_tls.cc): the priority
// string and the server's key lookup. Header-only: included only by components that link GnuTLS.
#pragma once

#include <gnutls/gnutls.h>

#include <cstring>
#include <string_view>

#include "common/psk_file.h"

namespace spd {

// TLS 1.2 and 1.3 as GnuTLS ships them (NORMAL), plus the PSK key exchanges, forward-secret
// ones first. Without PSK credentials the PSK exchanges are never chosen, without a
// certificate the certificate ones. Our order, not the client's, with ChaCha20 moved last: a
// TLS 1.3 PSK is bound to SHA-256, which rules out AES-256-GCM (SHA-384), and NORMAL lists
// ChaCha20 before AES-128-GCM; on a CPU with AES instructions AES-GCM is many times faster
// (measured here: 5.3 GB/s against 0.33 GB/s, gnutls-cli --benchmark-ciphers).
constexpr char kPskTlsPriority[] =
    "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK:-CHACHA20-POLY1305:+CHACHA20-POLY1305:%SERVER_PRECEDENCE";

// A PSK server callback's answer from `keys`: 0 with *key a copy GnuTLS frees, or -1 (an
// unknown identity, out of memory), which fails the handshake.
inline int PskKeyFor(const PskKeys& keys, const gnutls_datum_t* username, gnutls_datum_t* key) {
  if (username == nullptr) return -1;
  auto it =
      keys.find(std::string_view(reinterpret_cast<const char*>(username->data), username->size));
  if (it == keys.end()) return -1;
  key->data = static_cast<unsigned char*>(gnutls_malloc(it->second.size()));
  if (key->data == nullptr) return -1;
  std::memcpy(key->data, it->second.data(), it->second.size());
  key->size = static_cast<unsigned>(it->second.size());
  return 0;
}

}  // namespace spd
