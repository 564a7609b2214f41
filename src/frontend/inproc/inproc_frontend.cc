#include "frontend/inproc/inproc_frontend.h"

#include <cstdlib>

#include "common/assert.h"
#include "dispatch/request_probes.h"

namespace spd {

struct InprocFrontend::Slot {
  IoRequest io;
  InprocFrontend* fe = nullptr;
  Callback cb = nullptr;
  void* arg = nullptr;
  Slot* next = nullptr;
  void* buf = nullptr;
  std::vector<Extent> extents;
};

InprocFrontend::InprocFrontend(Dispatcher* dispatcher, Reactor* reactor, Options options)
    : dispatcher_(dispatcher),
      options_(options),
      port_(dispatcher->OpenPort(reactor)),
      slots_(new Slot[options.queue_depth]) {
  for (uint32_t i = 0; i < options_.queue_depth; ++i) {
    Slot& s = slots_[i];
    s.fe = this;
    if (options_.buffer_bytes > 0) {
      const int rc = posix_memalign(&s.buf, 4096, options_.buffer_bytes);
      SPD_ASSERT_MSG(rc == 0, "in-process frontend: out of memory for request buffers");
    }
    s.extents.reserve(kExtentsMax + 1);
    s.next = free_;
    free_ = &s;
  }
}

InprocFrontend::~InprocFrontend() {
  SPD_ASSERT_MSG(inflight_ == 0, "in-process frontend destroyed with requests in flight");
  for (uint32_t i = 0; i < options_.queue_depth; ++i) std::free(slots_[i].buf);
}

IoRequest* InprocFrontend::Take() {
  Slot* s = free_;
  if (s == nullptr) return nullptr;
  free_ = s->next;
  ++inflight_;
  IoRequest& io = s->io;
  io.op = RequestOp::kRead;
  io.flags = 0;
  io.offset_bytes = 0;
  io.length_bytes = 0;
  io.buf = s->buf;
  io.volume = nullptr;
  io.tenant = 0;
  io.extents = &s->extents;
  io.extents_max = kExtentsMax;
  io.done = &InprocFrontend::OnDone;
  io.ctx = s;
  return &io;
}

void InprocFrontend::Submit(IoRequest* req, Callback cb, void* arg) {
  auto* s = static_cast<Slot*>(req->ctx);
  // Data moves through the slot's buffer for reads and writes only.
  SPD_ASSERT(options_.buffer_bytes == 0 ||
             (req->op != RequestOp::kRead && req->op != RequestOp::kWrite) ||
             req->length_bytes <= options_.buffer_bytes);
  s->cb = cb;
  s->arg = arg;
  req->done = &InprocFrontend::OnDone;
  req->stamp_stages = dispatcher_->stamp_stages();
  req->Stamp(Stage::kArrival);
  SPD_REQUEST_PROBE(request__arrival, req);
  dispatcher_->Submit(port_.get(), req);
}

void InprocFrontend::Release(IoRequest* req) {
  auto* s = static_cast<Slot*>(req->ctx);
  s->next = free_;
  free_ = s;
  --inflight_;
}

void InprocFrontend::OnDone(IoRequest* req) {
  auto* s = static_cast<Slot*>(req->ctx);
  InprocFrontend* fe = s->fe;
  req->Stamp(Stage::kReply);
  // The latency is known only when the dispatcher stamps stages (0 otherwise).
  SPD_REQUEST_PROBE(request__reply, req,
                    req->StageNs(Stage::kReply) - req->StageNs(Stage::kArrival));
  s->cb(s->arg, req);
  s->next = fe->free_;
  fe->free_ = s;
  --fe->inflight_;
}

}  // namespace spd
