// Transmission phase: request parsing, the validation table, errno mapping and
// the exact byte layout of every reply encoder. Expected values use the spec's
// numbers, not ours.
#include "frontend/nbd/proto/nbd_request.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>

#include "common/counters.h"
#include "frontend/nbd/proto/nbd_test_util.h"

namespace spd::nbd {
namespace {

using testing::Bytes;
using testing::TestCatalog;

constexpr uint16_t READ = 0, WRITE = 1, DISC = 2, FLUSH = 3, TRIM = 4, CACHE = 5, WZ = 6, BS = 7;
constexpr uint32_t OK = 0, EPERM_ = 1, EINVAL_ = 22, ENOSPC_ = 28, EOVERFLOW_ = 75;
constexpr uint64_t kGiB = 1ull << 30, kMiB = 1ull << 20;

// Negotiated sessions over the test catalog, built by feeding real option
// bytes.
class Sessions {
 public:
  Sessions() {
    const Bytes meta_vol0 = MetaSet("vol0"), meta_ro = MetaSet("ro");
    full = Make(Bytes().Option(8).Append(meta_vol0).Append(Go("vol0")));
    simple = Make(Bytes().Option(1, Bytes().Str("vol0")));
    structured_no_meta = Make(Bytes().Option(8).Append(Go("vol0")));
    ro = Make(Bytes().Option(8).Append(meta_ro).Append(Go("ro")));
    al = Make(Bytes().Option(8).Append(Go("al", /*want_block_size=*/true)));
    al_unasked = Make(Bytes().Option(8).Append(Go("al")));
    bare = Make(Bytes().Option(1, Bytes().Str("bare")));
  }
  TestCatalog cat;
  std::unique_ptr<Handshake> full, simple, structured_no_meta, ro, al, al_unasked, bare;

 private:
  static Bytes Go(std::string_view name, bool want_block_size = false) {
    Bytes req = Bytes().U32(static_cast<uint32_t>(name.size())).Str(name);
    if (want_block_size) {
      req.U16(1).U16(3);  // one information request: NBD_INFO_BLOCK_SIZE
    } else {
      req.U16(0);
    }
    return Bytes().Option(7, req);
  }
  static Bytes MetaSet(std::string_view name) {
    return Bytes().Option(10, Bytes()
                                  .U32(static_cast<uint32_t>(name.size()))
                                  .Str(name)
                                  .U32(1)
                                  .U32(15)
                                  .Str("base:allocation"));
  }
  std::unique_ptr<Handshake> Make(const Bytes& options) {
    auto hs = std::make_unique<Handshake>(&cat);
    Bytes in = Bytes().U32(1).Append(options);
    EXPECT_EQ(hs->Feed(in.data(), in.size()), in.size());
    EXPECT_EQ(hs->state(), Handshake::State::kTransmission);
    return hs;
  }
};

Verdict Check(const Handshake& s, uint16_t type, uint16_t flags, uint64_t offset, uint32_t length) {
  Request r;
  r.type = type;
  r.flags = flags;
  r.cookie = 7;
  r.offset = offset;
  r.length = length;
  return Validate(r, s);
}

TEST(ParseRequestTest, ParsesEveryFieldBigEndian) {
  Bytes b = Bytes().U32(0x25609513).U16(0x0011).U16(0x0006).U64(0x0102030405060708ull);
  b.U64(0x1122334455667788ull).U32(0xA0B0C0D0).U8(0xEE);  // a trailing payload byte
  Request r;
  ASSERT_EQ(ParseRequest(b.data(), b.size(), &r), ParseResult::kOk);
  EXPECT_EQ(r.flags, 0x0011);
  EXPECT_EQ(r.type, 0x0006);
  EXPECT_EQ(r.cookie, 0x0102030405060708ull);
  EXPECT_EQ(r.offset, 0x1122334455667788ull);
  EXPECT_EQ(r.length, 0xA0B0C0D0u);
  EXPECT_EQ(ParseRequest(b.data(), 27, &r), ParseResult::kNeedMore);
  Bytes bad = Bytes().U32(0x25609514).Zeroes(24);
  EXPECT_EQ(ParseRequest(bad.data(), bad.size(), &r), ParseResult::kBadMagic);
}

// Every command against every one of the 16 flag bits. The allowed masks are
// worked out from the spec's "Command flags" section for each session.
TEST(ValidateTest, FlagMatrix) {
  Sessions s;
  struct Row {
    const Handshake* session;
    uint16_t type;
    uint16_t allowed;
  };
  const Row rows[] = {
      {s.full.get(), READ, 0x0005}, {s.full.get(), WRITE, 0x0001},  {s.full.get(), FLUSH, 0x0001},
      {s.full.get(), TRIM, 0x0001}, {s.full.get(), CACHE, 0x0001},  {s.full.get(), WZ, 0x0013},
      {s.full.get(), BS, 0x0009},   {s.simple.get(), READ, 0x0001}, {s.bare.get(), READ, 0},
      {s.bare.get(), WRITE, 0},     {s.bare.get(), CACHE, 0},
  };
  for (const Row& row : rows) {
    const uint32_t len = row.type == FLUSH ? 0 : 4096;
    // No flags at all is always fine on these sessions.
    EXPECT_EQ(Check(*row.session, row.type, 0, 0, len).error, OK) << row.type;
    for (int bit = 0; bit < 16; ++bit) {
      const uint16_t flag = static_cast<uint16_t>(1u << bit);
      const uint32_t want = (row.allowed & flag) ? OK : EINVAL_;
      EXPECT_EQ(Check(*row.session, row.type, flag, 0, len).error, want)
          << "type " << row.type << " bit " << bit;
    }
  }
}

TEST(ValidateTest, CommandsTheExportDoesNotAdvertise) {
  Sessions s;
  EXPECT_EQ(Check(*s.bare, FLUSH, 0, 0, 0).error, EINVAL_);
  EXPECT_EQ(Check(*s.bare, TRIM, 0, 0, 4096).error, EINVAL_);
  EXPECT_EQ(Check(*s.bare, WZ, 0, 0, 4096).error, EINVAL_);
  EXPECT_EQ(Check(*s.bare, CACHE, 0, 0, 4096).error, OK);  // served unadvertised
  EXPECT_EQ(Check(*s.bare, BS, 0, 0, 4096).error, EINVAL_);
  EXPECT_EQ(Check(*s.simple, BS, 0, 0, 4096).error, EINVAL_);
  EXPECT_EQ(Check(*s.structured_no_meta, BS, 0, 0, 4096).error, EINVAL_);
  for (uint16_t type : {uint16_t{8}, uint16_t{9}, uint16_t{0xFFFF}})
    EXPECT_EQ(Check(*s.full, type, 0, 0, 4096).error, EINVAL_) << type;
}

TEST(ValidateTest, DisconnectCloses) {
  Sessions s;
  Verdict v = Check(*s.full, DISC, 0, 0, 0);
  EXPECT_TRUE(v.close);
  EXPECT_EQ(v.error, OK);
  EXPECT_EQ(v.payload_bytes, 0u);
}

struct RangeCase {
  const char* what;
  uint16_t type;
  uint64_t offset;
  uint32_t length;
  uint32_t error;
};

void RunRange(const Handshake& session, std::initializer_list<RangeCase> cases) {
  for (const RangeCase& c : cases) {
    Verdict v = Check(session, c.type, 0, c.offset, c.length);
    EXPECT_EQ(v.error, c.error) << c.what;
    EXPECT_EQ(v.payload_bytes, c.type == WRITE ? c.length : 0u) << c.what;
    EXPECT_FALSE(v.close) << c.what;
  }
}

TEST(ValidateTest, RangesOnADefaultExport) {
  Sessions s;
  const uint64_t wrap = UINT64_MAX - 10;
  RunRange(*s.full, {
                        {"read in range", READ, 0, 4096, OK},
                        {"read up to the end", READ, kGiB - 4096, 4096, OK},
                        {"read one past the end", READ, kGiB - 4095, 4096, EINVAL_},
                        {"read at a wrapping offset", READ, wrap, 4096, EINVAL_},
                        {"read of zero bytes", READ, 0, 0, OK},
                        {"read of zero bytes at the end", READ, kGiB, 0, OK},
                        {"read of zero bytes past the end", READ, kGiB + 1, 0, EINVAL_},
                        {"read of the maximum payload", READ, 0, 32 << 20, OK},
                        {"structured read over the maximum", READ, 0, (32 << 20) + 1, EOVERFLOW_},
                        {"write past the end", WRITE, kGiB - 4095, 4096, ENOSPC_},
                        {"write at a wrapping offset", WRITE, wrap, 4096, ENOSPC_},
                        {"write of zero bytes", WRITE, 0, 0, OK},
                        {"write over the maximum", WRITE, 0, (32 << 20) + 1, EINVAL_},
                        {"zeroes past the end", WZ, kGiB - 1, 2, ENOSPC_},
                        {"zeroes at a wrapping offset", WZ, wrap, 4096, ENOSPC_},
                        {"zeroes over the maximum payload", WZ, 0, 512 << 20, OK},
                        {"trim past the end", TRIM, kGiB, 1, EINVAL_},
                        {"trim over the maximum payload", TRIM, 0, 512 << 20, OK},
                        {"cache past the end", CACHE, kGiB, 1, EINVAL_},
                        {"cache over the maximum payload", CACHE, 0, 512 << 20, OK},
                        {"block status past the end", BS, kGiB - 1, 2, EINVAL_},
                        {"block status of zero bytes", BS, 0, 0, EINVAL_},
                        {"block status over the maximum payload", BS, 0, 512 << 20, OK},
                        {"flush", FLUSH, 0, 0, OK},
                        {"flush with an offset", FLUSH, 1, 0, EINVAL_},
                        {"flush with a length", FLUSH, 0, 1, EINVAL_},
                    });
  RunRange(*s.simple, {{"simple read over the maximum", READ, 0, (32 << 20) + 1, EINVAL_}});
}

TEST(ValidateTest, AlignmentAndLimitsOnAConstrainedExport) {
  Sessions s;  // "al": 1 MiB + 100 bytes, 512-byte blocks, 64 KiB maximum payload
  RunRange(*s.al, {
                      {"aligned read", READ, 512, 512, OK},
                      {"misaligned offset", READ, 100, 512, EINVAL_},
                      {"misaligned length", READ, 0, 100, EINVAL_},
                      {"the short last block", READ, kMiB, 100, OK},
                      {"past the short last block", READ, kMiB, 512, EINVAL_},
                      {"write to the short last block", WRITE, kMiB, 100, OK},
                      {"misaligned write", WRITE, 512, 100, EINVAL_},
                      {"misaligned zeroes", WZ, 1, 512, EINVAL_},
                      {"misaligned trim", TRIM, 0, 513, EINVAL_},
                      {"misaligned block status", BS, 3, 512, EINVAL_},
                      {"read of the maximum payload", READ, 0, 64 << 10, OK},
                      {"read over the maximum", READ, 0, (64 << 10) + 512, EOVERFLOW_},
                      {"write over the maximum", WRITE, 0, (64 << 10) + 512, EINVAL_},
                      {"trim over the maximum", TRIM, 0, 1 << 20, OK},
                  });
}

TEST(ValidateTest, AClientThatDidNotAskForBlockSizesMaySendAnySize) {
  // The spec: a server SHOULD then accept any size; the volume does read-modify-write.
  Sessions s;
  EXPECT_FALSE(s.al_unasked->block_sizes_negotiated());
  EXPECT_TRUE(s.al->block_sizes_negotiated());
  EXPECT_FALSE(s.simple->block_sizes_negotiated());  // NBD_OPT_EXPORT_NAME cannot ask
  RunRange(*s.al_unasked, {
                              {"misaligned offset", READ, 100, 512, OK},
                              {"misaligned length", READ, 0, 100, OK},
                              {"misaligned write", WRITE, 512, 100, OK},
                              {"misaligned zeroes", WZ, 1, 512, OK},
                              {"misaligned trim", TRIM, 0, 513, OK},
                              {"still not past the end", READ, kMiB, 512, EINVAL_},
                              {"still not over the maximum", WRITE, 0, (64 << 10) + 512, EINVAL_},
                          });
}

TEST(ValidateTest, ReadOnlyExportRefusesWritesWithEperm) {
  Sessions s;
  const uint64_t before = CounterValue("spd_nbd_request_read_only_total");
  RunRange(*s.ro, {
                      {"read", READ, 0, 4096, OK},
                      {"write", WRITE, 0, 4096, EPERM_},
                      {"write past the end", WRITE, 8192, 4096, EPERM_},
                      {"trim", TRIM, 0, 4096, EPERM_},
                      {"zeroes", WZ, 0, 4096, EPERM_},
                      {"cache", CACHE, 0, 4096, OK},
                      {"block status", BS, 0, 4096, OK},
                      {"flush", FLUSH, 0, 0, OK},
                  });
  EXPECT_EQ(CounterValue("spd_nbd_request_read_only_total"), before + 4);
  // A flag that is invalid for the command is reported before read-only-ness.
  EXPECT_EQ(Check(*s.ro, WRITE, 0x0002, 0, 4096).error, EINVAL_);
}

TEST(ValidateTest, WritePayloadTooLargeToDiscardCloses) {
  Sessions s;
  Verdict v = Check(*s.full, WRITE, 0, 0, kWritePayloadDiscardMax);
  EXPECT_EQ(v.error, EINVAL_);  // over the maximum payload but still discardable
  EXPECT_FALSE(v.close);
  EXPECT_EQ(v.payload_bytes, kWritePayloadDiscardMax);
  v = Check(*s.full, WRITE, 0, 0, kWritePayloadDiscardMax + 1);
  EXPECT_EQ(v.error, EINVAL_);
  EXPECT_TRUE(v.close);
  // A refused write of any size leaves its payload to be discarded.
  v = Check(*s.ro, WRITE, 0, 0, 1 << 20);
  EXPECT_EQ(v.payload_bytes, 1u << 20);
}

TEST(ErrnoToNbdTest, MapsToTheSpecsValues) {
  const std::pair<int, uint32_t> table[] = {
      {EPERM, 1},       {EACCES, 1},  {EROFS, 1},  {EIO, 5},        {ENOMEM, 12},  {EINVAL, 22},
      {ENOSPC, 28},     {EDQUOT, 28}, {EFBIG, 28}, {EOVERFLOW, 75}, {ENOTSUP, 95}, {EOPNOTSUPP, 95},
      {ESHUTDOWN, 108}, {EBADF, 5},   {0x7fff, 5}, {-ENOSPC, 28},
  };
  for (auto [err, want] : table) EXPECT_EQ(ErrnoToNbd(err), want) << err;
}

constexpr uint64_t kCookie = 0x0102030405060708ull;

std::vector<uint8_t> Encoded(const uint8_t* buf, size_t n) { return {buf, buf + n}; }

TEST(EncodeTest, SimpleReply) {
  uint8_t buf[64];
  size_t n = EncodeSimpleReply(buf, kCookie, 22);
  EXPECT_EQ(Encoded(buf, n), Bytes().U32(0x67446698).U32(22).U64(kCookie).vec());
  EXPECT_EQ(n, 16u);
}

TEST(EncodeTest, StructuredHeaderAndDone) {
  uint8_t buf[64];
  size_t n = EncodeStructuredHeader(buf, kCookie, 0x8001, 0x1234, 0x11223344);
  EXPECT_EQ(Encoded(buf, n),
            Bytes().U32(0x668e33ef).U16(0x8001).U16(0x1234).U64(kCookie).U32(0x11223344).vec());
  n = EncodeStructuredDone(buf, kCookie);
  EXPECT_EQ(Encoded(buf, n), Bytes().U32(0x668e33ef).U16(1).U16(0).U64(kCookie).U32(0).vec());
}

TEST(EncodeTest, OffsetDataAndHole) {
  uint8_t buf[64];
  size_t n = EncodeOffsetDataHeader(buf, kCookie, true, 0x1000, 512);
  EXPECT_EQ(Encoded(buf, n),
            Bytes().U32(0x668e33ef).U16(1).U16(1).U64(kCookie).U32(520).U64(0x1000).vec());
  n = EncodeOffsetDataHeader(buf, kCookie, false, 7, 1);
  EXPECT_EQ(Encoded(buf, n),
            Bytes().U32(0x668e33ef).U16(0).U16(1).U64(kCookie).U32(9).U64(7).vec());
  n = EncodeOffsetHole(buf, kCookie, false, 0xABCDEF0123ull, 4096);
  EXPECT_EQ(Encoded(buf, n), Bytes()
                                 .U32(0x668e33ef)
                                 .U16(0)
                                 .U16(2)
                                 .U64(kCookie)
                                 .U32(12)
                                 .U64(0xABCDEF0123ull)
                                 .U32(4096)
                                 .vec());
}

TEST(EncodeTest, Errors) {
  uint8_t buf[64];
  size_t n = EncodeStructuredError(buf, kCookie, 5);
  EXPECT_EQ(Encoded(buf, n),
            Bytes().U32(0x668e33ef).U16(1).U16(0x8001).U64(kCookie).U32(6).U32(5).U16(0).vec());
  n = EncodeStructuredErrorMessage(buf, kCookie, 22, "bad");
  EXPECT_EQ(Encoded(buf, n), Bytes()
                                 .U32(0x668e33ef)
                                 .U16(1)
                                 .U16(0x8001)
                                 .U64(kCookie)
                                 .U32(9)
                                 .U32(22)
                                 .U16(3)
                                 .Str("bad")
                                 .vec());
}

TEST(EncodeTest, BlockStatus) {
  uint8_t buf[64];
  uint8_t* p = buf;
  p += EncodeBlockStatusHeader(p, kCookie, true, 1, 2);
  p += EncodeBlockDescriptor(p, 4096, 3);
  p += EncodeBlockDescriptor(p, 0x10000000, 0);
  Bytes want = Bytes().U32(0x668e33ef).U16(1).U16(5).U64(kCookie).U32(4 + 16).U32(1);
  want.U32(4096).U32(3).U32(0x10000000).U32(0);
  EXPECT_EQ(Encoded(buf, static_cast<size_t>(p - buf)), want.vec());
}

}  // namespace
}  // namespace spd::nbd
