// The Redfish service's certificate: given PEM files, or a self-signed pair made with OpenSSL's
// libcrypto at first start and kept in the data directory (key mode 0600).
#pragma once

#include <string>

#include "common/status.h"

namespace spd::redfish {

struct CertPair {
  std::string cert_pem, key_pem;
  std::string cert_path, key_path;
  bool generated = false;
};

// Reads cert_path/key_path when given; else DIR/redfish-cert.pem and DIR/redfish-key.pem,
// made first when missing: ECDSA P-256, subject CN=<hostname>, SAN DNS:localhost, DNS:<hostname>,
// IP:127.0.0.1, IP:::1, valid 825 days, SHA-256 signature.
Result<CertPair> LoadOrMakeCert(const std::string& cert_path, const std::string& key_path,
                                const std::string& dir, const std::string& hostname);
// "AB:CD:..." SHA-256 of the certificate's DER, for the log.
std::string CertFingerprint(const std::string& cert_pem);

}  // namespace spd::redfish
