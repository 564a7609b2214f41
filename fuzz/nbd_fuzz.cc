// libFuzzer target: arbitrary bytes into the NBD handshake and, once negotiation ends, into
// the request parser and validator. Must never crash, assert or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "frontend/nbd/proto/nbd_handshake.h"
#include "frontend/nbd/proto/nbd_request.h"

namespace {

class TwoExports : public spd::nbd::ExportCatalog {
 public:
  TwoExports() {
    a_.name = "vol0";
    a_.description = "fuzz volume";
    a_.size_bytes = 1 << 30;
    a_.block_min_bytes = 512;
    b_.name = "ro";
    b_.size_bytes = 4096;
    b_.read_only = true;
  }
  const spd::nbd::Export* Find(std::string_view name) const override {
    if (name.empty() || name == a_.name) return &a_;
    if (name == b_.name) return &b_;
    return nullptr;
  }
  std::vector<const spd::nbd::Export*> List() const override { return {&a_, &b_}; }

 private:
  spd::nbd::Export a_, b_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static TwoExports catalog;
  spd::nbd::Handshake hs(&catalog);
  // Feed in uneven pieces so that partial-input paths run too.
  size_t pos = 0;
  size_t step = size ? (data[0] % 7) + 1 : 1;
  while (pos < size && hs.state() == spd::nbd::Handshake::State::kNegotiating) {
    size_t n = std::min(step, size - pos);
    size_t used = hs.Feed(data + pos, n);
    if (used == 0 && hs.state() == spd::nbd::Handshake::State::kNegotiating && n == size - pos)
      break;
    pos += used ? used : n;
    hs.ConsumeOutput(hs.output().size());
  }
  if (hs.state() != spd::nbd::Handshake::State::kTransmission) return 0;
  while (size - pos >= spd::nbd::kRequestHeaderBytes) {
    spd::nbd::Request r;
    if (spd::nbd::ParseRequest(data + pos, size - pos, &r) != spd::nbd::ParseResult::kOk) break;
    pos += spd::nbd::kRequestHeaderBytes;
    spd::nbd::Verdict v = spd::nbd::Validate(r, hs);
    if (v.close) break;
    pos += std::min<size_t>(v.payload_bytes, size - pos);
    uint8_t reply[64];
    spd::nbd::EncodeSimpleReply(reply, r.cookie, v.error);
    spd::nbd::EncodeStructuredError(reply, r.cookie, v.error ? v.error : 5);
  }
  return 0;
}
