// Group commit: many writers waiting for durability share one commit (a log write when there
// are records, then one device flush). One commit runs at a time; whoever arrives meanwhile is
// served by the next one, which starts as soon as the running one ends (no artificial delay).
//
// The overlapping flush: a waiter that arrives while a commit runs and has no records of its own
// pending (its writes' records, if any, are in the running commit) gets a device flush at once
// instead of waiting for the next commit. It completes only after the running commit, because
// that commit may hold the records describing its writes. At most one is in flight.
//
// The owner (the pool) does the commit's I/O: GroupCommit calls Owner::RunCommit() and the owner
// calls CommitDone() when the commit is durable or failed. Single-threaded: everything runs on
// the owner's reactor.
#pragma once

#include <cstdint>

#include "io/io_backend.h"

namespace spd {

struct CommitWaiter {
  void (*fn)(CommitWaiter* self, int32_t result) = nullptr;
  CommitWaiter* next = nullptr;
};

class GroupCommit {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // Start one commit of everything pending; call CommitDone() once it is durable (or failed).
    virtual void RunCommit() = 0;
    // True when records are pending that the next commit must write.
    virtual bool CommitHasWork() const = 0;
    // An overlapping flush failed (a failed commit the owner sees itself, in its CommitDone
    // call). Runs before that flush's waiters complete with the error.
    virtual void FlushFailed(int32_t result) {}
  };

  // `backend` serves the overlapping flushes; `overlap` turns them on.
  GroupCommit(Owner* owner, IoBackend* backend, bool overlap);
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Completes `w` once everything that was acknowledged before this call is durable.
  void Wait(CommitWaiter* w);
  // Starts a commit if none runs (background commits that nobody waits for).
  void Kick();
  // From the owner: the commit started by RunCommit() ended.
  void CommitDone(int32_t result);

  bool running() const { return running_; }
  bool busy() const { return running_ || overlap_.running; }  // I/O in flight
  void set_overlap(bool on) { overlap_on_ = on; }

  uint64_t commits_started() const { return started_; }
  uint64_t overlap_flushes() const { return overlap_flushes_; }

 private:
  void Start();
  void StartOverlap();
  void MaybeFinishOverlap();
  static void OnOverlapFlushed(BackendIo* io);

  Owner* owner_;
  IoBackend* backend_;
  bool overlap_on_;
  bool running_ = false;
  CommitWaiter* next_head_ = nullptr;  // arrived while a commit ran: served by the next one
  CommitWaiter* next_tail_ = nullptr;
  CommitWaiter* current_ = nullptr;  // served by the running commit
  uint64_t started_ = 0;
  uint64_t finished_ = 0;
  uint64_t overlap_flushes_ = 0;

  struct Overlap {
    bool running = false;
    bool flushed = false;  // the device flush completed
    int32_t result = 0;
    int32_t after_result = 0;  // of the commit it waits for: its records may be theirs
    uint64_t after = 0;        // complete once finished_ reaches this
    CommitWaiter* waiters = nullptr;
    BackendIo io;
  } overlap_;
};

}  // namespace spd
