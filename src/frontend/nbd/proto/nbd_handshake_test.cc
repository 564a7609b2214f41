// Byte-exact transcripts of the fixed newstyle handshake. Expected bytes are
// built with the test's own Bytes builder and the spec's numeric values, never
// with the engine's encoders.
#include "frontend/nbd/proto/nbd_handshake.h"

#include <gtest/gtest.h>

#include <random>

#include "common/counters.h"
#include "frontend/nbd/proto/nbd_test_util.h"

namespace spd::nbd {
namespace {

using testing::Bytes;
using testing::Greeting;
using testing::TestCatalog;
using State = Handshake::State;

// Values from doc/proto.md, spelled here so that a wrong constant in
// nbd_format.h fails.
constexpr uint32_t kExportNameOpt = 1, kAbortOpt = 2, kListOpt = 3, kStartTlsOpt = 5, kInfoOpt = 6,
                   kGoOpt = 7, kStructuredOpt = 8, kListMetaOpt = 9, kSetMetaOpt = 10;
constexpr uint32_t kAck = 1, kServer = 2, kInfo = 3, kMetaContext = 4;
constexpr uint32_t kErrUnsup = 0x80000001, kErrPolicy = 0x80000002, kErrInvalid = 0x80000003,
                   kErrUnknown = 0x80000006, kErrTooBig = 0x80000009;
constexpr uint16_t kInfoExportType = 0, kInfoNameType = 1, kInfoDescType = 2, kInfoBsType = 3;
// Transmission flags of the test exports, worked out by hand from the spec's
// bit numbers.
constexpr uint16_t kVol0Flags = 0x0D6D;  // HAS FLUSH FUA TRIM WZ MULTI_CONN CACHE FAST_ZERO
constexpr uint16_t kVol0StructuredFlags = 0x0DED;  // ... and SEND_DF
constexpr uint16_t kRoFlags = 0x050F;              // HAS READ_ONLY FLUSH FUA MULTI_CONN CACHE
constexpr uint16_t kBareFlags = 0x0011;            // HAS ROTATIONAL

constexpr uint32_t kFixed = 1, kNoZeroes = 2;

class HandshakeTest : public ::testing::Test {
 protected:
  // Feeds everything in one call and returns the output produced after the
  // greeting.
  Bytes Run(const Bytes& in, size_t* consumed = nullptr) {
    size_t n = hs_.Feed(in.data(), in.size());
    if (consumed) *consumed = n;
    return Output();
  }
  Bytes Output() {
    Bytes b;
    for (uint8_t c : hs_.output()) b.U8(c);
    hs_.ConsumeOutput(hs_.output().size());
    return b;
  }
  void SetUp() override { ASSERT_EQ(Output().vec(), Greeting().vec()); }

  TestCatalog cat_;
  Handshake hs_{&cat_};
};

Bytes InfoData(std::string_view name, std::vector<uint16_t> reqs = {}) {
  Bytes b;
  b.U32(static_cast<uint32_t>(name.size())).Str(name).U16(static_cast<uint16_t>(reqs.size()));
  for (uint16_t r : reqs) b.U16(r);
  return b;
}

Bytes MetaData(std::string_view name, std::vector<std::string_view> queries) {
  Bytes b;
  b.U32(static_cast<uint32_t>(name.size())).Str(name).U32(static_cast<uint32_t>(queries.size()));
  for (std::string_view q : queries) b.U32(static_cast<uint32_t>(q.size())).Str(q);
  return b;
}

Bytes InfoExport(uint64_t size, uint16_t flags) {
  return Bytes().U16(kInfoExportType).U64(size).U16(flags);
}

TEST(HandshakeGreeting, IsExact) {
  TestCatalog cat;
  Handshake hs(&cat);
  const std::vector<uint8_t> want = {'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C',  'I',
                                     'H', 'A', 'V', 'E', 'O', 'P', 'T', 0x00, 0x03};
  EXPECT_EQ(hs.output(), want);
  EXPECT_EQ(hs.state(), State::kNegotiating);
}

TEST_F(HandshakeTest, UnknownClientFlagClosesWithoutReply) {
  const uint64_t before = CounterValue("spd_nbd_handshake_violations_total");
  EXPECT_EQ(Run(Bytes().U32(kFixed | 4)).size(), 0u);
  EXPECT_EQ(hs_.state(), State::kClose);
  EXPECT_EQ(hs_.errors(), 1u);
  EXPECT_EQ(CounterValue("spd_nbd_handshake_violations_total"), before + 1);
}

TEST_F(HandshakeTest, ExportNameRepliesSizeFlagsAndZeroes) {
  size_t used = 0;
  Bytes in = Bytes().U32(kFixed).Option(kExportNameOpt, Bytes().Str("vol0"));
  Bytes got = Run(Bytes(in).U32(0x25609513),
                  &used);  // a request header starts right away
  EXPECT_EQ(got.vec(), Bytes().U64(1ull << 30).U16(kVol0Flags).Zeroes(124).vec());
  EXPECT_EQ(used, in.size());  // the transmission bytes are left for the caller
  EXPECT_EQ(hs_.state(), State::kTransmission);
  EXPECT_EQ(hs_.selected(), &cat_.vol0);
  EXPECT_EQ(hs_.transmission_flags(), kVol0Flags);
  EXPECT_FALSE(hs_.structured_replies());
  EXPECT_FALSE(hs_.base_allocation());
}

TEST_F(HandshakeTest, ExportNameWithNoZeroesAndEmptyNameSelectsDefault) {
  Bytes got = Run(Bytes().U32(kFixed | kNoZeroes).Option(kExportNameOpt));
  EXPECT_EQ(got.vec(), Bytes().U64(1ull << 30).U16(kVol0Flags).vec());
  EXPECT_TRUE(hs_.no_zeroes());
  EXPECT_EQ(hs_.selected(), &cat_.vol0);
}

TEST_F(HandshakeTest, ClientWithoutFixedNewstyleIsServed) {
  Bytes got = Run(Bytes().U32(0).Option(kExportNameOpt, Bytes().Str("ro")));
  EXPECT_EQ(got.vec(), Bytes().U64(8192).U16(kRoFlags).Zeroes(124).vec());
  EXPECT_EQ(hs_.state(), State::kTransmission);
}

TEST_F(HandshakeTest, ExportNameUnknownCloses) {
  EXPECT_EQ(Run(Bytes().U32(kFixed).Option(kExportNameOpt, Bytes().Str("nope"))).size(), 0u);
  EXPECT_EQ(hs_.state(), State::kClose);
}

TEST_F(HandshakeTest, AbortAcksThenCloses) {
  Bytes got = Run(Bytes().U32(kFixed).Option(kAbortOpt, Bytes().Str("ignored")));
  EXPECT_EQ(got.vec(), Bytes().OptReply(kAbortOpt, kAck).vec());
  EXPECT_EQ(hs_.state(), State::kClose);
  EXPECT_EQ(hs_.errors(), 0u);
}

TEST_F(HandshakeTest, ListSendsOneServerReplyPerExportThenAck) {
  Bytes got = Run(Bytes().U32(kFixed).Option(kListOpt));
  Bytes want;
  want.OptReply(kListOpt, kServer, Bytes().U32(4).Str("vol0").Str("first volume"));
  want.OptReply(kListOpt, kServer, Bytes().U32(2).Str("ro"));
  want.OptReply(kListOpt, kServer, Bytes().U32(2).Str("al"));
  want.OptReply(kListOpt, kServer, Bytes().U32(4).Str("bare"));
  want.OptReply(kListOpt, kAck);
  EXPECT_EQ(got.vec(), want.vec());
  EXPECT_EQ(hs_.state(), State::kNegotiating);
}

TEST_F(HandshakeTest, ListWithDataIsInvalid) {
  const uint64_t before = CounterValue("spd_nbd_option_errors_total");
  Bytes got = Run(Bytes().U32(kFixed).Option(kListOpt, Bytes().U8(0)));
  EXPECT_EQ(got.vec(), Bytes().OptError(kListOpt, kErrInvalid, "NBD_OPT_LIST takes no data").vec());
  EXPECT_EQ(hs_.state(), State::kNegotiating);
  EXPECT_EQ(CounterValue("spd_nbd_option_errors_total"), before + 1);
}

TEST_F(HandshakeTest, InfoWithoutRequestsOnDefaultSizesSendsOnlyExport) {
  Bytes got = Run(Bytes().U32(kFixed).Option(kInfoOpt, InfoData("vol0")));
  Bytes want;
  want.OptReply(kInfoOpt, kInfo, InfoExport(1ull << 30, kVol0Flags)).OptReply(kInfoOpt, kAck);
  EXPECT_EQ(got.vec(), want.vec());
  EXPECT_EQ(hs_.state(), State::kNegotiating);  // INFO does not end negotiation
}

TEST_F(HandshakeTest, InfoAnswersNameDescriptionBlockSizeThenExportLast) {
  // 0x7777 is an unknown information request: ignored.
  Bytes got = Run(Bytes().U32(kFixed).Option(
      kInfoOpt, InfoData("", {kInfoBsType, 0x7777, kInfoDescType, kInfoNameType})));
  Bytes want;
  want.OptReply(kInfoOpt, kInfo, Bytes().U16(kInfoNameType).Str("vol0"));
  want.OptReply(kInfoOpt, kInfo, Bytes().U16(kInfoDescType).Str("first volume"));
  want.OptReply(kInfoOpt, kInfo, Bytes().U16(kInfoBsType).U32(1).U32(4096).U32(32u << 20));
  want.OptReply(kInfoOpt, kInfo, InfoExport(1ull << 30, kVol0Flags));
  want.OptReply(kInfoOpt, kAck);
  EXPECT_EQ(got.vec(), want.vec());
}

TEST_F(HandshakeTest, NonDefaultBlockSizesAreSentUnasked) {
  Bytes got = Run(Bytes().U32(kFixed).Option(kInfoOpt, InfoData("ro", {kInfoDescType})));
  Bytes want;  // no description reply: "ro" has none
  want.OptReply(kInfoOpt, kInfo, Bytes().U16(kInfoBsType).U32(512).U32(4096).U32(1 << 20));
  want.OptReply(kInfoOpt, kInfo, InfoExport(8192, kRoFlags));
  want.OptReply(kInfoOpt, kAck);
  EXPECT_EQ(got.vec(), want.vec());
}

TEST_F(HandshakeTest, GoAfterStructuredRepliesEntersTransmissionWithDf) {
  size_t used = 0;
  Bytes in = Bytes().U32(kFixed).Option(kStructuredOpt).Option(kGoOpt, InfoData("vol0"));
  Bytes got = Run(Bytes(in).U8(0x25), &used);
  Bytes want;
  want.OptReply(kStructuredOpt, kAck);
  want.OptReply(kGoOpt, kInfo, InfoExport(1ull << 30, kVol0StructuredFlags));
  want.OptReply(kGoOpt, kAck);  // and no zero padding after it
  EXPECT_EQ(got.vec(), want.vec());
  EXPECT_EQ(used, in.size());
  EXPECT_EQ(hs_.state(), State::kTransmission);
  EXPECT_TRUE(hs_.structured_replies());
  EXPECT_EQ(hs_.transmission_flags(), kVol0StructuredFlags);
  EXPECT_FALSE(hs_.base_allocation());
}

TEST_F(HandshakeTest, GoOnBareExportAdvertisesOnlyWhatItHas) {
  Run(Bytes().U32(kFixed).Option(kGoOpt, InfoData("bare")));
  EXPECT_EQ(hs_.transmission_flags(), kBareFlags);
  EXPECT_EQ(hs_.selected(), &cat_.bare);
}

TEST_F(HandshakeTest, InfoAndGoErrors) {
  Bytes in = Bytes().U32(kFixed);
  in.Option(kGoOpt, InfoData("nope"));        // unknown export
  in.Option(kInfoOpt, Bytes().U32(0).U8(0));  // shorter than 6 bytes
  in.Option(kInfoOpt,
            Bytes().U32(3).Str("vol0").U16(0));  // name length disagrees
  in.Option(kGoOpt,
            Bytes().U32(4).Str("vol0").U16(2).U16(1));  // 2 requests, 1 present
  in.Option(kGoOpt, Bytes(InfoData("vol0")).U8(0));     // a trailing byte
  Bytes want;
  want.OptError(kGoOpt, kErrUnknown, "no such export");
  want.OptError(kInfoOpt, kErrInvalid, "option data too short");
  want.OptError(kInfoOpt, kErrInvalid, "information request count does not match length");
  want.OptError(kGoOpt, kErrInvalid, "information request count does not match length");
  want.OptError(kGoOpt, kErrInvalid, "information request count does not match length");
  EXPECT_EQ(Run(in).vec(), want.vec());
  EXPECT_EQ(hs_.state(), State::kNegotiating);
  EXPECT_EQ(hs_.errors(), 5u);
}

TEST_F(HandshakeTest, InfoNameLengthBeyondDataIsInvalid) {
  Bytes got = Run(Bytes().U32(kFixed).Option(kInfoOpt, Bytes().U32(100).Str("vol0").U16(0)));
  EXPECT_EQ(got.vec(), Bytes().OptError(kInfoOpt, kErrInvalid, "export name length invalid").vec());
}

TEST_F(HandshakeTest, StructuredReplyTwiceOrWithDataIsInvalid) {
  Bytes in = Bytes().U32(kFixed);
  in.Option(kStructuredOpt, Bytes().U8(1)).Option(kStructuredOpt).Option(kStructuredOpt);
  Bytes want;
  want.OptError(kStructuredOpt, kErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
  want.OptReply(kStructuredOpt, kAck);
  want.OptError(kStructuredOpt, kErrInvalid, "structured replies already on");
  EXPECT_EQ(Run(in).vec(), want.vec());
}

TEST_F(HandshakeTest, ListMetaContextWithoutQueriesOrWithWildcardListsBaseAllocation) {
  Bytes in = Bytes().U32(kFixed);
  in.Option(kListMetaOpt, MetaData("vol0", {}));
  in.Option(kListMetaOpt, MetaData("vol0", {"base:"}));
  in.Option(kListMetaOpt, MetaData("vol0", {"qemu:dirty-bitmap:b", "base:nothing", "nocolon"}));
  Bytes ctx = Bytes().U32(0).Str("base:allocation");
  Bytes want;
  want.OptReply(kListMetaOpt, kMetaContext, ctx).OptReply(kListMetaOpt, kAck);
  want.OptReply(kListMetaOpt, kMetaContext, ctx).OptReply(kListMetaOpt, kAck);
  want.OptReply(kListMetaOpt, kAck);
  EXPECT_EQ(Run(in).vec(), want.vec());
}

TEST_F(HandshakeTest, SetMetaContextNeedsStructuredReplies) {
  Bytes got = Run(Bytes().U32(kFixed).Option(kSetMetaOpt, MetaData("vol0", {"base:allocation"})));
  EXPECT_EQ(got.vec(),
            Bytes()
                .OptError(kSetMetaOpt, kErrInvalid, "meta contexts need structured replies first")
                .vec());
}

TEST_F(HandshakeTest, SetMetaContextThenGoEnablesBlockStatus) {
  Bytes in = Bytes().U32(kFixed).Option(kStructuredOpt);
  in.Option(kSetMetaOpt, MetaData("vol0", {"x-foo:bar", "base:allocation", "base:allocation"}));
  in.Option(kGoOpt, InfoData("vol0"));
  Bytes want;
  want.OptReply(kStructuredOpt, kAck);
  want.OptReply(kSetMetaOpt, kMetaContext, Bytes().U32(1).Str("base:allocation"));
  want.OptReply(kSetMetaOpt, kAck);
  want.OptReply(kGoOpt, kInfo, InfoExport(1ull << 30, kVol0StructuredFlags));
  want.OptReply(kGoOpt, kAck);
  EXPECT_EQ(Run(in).vec(), want.vec());
  EXPECT_TRUE(hs_.base_allocation());
  EXPECT_EQ(hs_.base_allocation_id(), 1u);
}

TEST_F(HandshakeTest, SetMetaContextForAnotherExportDoesNotCount) {
  Bytes in = Bytes().U32(kFixed).Option(kStructuredOpt);
  in.Option(kSetMetaOpt, MetaData("ro", {"base:allocation"}));
  in.Option(kGoOpt, InfoData("vol0"));
  Run(in);
  EXPECT_EQ(hs_.state(), State::kTransmission);
  EXPECT_FALSE(hs_.base_allocation());
}

TEST_F(HandshakeTest, LaterSetMetaContextReplacesEvenWhenItFails) {
  for (const Bytes& second : {MetaData("vol0", {}), MetaData("vol0", {"base:"}),
                              MetaData("nope", {"base:allocation"}), Bytes().U32(0)}) {
    TestCatalog cat;
    Handshake hs(&cat);
    Bytes in = Bytes().U32(kFixed).Option(kStructuredOpt);
    in.Option(kSetMetaOpt, MetaData("vol0", {"base:allocation"}));
    in.Option(kSetMetaOpt, second).Option(kGoOpt, InfoData("vol0"));
    hs.Feed(in.data(), in.size());
    EXPECT_EQ(hs.state(), State::kTransmission);
    EXPECT_FALSE(hs.base_allocation());
  }
}

TEST_F(HandshakeTest, MetaContextErrors) {
  Bytes in = Bytes().U32(kFixed).Option(kStructuredOpt);
  in.Option(kSetMetaOpt, MetaData("nope", {"base:allocation"}));
  in.Option(kListMetaOpt, Bytes().U32(0).U16(0));              // too short
  in.Option(kListMetaOpt, Bytes().U32(9).Str("vol0").U32(0));  // name too long
  in.Option(kListMetaOpt, Bytes().U32(4).Str("vol0").U32(1).U32(20).Str("base:"));
  in.Option(kListMetaOpt, Bytes().U32(4).Str("vol0").U32(2).U32(5).Str("base:"));
  in.Option(kListMetaOpt, Bytes(MetaData("vol0", {"base:"})).U8(7));  // trailing byte
  in.Option(kSetMetaOpt,
            Bytes().U32(4).Str("vol0").U32(65));  // > meta_queries_max
  Bytes want;
  want.OptReply(kStructuredOpt, kAck);
  want.OptError(kSetMetaOpt, kErrUnknown, "no such export");
  want.OptError(kListMetaOpt, kErrInvalid, "option too short");
  want.OptError(kListMetaOpt, kErrInvalid, "export name length invalid");
  want.OptError(kListMetaOpt, kErrInvalid, "query length invalid");
  want.OptError(kListMetaOpt, kErrInvalid, "query length invalid");
  want.OptError(kListMetaOpt, kErrInvalid, "trailing bytes after queries");
  want.OptError(kSetMetaOpt, kErrTooBig, "too many queries");
  EXPECT_EQ(Run(in).vec(), want.vec());
  EXPECT_EQ(hs_.state(), State::kNegotiating);
}

TEST_F(HandshakeTest, UnknownOptionsAndStartTlsAreRefusedAndNegotiationContinues) {
  Bytes in = Bytes().U32(kFixed);
  in.Option(99, Bytes().Str("whatever")).Option(11).Option(4);
  in.Option(kStartTlsOpt).Option(kStartTlsOpt, Bytes().U8(0));
  in.Option(kExportNameOpt, Bytes().Str("bare"));
  Bytes want;
  want.OptError(99, kErrUnsup, "option not supported");
  want.OptError(11, kErrUnsup, "option not supported");
  want.OptError(4, kErrUnsup, "option not supported");
  want.OptError(kStartTlsOpt, kErrPolicy, "TLS is not configured on this server");
  want.OptError(kStartTlsOpt, kErrInvalid, "NBD_OPT_STARTTLS takes no data");
  want.U64(1 << 20).U16(kBareFlags).Zeroes(124);
  EXPECT_EQ(Run(in).vec(), want.vec());
  EXPECT_EQ(hs_.state(), State::kTransmission);
}

TEST_F(HandshakeTest, BadOptionMagicCloses) {
  Bytes in = Bytes().U32(kFixed).U64(0x49484156454F5055ull).U32(kListOpt).U32(0);
  EXPECT_EQ(Run(in).size(), 0u);
  EXPECT_EQ(hs_.state(), State::kClose);
}

TEST(HandshakeLimitsTest, OversizedOptionIsDiscardedUnbufferedThenTooBig) {
  TestCatalog cat;
  HandshakeLimits limits;
  limits.option_length_max = 100;
  Handshake hs(&cat, limits);
  hs.ConsumeOutput(hs.output().size());
  const uint64_t before = CounterValue("spd_nbd_option_too_big_total");
  Bytes in = Bytes().U32(kFixed).Option(kListMetaOpt, Bytes().Zeroes(101));
  in.Option(kListOpt);
  // The payload arrives in pieces; no reply until all of it has been read.
  ASSERT_EQ(hs.Feed(in.data(), 4 + 16 + 50), 70u);
  EXPECT_TRUE(hs.output().empty());
  ASSERT_EQ(hs.Feed(in.data() + 70, in.size() - 70), in.size() - 70);
  Bytes want;
  want.OptError(kListMetaOpt, kErrTooBig, "option data too large");
  for (std::string_view n : {"vol0", "ro", "al", "bare"}) {
    Bytes d = Bytes().U32(static_cast<uint32_t>(n.size())).Str(n);
    if (n == "vol0") d.Str("first volume");
    want.OptReply(kListOpt, kServer, d);
  }
  want.OptReply(kListOpt, kAck);
  EXPECT_EQ(hs.output(), want.vec());
  EXPECT_EQ(hs.state(), State::kNegotiating);
  EXPECT_EQ(CounterValue("spd_nbd_option_too_big_total"), before + 1);
}

TEST(HandshakeLimitsTest, OversizedExportNameOrAbsurdOptionCloses) {
  TestCatalog cat;
  HandshakeLimits limits;
  limits.option_length_max = 100;
  limits.option_discard_bytes_max = 1000;
  for (uint32_t opt : {kExportNameOpt, kListOpt}) {
    Handshake hs(&cat, limits);
    hs.ConsumeOutput(hs.output().size());
    uint32_t len = opt == kExportNameOpt ? 101 : 1001;
    Bytes in = Bytes().U32(kFixed).U64(0x49484156454F5054ull).U32(opt).U32(len);
    EXPECT_EQ(hs.Feed(in.data(), in.size()), in.size());
    EXPECT_EQ(hs.state(), State::kClose) << opt;
    EXPECT_TRUE(hs.output().empty());
  }
}

TEST(HandshakeLimitsTest, OversizedAbortIsDiscardedThenAcked) {
  TestCatalog cat;
  HandshakeLimits limits;
  limits.option_length_max = 10;
  Handshake hs(&cat, limits);
  hs.ConsumeOutput(hs.output().size());
  Bytes in = Bytes().U32(kFixed).Option(kAbortOpt, Bytes().Zeroes(11));
  EXPECT_EQ(hs.Feed(in.data(), in.size()), in.size());
  EXPECT_EQ(hs.output(), Bytes().OptReply(kAbortOpt, kAck).vec());
  EXPECT_EQ(hs.state(), State::kClose);
}

TEST(HandshakeLimitsTest, TooManyOptionsCloses) {
  TestCatalog cat;
  HandshakeLimits limits;
  limits.options_max = 3;
  Handshake hs(&cat, limits);
  hs.ConsumeOutput(hs.output().size());
  Bytes in = Bytes().U32(kFixed).Option(99).Option(99).Option(99).Option(kListOpt);
  hs.Feed(in.data(), in.size());
  Bytes want;
  for (int i = 0; i < 3; ++i) want.OptError(99, kErrUnsup, "option not supported");
  EXPECT_EQ(hs.output(), want.vec());
  EXPECT_EQ(hs.state(), State::kClose);
}

// A client session touching every option, ending in GO plus the first request's
// bytes.
Bytes FullSession() {
  Bytes in = Bytes().U32(kFixed | kNoZeroes);
  in.Option(kListOpt).Option(99, Bytes().Str("x")).Option(kStartTlsOpt);
  in.Option(kInfoOpt, InfoData("ro", {kInfoNameType})).Option(kStructuredOpt);
  in.Option(kListMetaOpt, MetaData("vol0", {})).Option(kInfoOpt, Bytes().U32(7));
  in.Option(kSetMetaOpt, MetaData("vol0", {"base:allocation"}));
  in.Option(kGoOpt, InfoData("vol0", {kInfoBsType}));
  in.U32(0x25609513).U16(0).U16(0);  // transmission starts
  return in;
}

TEST(HandshakeFragmentation, ByteByByteAndRandomPiecesMatchOneShot) {
  const Bytes in = FullSession();
  TestCatalog cat;
  Handshake whole(&cat);
  const size_t used_whole = whole.Feed(in.data(), in.size());
  ASSERT_EQ(whole.state(), State::kTransmission);
  ASSERT_EQ(used_whole, in.size() - 8);
  ASSERT_TRUE(whole.base_allocation());

  auto feed_in_pieces = [&](auto next_piece) {
    Handshake hs(&cat);
    std::vector<uint8_t> out;
    size_t pos = 0;
    while (pos < in.size() && hs.state() == State::kNegotiating) {
      size_t n = std::min(next_piece(), in.size() - pos);
      size_t used = hs.Feed(in.data() + pos, n);
      EXPECT_LE(used, n);
      pos += used;
      // Drain output as a server would, a piece at a time.
      out.insert(out.end(), hs.output().begin(), hs.output().end());
      hs.ConsumeOutput(hs.output().size());
      if (used < n) break;  // the rest is not negotiation
    }
    EXPECT_EQ(out, whole.output());
    EXPECT_EQ(pos, used_whole);
    EXPECT_EQ(hs.state(), whole.state());
    EXPECT_EQ(hs.transmission_flags(), whole.transmission_flags());
    EXPECT_EQ(hs.base_allocation(), whole.base_allocation());
    EXPECT_EQ(hs.errors(), whole.errors());
  };
  feed_in_pieces([] { return size_t{1}; });
  std::mt19937 rng(42);
  for (int round = 0; round < 20; ++round) feed_in_pieces([&] { return size_t{rng() % 40}; });
}

TEST(HandshakeFragmentation, FeedAfterCloseConsumesNothing) {
  TestCatalog cat;
  Handshake hs(&cat);
  Bytes in = Bytes().U32(kFixed).Option(kAbortOpt).Option(kListOpt);
  EXPECT_EQ(hs.Feed(in.data(), in.size()), 4u + 16u);
  EXPECT_EQ(hs.state(), State::kClose);
  EXPECT_EQ(hs.Feed(in.data(), in.size()), 0u);
}

TEST(BlockSizes, ValidityFollowsTheSpec) {
  TestCatalog cat;
  EXPECT_TRUE(BlockSizesValid(cat.vol0));
  EXPECT_TRUE(BlockSizesValid(cat.ro));
  Export e;
  e.block_min_bytes = 3;  // not a power of two
  EXPECT_FALSE(BlockSizesValid(e));
  e.block_min_bytes = 128 * 1024;  // above 64 KiB
  e.block_pref_bytes = 128 * 1024;
  EXPECT_FALSE(BlockSizesValid(e));
  e = Export();
  e.block_pref_bytes = 256;  // below 512
  EXPECT_FALSE(BlockSizesValid(e));
  e = Export();
  e.block_max_bytes = 1024;  // below preferred
  EXPECT_FALSE(BlockSizesValid(e));
}

}  // namespace
}  // namespace spd::nbd
