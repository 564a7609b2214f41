#include "redfish/redfish_tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

namespace spd::redfish {
namespace {

constexpr long kValidDays = 825;

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::FromErrno(errno, "open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string BioText(BIO* b) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  return std::string(data, size_t(n));
}

// Writes a new file with this mode (O_EXCL: never over another's file).
Status WriteNew(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(errno, "create " + path);
  const bool ok = write(fd, text.data(), text.size()) == ssize_t(text.size()) && fsync(fd) == 0;
  const int err = errno;
  close(fd);
  if (!ok) return Status::FromErrno(err, "write " + path);
  return Status::Ok();
}

Status AddExt(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return Internal("certificate extension " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return Status::Ok();
}

Result<CertPair> MakeSelfSigned(const std::string& hostname) {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return Internal("EC key generation failed");
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValidDays * 86400);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("spd2 redfish"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(hostname.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  std::string san = "DNS:localhost,IP:127.0.0.1,IP:::1";
  if (!hostname.empty() && hostname != "localhost") san += ",DNS:" + hostname;
  SPD_RETURN_IF_ERROR(AddExt(cert.get(), NID_subject_alt_name, san));
  SPD_RETURN_IF_ERROR(AddExt(cert.get(), NID_basic_constraints, "critical,CA:FALSE"));
  SPD_RETURN_IF_ERROR(AddExt(cert.get(), NID_key_usage, "critical,digitalSignature"));
  SPD_RETURN_IF_ERROR(AddExt(cert.get(), NID_ext_key_usage, "serverAuth"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return Internal("certificate signing");
  BioPtr kb(BIO_new(BIO_s_mem())), cb(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) ||
      !PEM_write_bio_X509(cb.get(), cert.get()))
    return Internal("PEM encoding");
  CertPair p;
  p.key_pem = BioText(kb.get());
  p.cert_pem = BioText(cb.get());
  p.generated = true;
  return p;
}

}  // namespace

Result<CertPair> LoadOrMakeCert(const std::string& cert_path, const std::string& key_path,
                                const std::string& dir, const std::string& hostname) {
  CertPair p;
  p.cert_path = cert_path.empty() ? dir + "/redfish-cert.pem" : cert_path;
  p.key_path = key_path.empty() ? dir + "/redfish-key.pem" : key_path;
  struct stat st {};
  const bool have = stat(p.cert_path.c_str(), &st) == 0 && stat(p.key_path.c_str(), &st) == 0;
  if (!have && !cert_path.empty()) return NotFound("--redfish-cert/--redfish-key missing");
  if (!have) {
    SPD_ASSIGN_OR_RETURN(CertPair made, MakeSelfSigned(hostname));
    unlink(p.key_path.c_str());  // one of the two alone is of no use
    unlink(p.cert_path.c_str());
    SPD_RETURN_IF_ERROR(WriteNew(p.key_path, made.key_pem, 0600));
    SPD_RETURN_IF_ERROR(WriteNew(p.cert_path, made.cert_pem, 0644));
    p.generated = true;
  }
  SPD_ASSIGN_OR_RETURN(p.cert_pem, ReadFile(p.cert_path));
  SPD_ASSIGN_OR_RETURN(p.key_pem, ReadFile(p.key_path));
  if (CertFingerprint(p.cert_pem).empty())
    return InvalidArgument(p.cert_path + ": not a PEM certificate");
  return p;
}

std::string CertFingerprint(const std::string& cert_pem) {
  BioPtr b(BIO_new_mem_buf(cert_pem.data(), int(cert_pem.size())));
  X509Ptr cert(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
  if (!cert) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(cert.get(), EVP_sha256(), md, &n);
  std::string out;
  char hex[4];
  for (unsigned i = 0; i < n; ++i) {
    std::snprintf(hex, sizeof hex, i ? ":%02X" : "%02X", md[i]);
    out += hex;
  }
  return out;
}

}  // namespace spd::redfish
