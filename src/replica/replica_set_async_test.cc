// Asynchronous replicated volumes (ReplicaSetOptions::async): requests complete once done
// locally while their messages are in flight to the replicas (as shadows), within the lag
// bounds; overlapping writes still wait for each other's acks; every copy ends the same.
#include <gtest/gtest.h>

#include "common/counters.h"
#include "replica/replica_set.h"
#include "replica/replica_set_fixture.h"

namespace spd {
namespace {

using replica_test::kVolBytes;
using ReplicaSetAsyncTest = replica_test::ReplicaSetTest;

// Runs the reactor until `done` holds or about `ms` milliseconds passed.
template <typename F>
void RunUntil(Reactor* r, int ms, F done) {
  const uint64_t until = MonotonicNs() + static_cast<uint64_t>(ms) * 1'000'000;
  while (!done() && MonotonicNs() < until) r->RunOnce(1'000'000);
}

// Waits (by the clock, 5 s at most) for request `o` to complete; its result (1: not done).
template <typename O>
int32_t WaitDone(Reactor* r, O* o) {
  RunUntil(r, 5000, [&] { return o->result != 1; });
  return o->result;
}

// Runs the reactor for about `ms` milliseconds.
void RunFor(Reactor* r, int ms) {
  const uint64_t until = MonotonicNs() + static_cast<uint64_t>(ms) * 1'000'000;
  while (MonotonicNs() < until) r->RunOnce(1'000'000);
}

// Every message leaves 1 s after it was numbered: no ack comes sooner, however slow the machine.
ReplicaSetOptions Slow(ReplicaSetOptions o, bool async) {
  o.inject_rtt_us = 1'000'000;
  o.ack_timeout_ms = 10'000;  // the fixture's 1 s would fail the links
  o.async = async;
  return o;
}

// The baseline: a synchronous write is not done before its acks.
TEST_F(ReplicaSetAsyncTest, ASynchronousWriteWaitsForItsAcks) {
  StartSet(Slow(Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}), false));
  Op* sync_op = Submit(RequestOp::kWrite, 0, 4096, 's');
  RunFor(reactor_.get(), 100);
  EXPECT_EQ(sync_op->result, 1) << "a synchronous write completed before its acks";
  ASSERT_EQ(WaitDone(reactor_.get(), sync_op), 0);
  EXPECT_EQ(set_->lag_bytes(), 0u);
}

// An asynchronous write and flush are done before any ack can come, the write's payload
// counted in the lag until the replicas acknowledge it; they end up with it.
TEST_F(ReplicaSetAsyncTest, AsyncWritesCompleteBeforeTheReplicasHaveThem) {
  const uint64_t shadowed = CounterValue("spd_replication_async_shadowed_total");
  StartSet(Slow(Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}), true));
  Op* op = Submit(RequestOp::kWrite, 65536, 8192, 'a');
  Op* fl = Submit(RequestOp::kFlush, 0, 0, 0);
  RunUntil(reactor_.get(), 600, [&] { return op->result != 1 && fl->result != 1; });
  ASSERT_EQ(op->result, 0) << "an asynchronous write waited for its acks";
  ASSERT_EQ(fl->result, 0) << "an asynchronous flush waited for its acks";
  EXPECT_EQ(set_->lag_bytes(), 8192u);
  RunFor(reactor_.get(), 50);
  EXPECT_GE(set_->lag_ms(), 50u);
  EXPECT_EQ(CounterValue("spd_replication_async_shadowed_total") - shadowed, 2u);
  // Drained once the barrier is acknowledged too (it has no payload, but it has an age).
  RunUntil(reactor_.get(), 5000, [&] { return set_->lag_bytes() == 0 && set_->lag_ms() == 0; });
  EXPECT_EQ(set_->lag_bytes(), 0u);
  EXPECT_EQ(set_->lag_ms(), 0u);
  for (const auto& l : set_->Links()) EXPECT_EQ(l.state, ReplicaSet::LinkState::kInSync);
  EXPECT_EQ(ByteAt(r1_, 65536 + 4096), 'a');
  EXPECT_EQ(ByteAt(r2_, 65536), 'a');
}

// The payload of a write done locally is copied for its replicas only while its message has not
// left (held back here by the injected delay); a message that left needs no copy. Either way
// the replicas get what was written, not what the buffer held after: each write's buffer is
// scribbled over as it completes, as a frontend reusing it would.
TEST_F(ReplicaSetAsyncTest, AMessageHeldBackKeepsACopyOfItsPayload) {
  StartSet(Slow(Options(1, {{"r1", Addr(r1_)}}), true));
  const uint64_t copies = CounterValue("spd_replication_async_payload_copies_total");
  Op* held = Submit(RequestOp::kWrite, 0, 8192, 'h', 0, /*scribble=*/true);
  RunUntil(reactor_.get(), 600, [&] { return held->result != 1; });
  ASSERT_EQ(held->result, 0);
  EXPECT_EQ(CounterValue("spd_replication_async_payload_copies_total") - copies, 1u);
  RunUntil(reactor_.get(), 5000, [&] { return set_->lag_bytes() == 0; });
  EXPECT_EQ(ByteAt(r1_, 4096), 'h');
}

TEST_F(ReplicaSetAsyncTest, AMessageThatLeftNeedsNoCopyOfItsPayload) {
  ReplicaSetOptions o = Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}});
  o.async = true;
  StartSet(o);
  const uint64_t copies = CounterValue("spd_replication_async_payload_copies_total");
  std::vector<Op*> ops;
  for (int i = 0; i < 8; ++i)
    ops.push_back(Submit(RequestOp::kWrite, 65536 * (i + 1), 4096, 's', 0, /*scribble=*/true));
  for (Op* x : ops) ASSERT_EQ(WaitDone(reactor_.get(), x), 0);
  RunUntil(reactor_.get(), 5000, [&] { return set_->lag_bytes() == 0; });
  EXPECT_EQ(CounterValue("spd_replication_async_payload_copies_total") - copies, 0u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(ByteAt(r1_, 65536 * (i + 1)), 's');
    EXPECT_EQ(ByteAt(r2_, 65536 * (i + 1)), 's');
  }
}

// The lag bound: with room for two 4 KiB writes, two of four complete early; the others wait
// for acks (counted), and the lag never passes the bound.
TEST_F(ReplicaSetAsyncTest, TheLagBoundHoldsCompletionsBack) {
  ReplicaSetOptions o = Slow(Options(1, {{"r1", Addr(r1_)}}), true);
  o.async_lag_bytes = 8192;
  StartSet(o);
  const uint64_t waits = CounterValue("spd_replication_async_lag_waits_total");
  std::vector<Op*> ops;
  for (int i = 0; i < 4; ++i) ops.push_back(Submit(RequestOp::kWrite, i * 65536, 4096, 'b'));
  auto done_count = [&] {
    int n = 0;
    for (Op* op : ops) n += op->result == 0;
    return n;
  };
  RunUntil(reactor_.get(), 600, [&] { return done_count() >= 2; });
  RunFor(reactor_.get(), 50);
  const int done = done_count();
  EXPECT_EQ(done, 2);
  EXPECT_EQ(set_->lag_bytes(), 8192u);
  EXPECT_GT(CounterValue("spd_replication_async_lag_waits_total"), waits);
  for (Op* op : ops) ASSERT_EQ(WaitDone(reactor_.get(), op), 0);
  RunUntil(reactor_.get(), 5000, [&] { return set_->lag_bytes() == 0; });
  for (int i = 0; i < 4; ++i) EXPECT_EQ(ByteAt(r1_, i * 65536), 'b');
}

// The time bound: once the oldest message in flight is older than async_lag_ms, completions
// wait for their acks.
TEST_F(ReplicaSetAsyncTest, TheTimeBoundHoldsCompletionsBack) {
  ReplicaSetOptions o = Slow(Options(1, {{"r1", Addr(r1_)}}), true);
  o.async_lag_ms = 50;
  StartSet(o);
  Op* first = Submit(RequestOp::kWrite, 0, 4096, 'c');
  RunUntil(reactor_.get(), 600, [&] { return first->result != 1; });
  ASSERT_EQ(first->result, 0);
  RunFor(reactor_.get(), 100);  // the first message is over 50 ms old now, unacknowledged
  Op* second = Submit(RequestOp::kWrite, 65536, 4096, 'd');
  RunFor(reactor_.get(), 100);
  EXPECT_EQ(second->result, 1) << "completed past the time bound";
  ASSERT_EQ(WaitDone(reactor_.get(), second), 0);
}

// Overlapping writes: the second waits for the first's acks even though the first completed,
// so every copy applies them in one order and ends with the second.
TEST_F(ReplicaSetAsyncTest, AnOverlappingWriteWaitsForTheFirstsAcks) {
  StartSet(Slow(Options(1, {{"r1", Addr(r1_)}, {"r2", Addr(r2_)}}), true));
  Op* a = Submit(RequestOp::kWrite, 0, 8192, 'x');
  Op* b = Submit(RequestOp::kWrite, 4096, 8192, 'y');
  RunUntil(reactor_.get(), 600, [&] { return a->result != 1; });
  EXPECT_EQ(a->result, 0);
  EXPECT_EQ(b->result, 1) << "an overlapping write went out before the first was acknowledged";
  ASSERT_EQ(WaitDone(reactor_.get(), b), 0);
  RunUntil(reactor_.get(), 5000, [&] { return set_->lag_bytes() == 0; });
  for (replica_test::Node* n : {&primary_, &r1_, &r2_}) {
    EXPECT_EQ(ByteAt(*n, 0), 'x');
    EXPECT_EQ(ByteAt(*n, 4096), 'y');
    EXPECT_EQ(ByteAt(*n, 8192), 'y');
  }
  (void)kVolBytes;
}

// A hand-over's quiesce waits until the replicas have everything (the lag drained).
TEST_F(ReplicaSetAsyncTest, QuiesceWaitsForTheLagToDrain) {
  StartSet(Slow(Options(1, {{"r1", Addr(r1_)}}), true));
  Op* a = Submit(RequestOp::kWrite, 0, 4096, 'q');
  RunUntil(reactor_.get(), 600, [&] { return a->result != 1; });
  ASSERT_EQ(a->result, 0);
  ASSERT_GT(set_->lag_bytes(), 0u);
  uint64_t seq = 0;
  set_->Quiesce([&](uint64_t s) { seq = s; });
  RunFor(reactor_.get(), 100);
  EXPECT_EQ(seq, 0u) << "quiesced with the lag not drained";
  RunUntil(reactor_.get(), 5000, [&] { return seq != 0; });
  EXPECT_GT(seq, 0u);
  EXPECT_EQ(set_->lag_bytes(), 0u);
  EXPECT_EQ(ByteAt(r1_, 0), 'q');
}

}  // namespace
}  // namespace spd
