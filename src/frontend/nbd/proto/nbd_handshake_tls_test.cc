// The handshake's TLS modes (NOTLS, SELECTIVETLS as "on", FORCEDTLS as "require") and the
// authorization callback, byte-exact: expected bytes come from the test's Bytes builder and the
// spec's numbers (doc/proto.md, "TLS support"), never from the engine's encoders.
#include <gtest/gtest.h>

#include "frontend/nbd/proto/nbd_handshake.h"
#include "frontend/nbd/proto/nbd_test_util.h"

namespace spd::nbd {
namespace {

using testing::Bytes;
using testing::TestCatalog;
using State = Handshake::State;

constexpr uint32_t kExportNameOpt = 1, kAbortOpt = 2, kListOpt = 3, kStartTlsOpt = 5, kInfoOpt = 6,
                   kGoOpt = 7, kStructuredOpt = 8, kListMetaOpt = 9, kSetMetaOpt = 10;
constexpr uint32_t kAck = 1, kServer = 2, kInfo = 3;
constexpr uint32_t kErrPolicy = 0x80000002, kErrInvalid = 0x80000003, kErrTlsReqd = 0x80000005,
                   kErrUnknown = 0x80000006;
constexpr uint32_t kFixed = 1, kNoZeroes = 2;
constexpr char kTlsRequired[] = "TLS is required: send NBD_OPT_STARTTLS first";

Bytes InfoData(std::string_view name) {
  return Bytes().U32(static_cast<uint32_t>(name.size())).Str(name).U16(0);
}
Bytes MetaData(std::string_view name) {
  return Bytes().U32(static_cast<uint32_t>(name.size())).Str(name).U32(0);
}
// NBD_REP_SERVER data for a TestCatalog export.
Bytes ServerReply(std::string_view name, std::string_view desc) {
  return Bytes().U32(static_cast<uint32_t>(name.size())).Str(name).Str(desc);
}

class TlsHandshake {
 public:
  explicit TlsHandshake(TlsMode mode, const ExportAuthorizer* authorize = nullptr)
      : hs(&cat, HandshakeLimits{}, mode, authorize) {
    hs.ConsumeOutput(hs.output().size());  // the greeting
  }
  Bytes Feed(const Bytes& in, size_t* used = nullptr) {
    size_t n = hs.Feed(in.data(), in.size());
    if (used) *used = n;
    Bytes b;
    for (uint8_t c : hs.output()) b.U8(c);
    hs.ConsumeOutput(hs.output().size());
    return b;
  }
  TestCatalog cat;
  Handshake hs;
};

TEST(HandshakeTls, RequireRefusesEveryOptionButStartTlsAndAbortBeforeTls) {
  TlsHandshake t(TlsMode::kRequire);
  Bytes in = Bytes().U32(kFixed);
  in.Option(kListOpt).Option(kInfoOpt, InfoData("vol0")).Option(kGoOpt, InfoData("vol0"));
  in.Option(kStructuredOpt).Option(kListMetaOpt, MetaData("vol0")).Option(99, Bytes().Str("x"));
  in.Option(kSetMetaOpt, MetaData("vol0"));
  // STARTTLS with data is invalid (the spec's own example), not TLS_REQD.
  in.Option(kStartTlsOpt, Bytes().U8(0));
  Bytes want;
  for (uint32_t opt : {kListOpt, kInfoOpt, kGoOpt, kStructuredOpt, kListMetaOpt, 99u, kSetMetaOpt})
    want.OptError(opt, kErrTlsReqd, kTlsRequired);
  want.OptError(kStartTlsOpt, kErrInvalid, "NBD_OPT_STARTTLS takes no data");
  EXPECT_EQ(t.Feed(in).vec(), want.vec());
  EXPECT_EQ(t.hs.state(), State::kNegotiating);
  // ABORT is still answered.
  EXPECT_EQ(t.Feed(Bytes().Option(kAbortOpt)).vec(), Bytes().OptReply(kAbortOpt, kAck).vec());
  EXPECT_EQ(t.hs.state(), State::kClose);
}

TEST(HandshakeTls, RequireClosesOnExportNameBeforeTls) {
  TlsHandshake t(TlsMode::kRequire);
  Bytes in = Bytes().U32(kFixed | kNoZeroes).Option(kExportNameOpt, Bytes().Str("vol0"));
  EXPECT_EQ(t.Feed(in).size(), 0u);  // no export information: it cannot be errored
  EXPECT_EQ(t.hs.state(), State::kClose);
}

TEST(HandshakeTls, RequireClosesAClientWithoutFixedNewstyle) {
  TlsHandshake t(TlsMode::kRequire);
  EXPECT_EQ(t.Feed(Bytes().U32(kNoZeroes)).size(), 0u);
  EXPECT_EQ(t.hs.state(), State::kClose);
}

TEST(HandshakeTls, StartTlsAcksStopsFeedingAndResetsOptionState) {
  TlsHandshake t(TlsMode::kRequire);
  // Bytes after STARTTLS are not consumed: they belong to TLS (the connection refuses them).
  Bytes in = Bytes().U32(kFixed).Option(kStartTlsOpt).Str("junk");
  size_t used = 0;
  EXPECT_EQ(t.Feed(in, &used).vec(), Bytes().OptReply(kStartTlsOpt, kAck).vec());
  EXPECT_EQ(used, in.size() - 4);
  EXPECT_EQ(t.hs.state(), State::kStartTls);
  EXPECT_FALSE(t.hs.tls());
  t.hs.TlsStarted("alice");
  EXPECT_TRUE(t.hs.tls());
  EXPECT_EQ(t.hs.tls_identity(), "alice");
  EXPECT_EQ(t.hs.state(), State::kNegotiating);
  // Over TLS: options work, a second STARTTLS is invalid, no TLS_REQD ever.
  Bytes in2;
  in2.Option(kStartTlsOpt).Option(kStructuredOpt).Option(kListOpt);
  Bytes want;
  want.OptError(kStartTlsOpt, kErrInvalid, "TLS is already on");
  want.OptReply(kStructuredOpt, kAck);
  want.OptReply(kListOpt, kServer, ServerReply("vol0", "first volume"));
  want.OptReply(kListOpt, kServer, ServerReply("ro", ""));
  want.OptReply(kListOpt, kServer, ServerReply("al", ""));
  want.OptReply(kListOpt, kServer, ServerReply("bare", ""));
  want.OptReply(kListOpt, kAck);
  EXPECT_EQ(t.Feed(in2).vec(), want.vec());
  EXPECT_TRUE(t.hs.structured_replies());
}

TEST(HandshakeTls, StructuredRepliesFromBeforeStartTlsDoNotSurviveIt) {
  TlsHandshake t(TlsMode::kOn);
  Bytes in = Bytes().U32(kFixed).Option(kStructuredOpt).Option(kStartTlsOpt);
  EXPECT_EQ(t.Feed(in).vec(),
            Bytes().OptReply(kStructuredOpt, kAck).OptReply(kStartTlsOpt, kAck).vec());
  EXPECT_TRUE(t.hs.structured_replies());
  t.hs.TlsStarted("");
  EXPECT_FALSE(t.hs.structured_replies());
  // Asking again works (it would be "already on" had the state survived).
  EXPECT_EQ(t.Feed(Bytes().Option(kStructuredOpt)).vec(),
            Bytes().OptReply(kStructuredOpt, kAck).vec());
}

TEST(HandshakeTls, OnServesPlaintextClientsAndOffRefusesStartTlsWithPolicy) {
  TlsHandshake on(TlsMode::kOn);
  Bytes in = Bytes().U32(kFixed | kNoZeroes).Option(kExportNameOpt, Bytes().Str("bare"));
  EXPECT_EQ(on.Feed(in).size(), 10u);
  EXPECT_EQ(on.hs.state(), State::kTransmission);
  TlsHandshake off(TlsMode::kOff);
  EXPECT_EQ(
      off.Feed(Bytes().U32(kFixed).Option(kStartTlsOpt)).vec(),
      Bytes().OptError(kStartTlsOpt, kErrPolicy, "TLS is not configured on this server").vec());
  // A client without fixed newstyle is NOTLS even in kOn mode (spec).
  TlsHandshake old(TlsMode::kOn);
  EXPECT_EQ(
      old.Feed(Bytes().U32(0).Option(kStartTlsOpt)).vec(),
      Bytes().OptError(kStartTlsOpt, kErrPolicy, "TLS is not configured on this server").vec());
}

// alice may use vol0 and al; bob only ro; nobody else anything.
const ExportAuthorizer kTenants = [](std::string_view id, std::string_view name) {
  if (id == "alice") return name == "vol0" || name == "al";
  if (id == "bob") return name == "ro";
  return false;
};

TEST(HandshakeAuthorize, ListShowsOnlyTheIdentitysExports) {
  TlsHandshake t(TlsMode::kRequire, &kTenants);
  t.Feed(Bytes().U32(kFixed).Option(kStartTlsOpt));
  t.hs.TlsStarted("bob");
  Bytes want;
  want.OptReply(kListOpt, kServer, ServerReply("ro", "")).OptReply(kListOpt, kAck);
  EXPECT_EQ(t.Feed(Bytes().Option(kListOpt)).vec(), want.vec());
}

TEST(HandshakeAuthorize, InfoGoAndMetaContextRefuseOthersExportsAsUnknown) {
  TlsHandshake t(TlsMode::kRequire, &kTenants);
  t.Feed(Bytes().U32(kFixed).Option(kStartTlsOpt));
  t.hs.TlsStarted("bob");
  Bytes in;
  in.Option(kInfoOpt, InfoData("vol0")).Option(kGoOpt, InfoData("al"));
  in.Option(kInfoOpt, InfoData("nosuch")).Option(kStructuredOpt);
  in.Option(kListMetaOpt, MetaData("vol0"));
  Bytes want;
  // The same answer as for a name that does not exist: no way to learn what others have.
  want.OptError(kInfoOpt, kErrUnknown, "no such export");
  want.OptError(kGoOpt, kErrUnknown, "no such export");
  want.OptError(kInfoOpt, kErrUnknown, "no such export");
  want.OptReply(kStructuredOpt, kAck);
  want.OptError(kListMetaOpt, kErrUnknown, "no such export");
  EXPECT_EQ(t.Feed(in).vec(), want.vec());
  EXPECT_EQ(t.hs.state(), State::kNegotiating);
  // Refusals of existing exports are counted (the server's uid check counts and logs them);
  // the unknown name is not one.
  EXPECT_EQ(t.hs.denials(), 3u);
  EXPECT_EQ(t.hs.last_denied(), "vol0");
  // Its own export works; the default ("") is the first one it may use: ro for bob.
  Bytes go = t.Feed(Bytes().Option(kGoOpt, InfoData("")));
  Bytes want_go;
  want_go.OptReply(kGoOpt, kInfo, Bytes().U16(3).U32(512).U32(4096).U32(1 << 20));
  // HAS READ_ONLY FLUSH FUA SEND_DF (structured replies are on) MULTI_CONN CACHE.
  want_go.OptReply(kGoOpt, kInfo, Bytes().U16(0).U64(8192).U16(0x058F));
  want_go.OptReply(kGoOpt, kAck);
  EXPECT_EQ(go.vec(), want_go.vec());
  ASSERT_EQ(t.hs.state(), State::kTransmission);
  EXPECT_EQ(t.hs.selected()->name, "ro");
}

TEST(HandshakeAuthorize, ExportNameOfAnothersExportCloses) {
  TlsHandshake t(TlsMode::kRequire, &kTenants);
  t.Feed(Bytes().U32(kFixed | kNoZeroes).Option(kStartTlsOpt));
  t.hs.TlsStarted("alice");
  EXPECT_EQ(t.Feed(Bytes().Option(kExportNameOpt, Bytes().Str("ro"))).size(), 0u);
  EXPECT_EQ(t.hs.state(), State::kClose);
  EXPECT_EQ(t.hs.denials(), 1u);
  EXPECT_EQ(t.hs.last_denied(), "ro");
}

TEST(HandshakeAuthorize, OnModePlaintextGetsTlsRequiredForExportsItMayNotUse) {
  // SELECTIVETLS: for the plaintext client (identity "") alice's exports are TLS-only.
  TlsHandshake t(TlsMode::kOn, &kTenants);
  Bytes in = Bytes().U32(kFixed);
  in.Option(kGoOpt, InfoData("vol0")).Option(kInfoOpt, InfoData("nosuch")).Option(kListOpt);
  Bytes want;
  want.OptError(kGoOpt, kErrTlsReqd, "this export needs TLS credentials");
  want.OptError(kInfoOpt, kErrUnknown, "no such export");
  want.OptReply(kListOpt, kAck);  // nothing listed for ""
  EXPECT_EQ(t.Feed(in).vec(), want.vec());
  EXPECT_EQ(t.hs.denials(), 1u);  // GO vol0; LIST leaves exports out without a refusal
  // After TLS as alice: vol0 is hers.
  t.Feed(Bytes().Option(kStartTlsOpt));
  t.hs.TlsStarted("alice");
  t.Feed(Bytes().Option(kGoOpt, InfoData("vol0")));
  ASSERT_EQ(t.hs.state(), State::kTransmission);
  EXPECT_EQ(t.hs.selected()->name, "vol0");
}

TEST(HandshakeAuthorize, EmptyCallbackAllowsEverything) {
  const ExportAuthorizer none;
  TlsHandshake t(TlsMode::kOff, &none);
  Bytes in = Bytes().U32(kFixed).Option(kListOpt);
  Bytes out = t.Feed(in);
  EXPECT_EQ(out.size(), 4u * 20 + ServerReply("vol0", "first volume").size() +
                            ServerReply("ro", "").size() + ServerReply("al", "").size() +
                            ServerReply("bare", "").size() + 20);
}

}  // namespace
}  // namespace spd::nbd
