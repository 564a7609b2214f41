// NBD's own TLS against the real server over TCP: libnbd as the TLS client (PSK and x509), raw
// sockets for what libnbd will not do (options before STARTTLS, STARTTLS then silence), the
// counters, the authorization hook, and the refusal of plaintext on non-loopback addresses.
#include <arpa/inet.h>
#include <gnutls/x509.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>

#include "frontend/nbd/nbd_test_fixture.h"

namespace spd {
namespace {

std::string Hex(const std::vector<uint8_t>& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s.push_back(d[c >> 4]);
    s.push_back(d[c & 15]);
  }
  return s;
}

// A scratch directory with a PSK file (alice, bob), a wrong-key file for alice, a file with an
// unknown identity, and a self-signed certificate for "localhost" / 127.0.0.1 (made with the
// GnuTLS API: no certtool needed) whose certificate doubles as the client's CA.
struct TlsFiles {
  std::string dir;
  std::string psk, wrong_psk, unknown_psk;
  std::string cert, key;
  std::string other_dir;

  TlsFiles() {
    static std::atomic<int> seq{0};
    dir = "/tmp/spd-nbd-tls-" + std::to_string(getpid()) + "-" + std::to_string(seq++);
    mkdir(dir.c_str(), 0700);
    psk = dir + "/keys.psk";
    wrong_psk = dir + "/wrong.psk";
    unknown_psk = dir + "/unknown.psk";
    const std::string alice = Hex(Pattern(32, 1)), bob = Hex(Pattern(32, 2));
    Write(psk, "alice:" + alice + "\nbob:" + bob + "\n");
    Write(wrong_psk, "alice:" + Hex(Pattern(32, 3)) + "\n");
    Write(unknown_psk, "mallory:" + alice + "\n");
    cert = dir + "/server-cert.pem";
    key = dir + "/server-key.pem";
    MakeSelfSigned(cert, key, dir + "/ca-cert.pem");
    // Another CA, which did not sign the server's certificate.
    other_dir = dir + "/other";
    mkdir(other_dir.c_str(), 0700);
    MakeSelfSigned(other_dir + "/c.pem", other_dir + "/k.pem", other_dir + "/ca-cert.pem");
  }
  ~TlsFiles() {
    for (const char* f : {"/keys.psk", "/wrong.psk", "/unknown.psk", "/server-cert.pem",
                          "/server-key.pem", "/ca-cert.pem"})
      unlink((dir + f).c_str());
    for (const char* f : {"/c.pem", "/k.pem", "/ca-cert.pem"}) unlink((other_dir + f).c_str());
    rmdir(other_dir.c_str());
    rmdir(dir.c_str());
  }
  static void Write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    chmod(path.c_str(), 0600);
  }
  static void MakeSelfSigned(const std::string& cert, const std::string& key,
                             const std::string& ca) {
    gnutls_x509_privkey_t k;
    gnutls_x509_crt_t c;
    ASSERT_EQ(gnutls_x509_privkey_init(&k), 0);
    ASSERT_EQ(gnutls_x509_privkey_generate(k, GNUTLS_PK_ECDSA,
                                           GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
              0);
    ASSERT_EQ(gnutls_x509_crt_init(&c), 0);
    gnutls_x509_crt_set_version(c, 3);
    const unsigned char serial[] = {1, 2, 3};
    gnutls_x509_crt_set_serial(c, serial, sizeof serial);
    const time_t now = time(nullptr);
    gnutls_x509_crt_set_activation_time(c, now - 3600);
    gnutls_x509_crt_set_expiration_time(c, now + 86400);
    gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, "localhost", 9);
    gnutls_x509_crt_set_subject_alt_name(c, GNUTLS_SAN_DNSNAME, "localhost", 9, GNUTLS_FSAN_SET);
    const unsigned char ip[] = {127, 0, 0, 1};
    gnutls_x509_crt_set_subject_alt_name(c, GNUTLS_SAN_IPADDRESS, ip, 4, GNUTLS_FSAN_APPEND);
    gnutls_x509_crt_set_basic_constraints(c, 1, -1);  // its own CA
    gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_CERT_SIGN);
    gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_SERVER, 0);
    ASSERT_EQ(gnutls_x509_crt_set_key(c, k), 0);
    ASSERT_EQ(gnutls_x509_crt_sign2(c, c, k, GNUTLS_DIG_SHA256, 0), 0);
    gnutls_datum_t out{};
    ASSERT_EQ(gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_PEM, &out), 0);
    const std::string pem(reinterpret_cast<char*>(out.data), out.size);
    gnutls_free(out.data);
    Write(cert, pem);
    Write(ca, pem);  // libnbd's name for the CA in its certificates dir
    ASSERT_EQ(gnutls_x509_privkey_export2(k, GNUTLS_X509_FMT_PEM, &out), 0);
    Write(key, std::string(reinterpret_cast<char*>(out.data), out.size));
    gnutls_free(out.data);
    gnutls_x509_crt_deinit(c);
    gnutls_x509_privkey_deinit(k);
  }
};

// Waits (a few seconds at most) for a counter the server's thread bumps to reach `want`.
bool CounterReaches(const char* name, uint64_t want) {
  for (int i = 0; i < 300; ++i) {
    if (CounterValue(name) >= want) return true;
    usleep(10'000);
  }
  return CounterValue(name) >= want;
}

class NbdTlsTest : public NbdServerTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    o->tcp_host = "127.0.0.1";
    o->tcp_port = 0;
    o->tls_mode = nbd::TlsMode::kRequire;
    o->tls_files.psk_file = files_.psk;
    o->handshake_timeout_ms = 2000;
  }
  uint16_t port() const { return server_->tcp_port(); }

  // A libnbd handle set up for PSK over TCP (not yet connected).
  nbd_handle* PskClient(const std::string& user, const std::string& keys, int tls) {
    nbd_handle* h = nbd_create();
    EXPECT_NE(h, nullptr);
    EXPECT_EQ(nbd_set_tls(h, tls), 0) << nbd_get_error();
    if (tls != LIBNBD_TLS_DISABLE) {
      EXPECT_EQ(nbd_set_tls_username(h, user.c_str()), 0) << nbd_get_error();
      EXPECT_EQ(nbd_set_tls_psk_file(h, keys.c_str()), 0) << nbd_get_error();
    }
    return h;
  }
  int ConnectTcp(nbd_handle* h, const char* exp) {
    nbd_set_export_name(h, exp);
    return nbd_connect_tcp(h, "127.0.0.1", std::to_string(port()).c_str());
  }

  // A raw TCP socket to the server, its greeting read, FIXED_NEWSTYLE sent.
  int RawTcpStart() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port());
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    uint8_t greet[18];
    uint8_t flags[4];
    Put32(flags, nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        !RecvAll(fd, greet, sizeof greet) || !SendAll(fd, flags, sizeof flags)) {
      close(fd);
      return -1;
    }
    return fd;
  }
  // Sends option `opt` with `data`; returns the reply type of the (single) reply, its message in
  // *msg, or 0 when the connection ended.
  static uint32_t RawOption(int fd, uint32_t opt, const std::string& data, std::string* msg) {
    std::vector<uint8_t> o(16 + data.size());
    Put64(o.data(), nbd::kIHaveOpt);
    Put32(o.data() + 8, opt);
    Put32(o.data() + 12, static_cast<uint32_t>(data.size()));
    std::memcpy(o.data() + 16, data.data(), data.size());
    uint8_t r[20];
    if (!SendAll(fd, o.data(), o.size()) || !RecvAll(fd, r, sizeof r)) return 0;
    if (Get32(r + 8) != opt) return 0;
    std::string m(Get32(r + 16), '\0');
    if (!m.empty() && !RecvAll(fd, m.data(), m.size())) return 0;
    if (msg) *msg = m;
    return Get32(r + 12);
  }
  static std::string GoData(const std::string& name) {
    std::string d(4, '\0');
    Put32(reinterpret_cast<uint8_t*>(d.data()), static_cast<uint32_t>(name.size()));
    return d + name + std::string(2, '\0');
  }

  // A PSK client writes and reads back small, large and many concurrent requests.
  void RoundTrip();

  TlsFiles files_;
};

void NbdTlsTest::RoundTrip() {
  const uint64_t sessions = CounterValue("spd_nbd_tls_sessions_total");
  nbd_handle* h = PskClient("alice", files_.psk, LIBNBD_TLS_REQUIRE);
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
  EXPECT_EQ(nbd_get_size(h), int64_t{64 * kMiB});
  // Small and large requests: replies gathered into records, and replies larger than a record.
  auto small = Pattern(4096, 7);
  auto big = Pattern(4 * kMiB + 512, 8);
  ASSERT_EQ(nbd_pwrite(h, small.data(), small.size(), 0, 0), 0) << nbd_get_error();
  ASSERT_EQ(nbd_pwrite(h, big.data(), big.size(), 1 * kMiB, LIBNBD_CMD_FLAG_FUA), 0)
      << nbd_get_error();
  std::vector<uint8_t> back(big.size());
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 1 * kMiB, 0), 0) << nbd_get_error();
  EXPECT_TRUE(back == big);
  back.resize(small.size());
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0) << nbd_get_error();
  EXPECT_TRUE(back == small);
  // Many requests in flight at once: replies queue up and leave as records of several replies.
  std::vector<std::vector<uint8_t>> bufs(32, std::vector<uint8_t>(4096));
  std::vector<int64_t> cookies;
  for (size_t i = 0; i < bufs.size(); ++i) {
    cookies.push_back(
        nbd_aio_pread(h, bufs[i].data(), 4096, 1 * kMiB + i * 4096, NBD_NULL_COMPLETION, 0));
    ASSERT_GT(cookies.back(), 0) << nbd_get_error();
  }
  while (nbd_aio_in_flight(h) > 0) ASSERT_NE(nbd_poll(h, 5000), -1) << nbd_get_error();
  for (size_t i = 0; i < bufs.size(); ++i) {
    EXPECT_EQ(nbd_aio_command_completed(h, cookies[i]), 1);
    EXPECT_EQ(std::memcmp(bufs[i].data(), big.data() + i * 4096, 4096), 0) << i;
  }
  EXPECT_EQ(nbd_shutdown(h, 0), 0);
  nbd_close(h);
  EXPECT_TRUE(CounterReaches("spd_nbd_tls_sessions_total", sessions + 1));
  // The unix socket stays plaintext (tls_unix is off).
  nbd_handle* u = Connect();
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(nbd_get_tls_negotiated(u), 0);
  back.assign(4096, 0);
  ASSERT_EQ(nbd_pread(u, back.data(), back.size(), 0, 0), 0);
  EXPECT_TRUE(back == small);
  nbd_close(u);
}

TEST_F(NbdTlsTest, PskRoundTripOfData) { RoundTrip(); }

// The same on the epoll reactor (the fallback without io_uring): edge-triggered readiness, and
// the TLS handshake's writes announced without ArmWritable.
// A loaded server: the whole TLS handshake runs inside the read that brought STARTTLS, and the
// client's first option arrives in the same read as its TLS finished message. That option sat
// unread in the read-ahead buffer (no poll announces it) until the negotiation timeout: qemu-img
// against the ASan daemon stalled so (session 7).
class NbdTlsSlowHandshakeTest : public NbdTlsTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsTest::Tweak(o);
    o->test_tls_handshake_read_delay_ms = 100;
  }
};
TEST_F(NbdTlsSlowHandshakeTest, FirstOptionBehindTheFinishedMessageIsRead) {
  const uint64_t timeouts = CounterValue("spd_nbd_handshake_timeouts_total");
  nbd_handle* h = PskClient("alice", files_.psk, LIBNBD_TLS_REQUIRE);
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
  std::vector<uint8_t> back(4096, 1);
  ASSERT_EQ(nbd_pread(h, back.data(), back.size(), 0, 0), 0) << nbd_get_error();
  EXPECT_EQ(back, std::vector<uint8_t>(4096, 0));
  nbd_close(h);
  EXPECT_EQ(CounterValue("spd_nbd_handshake_timeouts_total"), timeouts);
}

class NbdTlsEpollTest : public NbdTlsTest {
 protected:
  void TweakReactor(ReactorOptions* o) override { o->force_epoll = true; }
};

TEST_F(NbdTlsEpollTest, PskRoundTripOfData) { RoundTrip(); }

// --nbd-tls-unix: the unix socket requires TLS too.
class NbdTlsUnixTest : public NbdTlsTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsTest::Tweak(o);
    o->tls_unix = true;
  }
};

TEST_F(NbdTlsUnixTest, UnixSocketRequiresTlsToo) {
  nbd_handle* h = nbd_create();
  nbd_set_export_name(h, "vol0");
  EXPECT_EQ(nbd_connect_unix(h, sock_.c_str()), -1) << "plaintext over the unix socket";
  nbd_close(h);
  h = PskClient("alice", files_.psk, LIBNBD_TLS_REQUIRE);
  nbd_set_export_name(h, "vol0");
  ASSERT_EQ(nbd_connect_unix(h, sock_.c_str()), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(nbd_pread(h, buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  nbd_close(h);
}

TEST_F(NbdTlsTest, RequireRefusesPlaintextClients) {
  nbd_handle* h = PskClient("", "", LIBNBD_TLS_DISABLE);
  EXPECT_EQ(ConnectTcp(h, "vol0"), -1) << "a plaintext client got through";
  nbd_close(h);
  // Raw: every option before STARTTLS is answered TLS_REQD, and negotiation goes on.
  int fd = RawTcpStart();
  ASSERT_GE(fd, 0);
  std::string msg;
  EXPECT_EQ(RawOption(fd, nbd::kOptList, "", &msg), nbd::kRepErrTlsReqd);
  EXPECT_NE(msg.find("TLS is required"), std::string::npos) << msg;
  EXPECT_EQ(RawOption(fd, nbd::kOptGo, GoData("vol0"), nullptr), nbd::kRepErrTlsReqd);
  EXPECT_EQ(RawOption(fd, nbd::kOptInfo, GoData("vol0"), nullptr), nbd::kRepErrTlsReqd);
  EXPECT_EQ(RawOption(fd, nbd::kOptStructuredReply, "", nullptr), nbd::kRepErrTlsReqd);
  EXPECT_EQ(RawOption(fd, 99, "x", nullptr), nbd::kRepErrTlsReqd);
  EXPECT_EQ(RawOption(fd, nbd::kOptStartTls, "x", nullptr), nbd::kRepErrInvalid);
  // NBD_OPT_EXPORT_NAME cannot be errored: the server closes.
  uint8_t o[16 + 4];
  Put64(o, nbd::kIHaveOpt);
  Put32(o + 8, nbd::kOptExportName);
  Put32(o + 12, 4);
  std::memcpy(o + 16, "vol0", 4);
  ASSERT_TRUE(SendAll(fd, o, sizeof o));
  EXPECT_TRUE(ClosedWithin(fd, 3000));
  close(fd);
}

TEST_F(NbdTlsTest, WrongKeyOrUnknownIdentityFailsTheHandshakeAndIsCounted) {
  const uint64_t failures = CounterValue("spd_nbd_tls_handshake_failures_total");
  const uint64_t sessions = CounterValue("spd_nbd_tls_sessions_total");
  nbd_handle* h = PskClient("alice", files_.wrong_psk, LIBNBD_TLS_REQUIRE);
  EXPECT_EQ(ConnectTcp(h, "vol0"), -1) << "a wrong key got through";
  nbd_close(h);
  EXPECT_TRUE(CounterReaches("spd_nbd_tls_handshake_failures_total", failures + 1));
  h = PskClient("mallory", files_.unknown_psk, LIBNBD_TLS_REQUIRE);
  EXPECT_EQ(ConnectTcp(h, "vol0"), -1) << "an unknown identity got through";
  nbd_close(h);
  EXPECT_TRUE(CounterReaches("spd_nbd_tls_handshake_failures_total", failures + 2));
  EXPECT_EQ(CounterValue("spd_nbd_tls_sessions_total"), sessions);
  // The server is fine: the right key works.
  h = PskClient("bob", files_.psk, LIBNBD_TLS_REQUIRE);
  EXPECT_EQ(ConnectTcp(h, "vol1"), 0) << nbd_get_error();
  nbd_close(h);
}

TEST_F(NbdTlsTest, StartTlsThenSilenceIsClosedByTheHandshakeTimeout) {
  const uint64_t timeouts = CounterValue("spd_nbd_handshake_timeouts_total");
  int fd = RawTcpStart();
  ASSERT_GE(fd, 0);
  EXPECT_EQ(RawOption(fd, nbd::kOptStartTls, "", nullptr), nbd::kRepAck);
  const uint64_t t0 = MonotonicNs();
  EXPECT_TRUE(ClosedWithin(fd, 5000)) << "a silent TLS handshake stayed open";
  EXPECT_GE(MonotonicNs() - t0, 1000u * 1'000'000) << "closed before the timeout";
  close(fd);
  EXPECT_TRUE(CounterReaches("spd_nbd_handshake_timeouts_total", timeouts + 1));
}

TEST_F(NbdTlsTest, BytesSentAfterStartTlsBeforeItsReplyClose) {
  const uint64_t failures = CounterValue("spd_nbd_tls_handshake_failures_total");
  int fd = RawTcpStart();
  ASSERT_GE(fd, 0);
  // STARTTLS and, in the same write, a plaintext option a man in the middle could have added.
  uint8_t o[32];
  Put64(o, nbd::kIHaveOpt);
  Put32(o + 8, nbd::kOptStartTls);
  Put32(o + 12, 0);
  Put64(o + 16, nbd::kIHaveOpt);
  Put32(o + 24, nbd::kOptList);
  Put32(o + 28, 0);
  ASSERT_TRUE(SendAll(fd, o, sizeof o));
  EXPECT_TRUE(ClosedWithin(fd, 3000));
  close(fd);
  EXPECT_TRUE(CounterReaches("spd_nbd_tls_handshake_failures_total", failures + 1));
}

// The authorization hook: alice owns vol0, bob vol1.
class NbdTlsAuthorizeTest : public NbdTlsTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsTest::Tweak(o);
    o->authorize = [](std::string_view id, std::string_view name) {
      return (id == "alice" && name == "vol0") || (id == "bob" && name == "vol1");
    };
  }
  std::vector<std::string> List(const std::string& user) {
    std::vector<std::string> names;
    nbd_handle* h = PskClient(user, files_.psk, LIBNBD_TLS_REQUIRE);
    nbd_set_opt_mode(h, true);
    EXPECT_EQ(ConnectTcp(h, ""), 0) << nbd_get_error();
    nbd_list_callback cb = {.callback =
                                [](void* user, const char* name, const char*) {
                                  static_cast<std::vector<std::string>*>(user)->push_back(name);
                                  return 0;
                                },
                            .user_data = &names,
                            .free = nullptr};
    EXPECT_NE(nbd_opt_list(h, cb), -1) << nbd_get_error();
    nbd_opt_abort(h);
    nbd_close(h);
    return names;
  }
};

TEST_F(NbdTlsAuthorizeTest, ListIsFilteredAndGoRefusedForOthersVolumes) {
  EXPECT_EQ(List("alice"), std::vector<std::string>{"vol0"});
  EXPECT_EQ(List("bob"), std::vector<std::string>{"vol1"});
  // alice cannot open bob's volume (it looks like no such export), and can open her own.
  nbd_handle* h = PskClient("alice", files_.psk, LIBNBD_TLS_REQUIRE);
  EXPECT_EQ(ConnectTcp(h, "vol1"), -1) << "alice opened bob's volume";
  nbd_close(h);
  h = PskClient("alice", files_.psk, LIBNBD_TLS_REQUIRE);
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_size(h), int64_t{64 * kMiB});
  nbd_close(h);
  // bob's default export is his own volume.
  h = PskClient("bob", files_.psk, LIBNBD_TLS_REQUIRE);
  ASSERT_EQ(ConnectTcp(h, ""), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_size(h), int64_t{16 * kMiB});
  nbd_close(h);
  // The unix socket is plaintext: identity "", which this hook allows nothing.
  EXPECT_TRUE(ListExports(sock_).empty());
}

// The uid check beside TLS (tls on: plaintext clients are served too): a plaintext client on
// this host is its uid (here: vol1 only), a client with a TLS identity is that identity.
class NbdTlsUidTest : public NbdTlsAuthorizeTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsAuthorizeTest::Tweak(o);
    o->tls_mode = nbd::TlsMode::kOn;
    o->authorize_uid = [](uint32_t, std::string_view name) { return name == "vol1"; };
  }
};

TEST_F(NbdTlsUidTest, TlsIdentityDecidesOverTheUid) {
  EXPECT_EQ(List("alice"), std::vector<std::string>{"vol0"});
  EXPECT_EQ(ListExports(sock_), std::vector<std::string>{"vol1"});
  std::vector<std::string> names;
  nbd_handle* h = PskClient("", "", LIBNBD_TLS_DISABLE);
  nbd_set_opt_mode(h, true);
  ASSERT_EQ(ConnectTcp(h, ""), 0) << nbd_get_error();
  EXPECT_TRUE(ListAndClose(h, &names));
  EXPECT_EQ(names, std::vector<std::string>{"vol1"});
  // In plaintext, vol0 is TLS-only for this uid (on mode answers ERR_TLS_REQD).
  h = PskClient("", "", LIBNBD_TLS_DISABLE);
  EXPECT_EQ(ConnectTcp(h, "vol0"), -1) << "the uid opened vol0 in plaintext";
  nbd_close(h);
}

// x509: a server certificate, the client verifying it against its CA (the same self-signed
// certificate) and the host name.
class NbdTlsX509Test : public NbdTlsTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsTest::Tweak(o);
    o->tls_files.psk_file.clear();
    o->tls_files.cert_file = files_.cert;
    o->tls_files.key_file = files_.key;
  }
};

TEST_F(NbdTlsX509Test, CertificateRoundTripAndAClientThatDistrustsItFails) {
  nbd_handle* h = nbd_create();
  ASSERT_EQ(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
  ASSERT_EQ(nbd_set_tls_certificates(h, files_.dir.c_str()), 0) << nbd_get_error();
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
  ASSERT_NO_FATAL_FAILURE(ExpectWriteReadBack(h, 256 * 1024, 8192, 11));
  nbd_close(h);
  // A client trusting another CA refuses the server's certificate.
  const uint64_t failures = CounterValue("spd_nbd_tls_handshake_failures_total");
  h = nbd_create();
  ASSERT_EQ(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
  ASSERT_EQ(nbd_set_tls_certificates(h, files_.other_dir.c_str()), 0) << nbd_get_error();
  EXPECT_EQ(ConnectTcp(h, "vol0"), -1) << "an untrusted certificate was accepted";
  nbd_close(h);
  EXPECT_TRUE(CounterReaches("spd_nbd_tls_handshake_failures_total", failures + 1));
}

// Client certificates (--nbd-tls-ca): a CA of their own signs them; libnbd's directory per
// client holds the server's certificate as ca-cert.pem and the client's certificate and key.
struct ClientPki {
  std::string dir;
  std::string ca_cert, ca_key;  // the client CA (what --nbd-tls-ca names)

  struct Spec {
    std::vector<std::string> cns{"acme"};            // the subject's CNs (none: an O only)
    const char* purpose = GNUTLS_KP_TLS_WWW_CLIENT;  // extended key usage; nullptr: none
    bool ca = false;
    time_t from = -3600, until = 86400;  // validity, from now
  };

  explicit ClientPki(const std::string& server_cert) : server_cert_(server_cert) {
    static std::atomic<int> seq{0};
    dir = "/tmp/spd-nbd-x509-" + std::to_string(getpid()) + "-" + std::to_string(seq++);
    mkdir(dir.c_str(), 0700);
    ca_cert = dir + "/client-ca-cert.pem";
    ca_key = dir + "/client-ca-key.pem";
    Spec ca;
    ca.cns = {"client CA"};
    ca.purpose = nullptr;
    ca.ca = true;
    Make(ca, "", "", ca_cert, ca_key);
    Make(ca, "", "", dir + "/impostor-ca-cert.pem", dir + "/impostor-ca-key.pem");
    Spec foreign = ca;
    foreign.cns = {"another CA"};
    Make(foreign, "", "", dir + "/foreign-ca-cert.pem", dir + "/foreign-ca-key.pem");
  }
  ~ClientPki() { std::filesystem::remove_all(dir); }

  // A libnbd certificates directory `name` with a client certificate made per `spec`, signed
  // by `issuer`: "client-ca"; "foreign-ca", another CA (its certificates are not even sent:
  // GnuTLS clients send one only if its issuer is among the CAs the server names); or
  // "impostor-ca", another key under the client CA's very name; "" for self-signed. No
  // certificate when `spec` is null. Returns the directory.
  std::string Client(const std::string& name, const Spec* spec,
                     const std::string& issuer = "client-ca") {
    const std::string d = dir + "/" + name;
    mkdir(d.c_str(), 0700);
    std::filesystem::copy_file(server_cert_, d + "/ca-cert.pem");
    if (spec != nullptr) {
      const std::string i = issuer.empty() ? "" : dir + "/" + issuer;
      Make(*spec, i.empty() ? "" : i + "-cert.pem", i.empty() ? "" : i + "-key.pem",
           d + "/client-cert.pem", d + "/client-key.pem");
    }
    return d;
  }

  static void Make(const Spec& spec, const std::string& issuer_cert, const std::string& issuer_key,
                   const std::string& cert, const std::string& key) {
    static std::atomic<unsigned char> serial{1};
    gnutls_x509_privkey_t k, ik = nullptr;
    gnutls_x509_crt_t c, ic = nullptr;
    ASSERT_EQ(gnutls_x509_privkey_init(&k), 0);
    ASSERT_EQ(gnutls_x509_privkey_generate(k, GNUTLS_PK_ECDSA,
                                           GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
              0);
    ASSERT_EQ(gnutls_x509_crt_init(&c), 0);
    gnutls_x509_crt_set_version(c, 3);
    const unsigned char sn[] = {7, serial++};
    gnutls_x509_crt_set_serial(c, sn, sizeof sn);
    const time_t now = time(nullptr);
    gnutls_x509_crt_set_activation_time(c, now + spec.from);
    gnutls_x509_crt_set_expiration_time(c, now + spec.until);
    for (const std::string& cn : spec.cns)
      gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, cn.data(), cn.size());
    if (spec.cns.empty())
      gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, "acme", 4);
    gnutls_x509_crt_set_basic_constraints(c, spec.ca ? 1 : 0, -1);
    gnutls_x509_crt_set_key_usage(
        c, spec.ca ? GNUTLS_KEY_KEY_CERT_SIGN : GNUTLS_KEY_DIGITAL_SIGNATURE);
    if (spec.purpose != nullptr) gnutls_x509_crt_set_key_purpose_oid(c, spec.purpose, 0);
    ASSERT_EQ(gnutls_x509_crt_set_key(c, k), 0);
    if (issuer_cert.empty()) {
      ASSERT_EQ(gnutls_x509_crt_sign2(c, c, k, GNUTLS_DIG_SHA256, 0), 0);
    } else {
      ASSERT_EQ(gnutls_x509_crt_init(&ic), 0);
      ASSERT_EQ(gnutls_x509_privkey_init(&ik), 0);
      gnutls_datum_t d{};
      ASSERT_EQ(gnutls_load_file(issuer_cert.c_str(), &d), 0);
      ASSERT_EQ(gnutls_x509_crt_import(ic, &d, GNUTLS_X509_FMT_PEM), 0);
      gnutls_free(d.data);
      ASSERT_EQ(gnutls_load_file(issuer_key.c_str(), &d), 0);
      ASSERT_EQ(gnutls_x509_privkey_import(ik, &d, GNUTLS_X509_FMT_PEM), 0);
      gnutls_free(d.data);
      ASSERT_EQ(gnutls_x509_crt_sign2(c, ic, ik, GNUTLS_DIG_SHA256, 0), 0);
    }
    gnutls_datum_t out{};
    ASSERT_EQ(gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_PEM, &out), 0);
    TlsFiles::Write(cert, std::string(reinterpret_cast<char*>(out.data), out.size));
    gnutls_free(out.data);
    ASSERT_EQ(gnutls_x509_privkey_export2(k, GNUTLS_X509_FMT_PEM, &out), 0);
    TlsFiles::Write(key, std::string(reinterpret_cast<char*>(out.data), out.size));
    gnutls_free(out.data);
    if (ic) gnutls_x509_crt_deinit(ic);
    if (ik) gnutls_x509_privkey_deinit(ik);
    gnutls_x509_crt_deinit(c);
    gnutls_x509_privkey_deinit(k);
  }

 private:
  std::string server_cert_;
};

// The server requires a client certificate from the client CA; PSK stays on beside it. The
// authorization hook gives acme vol0, globex vol1, alice (PSK) vol0, and records every
// identity it is asked about.
class NbdTlsClientCertTest : public NbdTlsTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsTest::Tweak(o);
    o->tls_files.cert_file = files_.cert;
    o->tls_files.key_file = files_.key;
    o->tls_files.ca_file = pki_.ca_cert;
    {
      std::lock_guard<std::mutex> l(seen_mu);
      seen.clear();
    }
    o->authorize = [](std::string_view id, std::string_view name) {
      {
        std::lock_guard<std::mutex> l(seen_mu);
        seen.emplace(id);
      }
      return ((id == "acme" || id == "alice") && name == "vol0") ||
             (id == "globex" && name == "vol1");
    };
  }
  nbd_handle* CertClient(const std::string& dir) {
    nbd_handle* h = nbd_create();
    EXPECT_EQ(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
    EXPECT_EQ(nbd_set_tls_certificates(h, dir.c_str()), 0) << nbd_get_error();
    return h;
  }
  // The exports `dir`'s client lists; nullopt when it cannot connect.
  std::optional<std::vector<std::string>> List(const std::string& dir) {
    std::vector<std::string> names;
    nbd_handle* h = CertClient(dir);
    nbd_set_opt_mode(h, true);
    if (ConnectTcp(h, "") != 0) {
      nbd_close(h);
      return std::nullopt;
    }
    if (!ListAndClose(h, &names)) return std::nullopt;
    return names;
  }
  static std::set<std::string> Seen() {
    std::lock_guard<std::mutex> l(seen_mu);
    return seen;
  }

  ClientPki pki_{files_.cert};
  static inline std::mutex seen_mu;
  static inline std::set<std::string> seen;
};

TEST_F(NbdTlsClientCertTest, TheCommonNameIsTheIdentity) {
  ClientPki::Spec spec;
  const std::string acme = pki_.Client("acme", &spec);
  spec.cns = {"globex"};
  const std::string globex = pki_.Client("globex", &spec);
  EXPECT_EQ(List(acme), std::vector<std::string>{"vol0"});
  EXPECT_EQ(List(globex), std::vector<std::string>{"vol1"});
  // acme reads and writes its own volume and cannot open globex's.
  nbd_handle* h = CertClient(acme);
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
  ASSERT_NO_FATAL_FAILURE(ExpectWriteReadBack(h, 64 * 1024, 0, 21));
  nbd_close(h);
  h = CertClient(acme);
  EXPECT_EQ(ConnectTcp(h, "vol1"), -1) << "acme opened globex's volume";
  nbd_close(h);
  // A PSK client needs no certificate: its identity is its PSK identity.
  h = PskClient("alice", files_.psk, LIBNBD_TLS_REQUIRE);
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  nbd_close(h);
  EXPECT_EQ(Seen(), (std::set<std::string>{"acme", "globex", "alice"}));
}

TEST_F(NbdTlsClientCertTest, CertificatesTheCaDidNotSignOrUnfitFailTheHandshake) {
  const uint64_t failures = CounterValue("spd_nbd_tls_handshake_failures_total");
  const uint64_t sessions = CounterValue("spd_nbd_tls_sessions_total");
  ClientPki::Spec ok, expired, future, no_cn, two_cns, empty_cn, server_only, self_ca;
  expired.from = -2 * 86400;
  expired.until = -86400;
  future.from = 86400;
  future.until = 2 * 86400;
  no_cn.cns = {};
  two_cns.cns = {"acme", "globex"};
  empty_cn.cns = {""};
  server_only.purpose = GNUTLS_KP_TLS_WWW_SERVER;
  self_ca.cns = {"client CA"};  // self-signed under the CA's name: sent, and must fail
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"no certificate", pki_.Client("nocert", nullptr)},
      {"another CA", pki_.Client("foreign", &ok, "foreign-ca")},
      {"an impostor CA", pki_.Client("impostor", &ok, "impostor-ca")},
      {"self-signed", pki_.Client("self", &ok, "")},
      {"self-signed, the CA's name", pki_.Client("self-ca", &self_ca, "")},
      {"expired", pki_.Client("expired", &expired)},
      {"not yet valid", pki_.Client("future", &future)},
      {"no CN", pki_.Client("no-cn", &no_cn)},
      {"two CNs", pki_.Client("two-cns", &two_cns)},
      {"empty CN", pki_.Client("empty-cn", &empty_cn)},
      {"for servers only", pki_.Client("server-only", &server_only)},
  };
  for (const auto& [what, dir] : bad) {
    EXPECT_EQ(List(dir), std::nullopt) << what << ": served";
    nbd_handle* h = CertClient(dir);
    EXPECT_EQ(ConnectTcp(h, "vol0"), -1) << what << ": opened vol0";
    nbd_close(h);
  }
  EXPECT_TRUE(CounterReaches("spd_nbd_tls_handshake_failures_total", failures + 2 * bad.size()));
  EXPECT_EQ(CounterValue("spd_nbd_tls_handshake_failures_total"), failures + 2 * bad.size());
  EXPECT_EQ(CounterValue("spd_nbd_tls_sessions_total"), sessions);
  EXPECT_TRUE(Seen().empty()) << "a refused client got to negotiate";
  // The server is fine: a good certificate works.
  EXPECT_EQ(List(pki_.Client("acme", &ok)), std::vector<std::string>{"vol0"});
}

// Without a CA file no client certificate is asked for: an x509 client has no identity ("",
// which this hook allows vol1 and nothing else), whether it has a certificate or not.
class NbdTlsX509NoCaTest : public NbdTlsX509Test {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsX509Test::Tweak(o);
    o->authorize = [](std::string_view id, std::string_view name) {
      return id.empty() && name == "vol1";
    };
  }
};

TEST_F(NbdTlsX509NoCaTest, ClientsHaveNoIdentity) {
  ClientPki pki(files_.cert);
  ClientPki::Spec spec;
  for (const std::string& dir : {pki.Client("nocert", nullptr), pki.Client("acme", &spec)}) {
    nbd_handle* h = nbd_create();
    ASSERT_EQ(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
    ASSERT_EQ(nbd_set_tls_certificates(h, dir.c_str()), 0) << nbd_get_error();
    ASSERT_EQ(ConnectTcp(h, "vol1"), 0) << dir << ": " << nbd_get_error();
    nbd_close(h);
    h = nbd_create();
    ASSERT_EQ(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
    ASSERT_EQ(nbd_set_tls_certificates(h, dir.c_str()), 0) << nbd_get_error();
    EXPECT_EQ(ConnectTcp(h, "vol0"), -1) << dir << ": vol0 opened, so the identity was not ''";
    nbd_close(h);
  }
}

// "on": STARTTLS offered, plaintext clients served on TCP too.
class NbdTlsOnTest : public NbdTlsTest {
 protected:
  void Tweak(NbdServerOptions* o) override {
    NbdTlsTest::Tweak(o);
    o->tls_mode = nbd::TlsMode::kOn;
  }
};

TEST_F(NbdTlsOnTest, PlaintextAndTlsClientsBothWork) {
  nbd_handle* h = PskClient("", "", LIBNBD_TLS_DISABLE);
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_tls_negotiated(h), 0);
  nbd_close(h);
  h = PskClient("alice", files_.psk, LIBNBD_TLS_REQUIRE);
  ASSERT_EQ(ConnectTcp(h, "vol0"), 0) << nbd_get_error();
  EXPECT_EQ(nbd_get_tls_negotiated(h), 1);
  nbd_close(h);
}

TEST(NbdTlsOptions, PlaintextOnANonLoopbackAddressNeedsInsecure) {
  NbdServerOptions o;
  o.tcp_host = "0.0.0.0";
  Status s = NbdServer::CheckOptions(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("--nbd-tls require"), std::string::npos) << s.ToString();
  EXPECT_NE(s.ToString().find("--nbd-insecure"), std::string::npos) << s.ToString();
  o.tls_mode = nbd::TlsMode::kOn;  // plaintext still allowed: not enough
  o.tls_files.psk_file = "/nonexistent";
  EXPECT_FALSE(NbdServer::CheckOptions(o).ok());
  o.tls_mode = nbd::TlsMode::kRequire;
  EXPECT_TRUE(NbdServer::CheckOptions(o).ok()) << NbdServer::CheckOptions(o).ToString();
  o = NbdServerOptions{};
  o.tcp_host = "0.0.0.0";
  o.allow_insecure_tcp = true;
  EXPECT_TRUE(NbdServer::CheckOptions(o).ok());
  o.tcp_host = "127.0.0.5";
  o.allow_insecure_tcp = false;
  EXPECT_TRUE(NbdServer::CheckOptions(o).ok());
  // TLS without credentials, credentials without TLS.
  o.tls_mode = nbd::TlsMode::kRequire;
  EXPECT_FALSE(NbdServer::CheckOptions(o).ok());
  o.tls_mode = nbd::TlsMode::kOff;
  o.tls_files.psk_file = "/x";
  EXPECT_FALSE(NbdServer::CheckOptions(o).ok());
}

TEST(NbdTlsCredentialsTest, MalformedPskFilesAreRefusedWithTheirLine) {
  TlsFiles f;
  const std::string bad = f.dir + "/bad.psk";
  for (const char* text : {"alice\n", "alice:abc\n", "alice:zz00\n", "alice:00112233\n", "",
                           "alice:00112233445566778899aabbccddeeff\nalice:"
                           "00112233445566778899aabbccddeeff\n"}) {
    TlsFiles::Write(bad, text);
    auto c = NbdTlsCredentials::Load(NbdTlsFiles{bad, "", "", ""});
    EXPECT_FALSE(c.ok()) << "accepted: " << text;
  }
  TlsFiles::Write(bad, "\nalice:00112233445566778899aabbccddeeff\r\n\n");
  auto c = NbdTlsCredentials::Load(NbdTlsFiles{bad, "", "", ""});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c.value()->psk_identities(), 1u);
  unlink(bad.c_str());
  EXPECT_FALSE(NbdTlsCredentials::Load(NbdTlsFiles{f.dir + "/none", "", "", ""}).ok());
  EXPECT_FALSE(NbdTlsCredentials::Load(NbdTlsFiles{"", f.cert, "", ""}).ok());
  EXPECT_TRUE(NbdTlsCredentials::Load(NbdTlsFiles{"", f.cert, f.key, ""}).ok());
}

}  // namespace
}  // namespace spd
