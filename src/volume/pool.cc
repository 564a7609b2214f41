// Pool: format, open and recovery, chunk allocation and zeroing. Writes waiting for space are
// in pool_space.cc.
// The control operations (create, delete, resize, durability) are in pool_control.cc, the
// commit in pool_commit.cc, the per-request data path in volume.cc.
#include "volume/pool.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>

#include "common/counters.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "journal/log_codec.h"
#include "volume/pool_format.h"
#include "volume/pool_internal.h"

namespace spd {

namespace {

Counter punch_errors_total("spd_pool_punch_errors_total", "Chunk zeroing failures.");
Counter remote_pinned_frees_total(
    "spd_pool_remote_pinned_frees_total",
    "Freed chunks whose zeroing waited for remote I/O (another reactor's) still running on them.");
// How often a freed chunk that remote I/O still pins is looked at again.
constexpr uint64_t kRemoteWaitNs = 200'000;
Counter open_zeroing_total("spd_pool_open_zeroing_chunks_total",
                           "Free chunks an open found not known to hold zeros and zeroed in the "
                           "background (known-zero chunks are not rewritten).");
Counter reserve_commits_total("spd_pool_reserve_batches_total",
                              "Batches of known-zero chunks made allocatable (kReserve records).");
// How long closing the pool waits for its own I/O (chunk zeroing, a commit) to complete.
constexpr uint64_t kShutdownDrainNs = 60'000'000'000;
Counter shutdown_drain_timeouts_total(
    "spd_pool_shutdown_drain_timeouts_total",
    "Pool shutdowns that gave up waiting for in-flight pool I/O (its buffers were leaked).");

}  // namespace

Pool::Pool(std::unique_ptr<IoBackend> backend, Reactor* reactor)
    : backend_(std::move(backend)),
      reactor_(reactor),
      commit_(new CommitState()),
      group_(new GroupCommit(this, backend_.get(), true)) {
  commit_->io.ctx = this;
  commit_->io.done = &Pool::OnCommitIo;
  remote_wait_timer_.fn = &Pool::OnRemoteWaitTimer;
  remote_wait_timer_.pool = this;
  space_timer_.fn = &Pool::OnSpaceTimer;
  space_timer_.pool = this;
  commit_->log_buf = AllocAligned(kLogBlocksPerCommitMax * pf::kBlockBytes);
  // Zeroing of freed chunks and the background zeroing after open have I/Os of their own:
  // a burst of one never holds up the other.
  for (size_t i = 0; i < kPunchIosMax + kZeroIosMax; ++i) {
    auto p = std::make_unique<PunchIo>();
    p->pool = this;
    p->background = i >= kPunchIosMax;
    p->io.ctx = p.get();
    p->io.done = &Pool::OnPunchDone;
    (p->background ? zero_io_free_ : punch_free_).push_back(p.get());
    punch_ios_.push_back(std::move(p));
  }
}

Pool::~Pool() {
  // Control operations still queued or running finish first (each wait of theirs is bounded);
  // their callbacks run from here.
  for (int i = 0; i < 100000 && !control_ops_.empty(); ++i) reactor_->RunOnce(10'000'000);
  reactor_->CancelTimer(&remote_wait_timer_);
  // Writes still waiting for space are left as they are: their submitter (the NBD server)
  // drains before the pool closes, so there are none unless it gave up on them.
  reactor_->CancelTimer(&space_timer_);
  // Zeroing not yet started is dropped: those chunks stay allocated on disk (their free records
  // are never written), as after a crash, which a TRIM allows. Zeroing that runs must finish.
  closing_ = true;
  punch_queue_.clear();
  zero_queue_.clear();
  if (DrainIo(kShutdownDrainNs)) return;
  shutdown_drain_timeouts_total.Add();
  SPD_LOG_ERROR(
      "pool: shutdown drain timed out after %llu s with I/O still in flight (commit %s, %zu "
      "chunk zeroings); leaving its buffers and the backend allocated rather than freeing them "
      "under the kernel. Metadata is as after a crash: the next open recovers it.",
      static_cast<unsigned long long>(kShutdownDrainNs / 1'000'000'000),
      group_->busy() ? "running" : "idle",
      kPunchIosMax - punch_free_.size() + kZeroIosMax - zero_io_free_.size());
  // What the kernel may still write into, or complete to, must outlive this object.
  (void)backend_.release();
  (void)commit_.release();
  (void)group_.release();
  for (auto& p : punch_ios_) (void)p.release();
}

bool Pool::IoIdle() const {
  // Volume requests are their submitter's to drain (the NBD server does before the pool
  // closes): their completions call back into it.
  return !group_->busy() && punch_free_.size() == kPunchIosMax &&
         zero_io_free_.size() == kZeroIosMax && !ro_task_scheduled_;
}

bool Pool::DrainIo(uint64_t timeout_ns) {
  // Waits for completions, never for a number of ticks: once the reactor is stopping a tick
  // does not sleep, so a count of ticks passes in microseconds while a punch still runs. Here
  // a tick sleeps until a completion while the reactor runs, and polls once it is stopping;
  // either way only the deadline ends the wait early.
  const uint64_t deadline = MonotonicNs() + timeout_ns;
  while (!IoIdle()) {
    const uint64_t now = MonotonicNs();
    if (now >= deadline) return false;
    reactor_->RunOnce(std::min<uint64_t>(deadline - now, 10'000'000));
  }
  return true;
}

void Pool::ResetChunkState() {
  owners_.assign(chunks_total_, 0);
  state_.assign(chunks_total_, kFreeDirty);
  chunk_inflight_.assign(chunks_total_, 0);
  pins_.reset(new std::atomic<uint32_t>[chunks_total_]());
  alloc_pending_.assign(chunks_total_, 0);
  zero_mask_.reset(new std::atomic<uint64_t>[chunks_total_]());
  wseq_.reset(new std::atomic<uint32_t>[chunks_total_]());
  zero_block_bytes_ = std::max<uint32_t>(64u << 10, chunk_bytes_ / 64);
  zero_claim_.assign(chunks_total_, 0);
  free_zero_.clear();
  known_zero_free_.clear();
  zero_queue_.clear();
  zeroed_pending_.clear();
  reserving_ = 0;
  reserve_target_ = std::clamp<uint64_t>(chunks_total_ / 64, 8, kReserveChunksMax);
}

uint64_t Pool::ZeroBits(uint64_t in, uint64_t len, bool covered_only) const {
  const uint64_t zb = zero_block_bytes_;
  uint64_t first = in / zb;
  uint64_t end = (in + len + zb - 1) / zb;  // exclusive, blocks touched
  if (covered_only) {
    first = (in + zb - 1) / zb;
    end = (in + len) / zb;
  }
  if (end <= first) return 0;
  const uint64_t n = end - first;
  return (n >= 64 ? ~0ull : ((1ull << n) - 1)) << first;
}

void Pool::MarkData(uint32_t p, uint64_t in, uint64_t len) {
  wseq_[p].fetch_add(1, std::memory_order_seq_cst);
  zero_mask_[p].fetch_and(~ZeroBits(in, len, false), std::memory_order_relaxed);
}

void Pool::MarkZeroIfUnwritten(uint32_t p, uint64_t in, uint64_t len, uint32_t wseq) {
  if (wseq_[p].load(std::memory_order_seq_cst) != wseq) return;
  zero_mask_[p].fetch_or(ZeroBits(in, len, true), std::memory_order_relaxed);
}

uint32_t Pool::ChunkAt(uint64_t offset_bytes) const {
  return static_cast<uint32_t>((offset_bytes - data_offset_) / chunk_bytes_);
}

uint64_t Pool::ChunkOffset(uint32_t pchunk) const {
  return data_offset_ + static_cast<uint64_t>(pchunk) * chunk_bytes_;
}

// ---- format and open ------------------------------------------------------------------------

// pool.h spells the default out (it does not include the format header).
static_assert(PoolOptions{}.volumes_max == pf::kVolumesMaxDefault);

Result<std::unique_ptr<Pool>> Pool::Create(std::unique_ptr<IoBackend> backend, Reactor* reactor,
                                           const PoolOptions& options) {
  std::unique_ptr<Pool> p(new Pool(std::move(backend), reactor));
  SPD_RETURN_IF_ERROR(p->Format(options));
  p->ApplyRunTimeOptions(options);
  return p;
}

Status Pool::Format(const PoolOptions& o) {
  const uint64_t size = backend_->size_bytes();
  const uint32_t version =
      o.format_version_for_test == 0 ? pf::kVersion : o.format_version_for_test;
  if (version < pf::kVersionMin || version > pf::kVersion)
    return InvalidArgument("pool format version " + std::to_string(version) + " is not 1.." +
                           std::to_string(pf::kVersion));
  if (o.chunk_size_bytes < (64u << 10) || (o.chunk_size_bytes & (o.chunk_size_bytes - 1)))
    return InvalidArgument("chunk size must be a power of two >= 64 KiB");
  // Older formats have their fixed table; only version 3 takes the option.
  if (version >= 3 && (o.volumes_max < 1 || o.volumes_max > pf::kVolumesMaxLimit))
    return InvalidArgument("volumes_max " + std::to_string(o.volumes_max) +
                           " is not between 1 and " + std::to_string(pf::kVolumesMaxLimit));
  if (size > pf::kPoolBytesMax)
    return InvalidArgument("backend of " + std::to_string(size) +
                           " bytes is larger than the largest pool, 64 TiB "
                           "(pool_format::kPoolBytesMax): use a smaller device, a partition or a "
                           "smaller --pool-size");
  if (size / o.chunk_size_bytes > pf::kChunksMax)
    return InvalidArgument("backend of " + std::to_string(size) + " bytes holds " +
                           std::to_string(size / o.chunk_size_bytes) + " chunks of " +
                           std::to_string(o.chunk_size_bytes) + " bytes; a pool has at most " +
                           std::to_string(pf::kChunksMax) +
                           " (pool_format::kChunksMax): use a larger --chunk-size");
  chunk_bytes_ = o.chunk_size_bytes;
  pool_bytes_ = size;
  volumes_max_ = version >= 3 ? o.volumes_max : pf::kVolumesMaxV2;
  slots_.clear();
  slots_.resize(volumes_max_);
  // The checkpoint slots hold the whole volume table, so the log and the data region start
  // further out the larger the table is (the superblock records every offset).
  const uint64_t chunks_guess = size / chunk_bytes_;
  ckpt_bytes_ =
      RoundUp(sizeof(pf::CheckpointHeader) + pf::CheckpointPayloadBytes(volumes_max_, chunks_guess),
              pf::kBlockBytes);
  ckpt_offset_[0] = 2 * pf::kBlockBytes;
  ckpt_offset_[1] = ckpt_offset_[0] + ckpt_bytes_;
  log_offset_ = ckpt_offset_[1] + ckpt_bytes_;
  log_bytes_ = RoundUp(std::max<uint64_t>(o.log_size_bytes, 64 * pf::kBlockBytes), pf::kBlockBytes);
  data_offset_ = RoundUp(log_offset_ + log_bytes_, chunk_bytes_);
  if (data_offset_ + chunk_bytes_ > size)
    return InvalidArgument("backend too small for a pool with this chunk size");
  chunks_total_ = (size - data_offset_) / chunk_bytes_;

  std::random_device rd;
  for (auto& b : uuid_) b = static_cast<uint8_t>(rd());

  ResetChunkState();
  chunks_free_ = chunks_total_;
  ckpt_seq_ = 0;
  next_lsn_ = 1;
  log_pos_ = 0;

  // Whatever the backend held before is gone: zero the data region and the log.
  SPD_RETURN_IF_ERROR(ZeroFreeChunks());
  // Flushed zeros: the first checkpoint says so of all but a first reserve (allocatable at
  // once, not known zero on disk), and no open zeroes the others again.
  format_version_ = version;
  // Version 1 keeps no known-zero state: every chunk stays allocatable (ZeroFreeChunks).
  zero_map_ = version >= 2;
  if (zero_map_) {
    free_zero_.clear();
    for (uint64_t i = chunks_total_; i-- > 0;) {
      if (i < reserve_target_) {
        free_zero_.push_back(static_cast<uint32_t>(i));
      } else {
        state_[i] = kFreeKnownZero;
        known_zero_free_.push_back(static_cast<uint32_t>(i));
      }
    }
  }
  SPD_RETURN_IF_ERROR(backend_->DiscardSync(log_offset_, log_bytes_));
  // A checkpoint in slot 0, then the superblocks (A, flush, B, flush): a crash before the
  // superblocks leaves no pool; after, a complete one.
  // Checkpoint number s always lives in slot s % 2.
  commit_->ckpt_buf = AllocAligned(ckpt_bytes_);
  size_t n = EncodeCheckpoint(commit_->ckpt_buf.get());
  SPD_RETURN_IF_ERROR(
      backend_->WriteSync(ckpt_offset_[(ckpt_seq_ + 1) % 2], commit_->ckpt_buf.get(), n));
  SPD_RETURN_IF_ERROR(backend_->FlushSync());
  ++ckpt_seq_;

  AlignedBuf sbuf = AllocAligned(pf::kBlockBytes);
  auto* sb = reinterpret_cast<pf::Superblock*>(sbuf.get());
  sb->magic = pf::kSuperMagic;
  sb->version = version;
  std::memcpy(sb->uuid, uuid_, 16);
  sb->pool_bytes = pool_bytes_;
  sb->chunk_bytes = chunk_bytes_;
  sb->ckpt_offset[0] = ckpt_offset_[0];
  sb->ckpt_offset[1] = ckpt_offset_[1];
  sb->ckpt_bytes = ckpt_bytes_;
  sb->log_offset = log_offset_;
  sb->log_bytes = log_bytes_;
  sb->data_offset = data_offset_;
  sb->chunks_total = chunks_total_;
  // Versions 1 and 2 left this zero, and so does a test that formats one.
  sb->volumes_max = version >= 3 ? volumes_max_ : 0;
  sb->crc = 0;
  sb->crc = Crc32c(0, sb, pf::kBlockBytes);
  SPD_RETURN_IF_ERROR(backend_->WriteSync(0, sb, pf::kBlockBytes));
  SPD_RETURN_IF_ERROR(backend_->FlushSync());
  SPD_RETURN_IF_ERROR(backend_->WriteSync(pf::kBlockBytes, sb, pf::kBlockBytes));
  SPD_RETURN_IF_ERROR(backend_->FlushSync());
  return Status::Ok();
}

Result<std::unique_ptr<Pool>> Pool::Open(std::unique_ptr<IoBackend> backend, Reactor* reactor) {
  std::unique_ptr<Pool> p(new Pool(std::move(backend), reactor));
  SPD_RETURN_IF_ERROR(p->Load());
  return p;
}

Result<std::unique_ptr<Pool>> Pool::OpenOrCreate(std::unique_ptr<IoBackend> backend,
                                                 Reactor* reactor, const PoolOptions& options) {
  AlignedBuf buf = AllocAligned(2 * pf::kBlockBytes);
  SPD_RETURN_IF_ERROR(backend->ReadSync(0, buf.get(), 2 * pf::kBlockBytes));
  bool blank =
      std::all_of(buf.get(), buf.get() + 2 * pf::kBlockBytes, [](uint8_t b) { return b == 0; });
  if (blank) return Create(std::move(backend), reactor, options);
  SPD_ASSIGN_OR_RETURN(std::unique_ptr<Pool> p, Open(std::move(backend), reactor));
  p->ApplyRunTimeOptions(options);
  return p;
}

void Pool::ApplyRunTimeOptions(const PoolOptions& options) {
  // Choices of this run, not part of the format (chunk and log sizes are fixed at Format).
  fault_skip_commit_flush_ = options.fault_skip_commit_flush;
  space_wait_ns_ = options.space_wait_ns;
  overcommit_max_ = options.overcommit_max;
  map_memory_max_ = options.map_memory_max;
  group_->set_overlap(options.overlap_flush && !options.fault_skip_commit_flush);
}

Result<PoolCheckReport> Pool::Check(std::unique_ptr<IoBackend> backend, Reactor* reactor,
                                    bool repair) {
  PoolCheckReport rep;
  std::unique_ptr<Pool> p(new Pool(std::move(backend), reactor));
  IoBackend* b = p->backend_.get();
  // Superblocks, each on its own.
  AlignedBuf buf = AllocAligned(2 * pf::kBlockBytes);
  SPD_RETURN_IF_ERROR(b->ReadSync(0, buf.get(), 2 * pf::kBlockBytes));
  for (int i = 0; i < 2; ++i) {
    auto* sb = reinterpret_cast<pf::Superblock*>(buf.get() + i * pf::kBlockBytes);
    uint32_t crc = sb->crc;
    sb->crc = 0;
    bool ok = sb->magic == pf::kSuperMagic && crc == Crc32c(0, sb, pf::kBlockBytes);
    sb->crc = crc;
    rep.superblock_ok[i] = ok;
  }
  if (!rep.superblock_ok[0] && !rep.superblock_ok[1]) {
    rep.problems.push_back("no valid superblock: not a pool, or both copies corrupt");
    return rep;
  }
  if (rep.superblock_ok[0] != rep.superblock_ok[1]) {
    int bad = rep.superblock_ok[0] ? 1 : 0;
    rep.problems.push_back("superblock copy " + std::string(bad ? "B" : "A") + " is corrupt");
    if (repair) {
      // Rewrite the bad copy from the good one: the only repair that can never lose data.
      uint8_t* good = buf.get() + (1 - bad) * pf::kBlockBytes;
      SPD_RETURN_IF_ERROR(b->WriteSync(bad * pf::kBlockBytes, good, pf::kBlockBytes));
      SPD_RETURN_IF_ERROR(b->FlushSync());
      rep.repaired.push_back("rewrote superblock copy " + std::string(bad ? "B" : "A"));
    }
  }
  Status s = p->ReadSuperblock();
  if (s.ok()) s = p->LoadMetadata();
  if (!s.ok()) {
    rep.problems.push_back(s.ToString());
    return rep;
  }
  rep.checkpoint_seq = p->ckpt_seq_;
  rep.log_blocks_replayed = p->log_blocks_replayed_;
  rep.log_end = p->log_end_;
  rep.format_version = p->format_version_;
  rep.volumes_max = p->volumes_max_;
  rep.volumes = p->ListVolumes().size();
  rep.chunks_total = p->chunks_total_;
  rep.chunks_free = p->chunks_free_;
  if (p->anomalies_)
    rep.problems.push_back(std::to_string(p->anomalies_) +
                           " chunk owner or log records do not fit the volume table (ignored "
                           "at open: those chunks are treated as free)");
  return rep;
}

Status Pool::ZeroFreeChunks() {
  free_zero_.clear();
  AlignedBuf zeros;
  uint64_t c = 0;
  while (c < chunks_total_) {
    if (state_[c] != kFreeDirty) {
      ++c;
      continue;
    }
    uint64_t end = c;
    while (end < chunks_total_ && state_[end] == kFreeDirty) ++end;
    uint64_t off = ChunkOffset(static_cast<uint32_t>(c));
    uint64_t len = (end - c) * chunk_bytes_;
    if (backend_->discard_zeroes()) {
      SPD_RETURN_IF_ERROR(backend_->DiscardSync(off, len));
    } else {
      if (!zeros) zeros = AllocAligned(1 << 20);
      for (uint64_t done = 0; done < len; done += 1 << 20)
        SPD_RETURN_IF_ERROR(
            backend_->WriteSync(off + done, zeros.get(), std::min<uint64_t>(1 << 20, len - done)));
    }
    for (uint64_t i = c; i < end; ++i) state_[i] = kFreeZero;
    c = end;
  }
  SPD_RETURN_IF_ERROR(backend_->FlushSync());
  // Hand out low chunks first: the stack pops from the back.
  for (uint64_t i = chunks_total_; i-- > 0;)
    if (state_[i] == kFreeZero) free_zero_.push_back(static_cast<uint32_t>(i));
  return Status::Ok();
}

// ---- chunks ---------------------------------------------------------------------------------

uint32_t Pool::AllocChunk(Volume* v, uint64_t vchunk) {
  if (free_zero_.size() <= reserve_target_ / 2) RefillReserve();
  if (free_zero_.empty()) {
    // Freed, zeroed or reserved chunks come back after the commit that records them.
    if (CommitWouldFreeSpace()) group_->Kick();
    return 0;
  }
  uint32_t p = free_zero_.back();
  free_zero_.pop_back();
  SPD_ASSERT(state_[p] == kFreeZero);
  state_[p] = kAllocated;
  owners_[p] = (static_cast<uint64_t>(v->slot_ + 1) << 32) | vchunk;
  --chunks_free_;
  SetAllocPending(p, 1);
  // Handed out only when known to hold zeros: all of it reads as zeros until written.
  SetZeroMask(p, ZeroBits(0, chunk_bytes_, true));
  std::atomic_ref<uint32_t>(v->map_[vchunk]).store(p + 1, std::memory_order_seq_cst);
  v->info_.allocated_bytes += chunk_bytes_;
  v->allocated_.store(v->info_.allocated_bytes, std::memory_order_relaxed);
  commit_->records.push_back(
      {static_cast<uint32_t>(pf::LogRecordType::kAlloc), v->slot_, vchunk, p, 0});
  if (commit_->records.size() >= kBackgroundCommitRecords) group_->Kick();
  return p + 1;
}

void Pool::UnmapChunk(Volume* v, uint64_t vchunk) {
  uint32_t p = v->map_[vchunk] - 1;
  // seq_cst, then pins_ read seq_cst in MaybeStartPunch: a remote request either sees the chunk
  // gone (and backs off) or has pinned it before we look (and we wait for it).
  std::atomic_ref<uint32_t>(v->map_[vchunk]).store(0, std::memory_order_seq_cst);
  v->info_.allocated_bytes -= chunk_bytes_;
  v->allocated_.store(v->info_.allocated_bytes, std::memory_order_relaxed);
  owners_[p] = 0;
  state_[p] = kFreeing;
  // In-flight I/O to the chunk finishes first: a late write must never land in a chunk that
  // another volume could already own.
  if (chunk_inflight_[p] == 0) {
    MaybeStartPunch(p);
  } else {
    ++freeing_busy_;
  }
}

void Pool::ChunkIoDone(uint32_t p) {
  SPD_ASSERT(chunk_inflight_[p] > 0);
  if (--chunk_inflight_[p] == 0 && state_[p] == kFreeing) {
    --freeing_busy_;
    MaybeStartPunch(p);
  }
}

void Pool::MaybeStartPunch(uint32_t p) {
  if (pins_[p].load(std::memory_order_seq_cst) == 0) return StartPunch(p);
  remote_pinned_frees_total.Add();
  if (remote_wait_.empty()) reactor_->ArmTimer(&remote_wait_timer_, MonotonicNs() + kRemoteWaitNs);
  remote_wait_.push_back(p);
}

void Pool::OnRemoteWaitTimer(Timer* t) {
  Pool* self = static_cast<RemoteWaitTimer*>(t)->pool;
  std::vector<uint32_t> waiting;
  waiting.swap(self->remote_wait_);
  for (uint32_t p : waiting) self->MaybeStartPunch(p);  // re-arms while any is still pinned
}

void Pool::StartPunch(uint32_t p) {
  // A read-only pool writes nothing more; the chunk stays kFreeing (allocated on disk).
  if (read_only()) return;
  const bool background = state_[p] == kZeroing;
  std::vector<PunchIo*>& free_ios = background ? zero_io_free_ : punch_free_;
  if (free_ios.empty()) {
    (background ? zero_queue_ : punch_queue_).push_back(p);
    return;
  }
  PunchIo* io = free_ios.back();
  free_ios.pop_back();
  io->pchunk = p;
  io->done_bytes = 0;
  if (background) ++zeroing_inflight_;
  io->io.flags = 0;
  io->io.offset_bytes = ChunkOffset(p);
  if (backend_->discard_zeroes()) {
    io->io.op = IoOp::kDiscard;
    io->io.length_bytes = chunk_bytes_;
    io->io.buf = nullptr;
  } else {
    // Plain writes of zeros through the backend's queue: a write-zeroes on a block device is an
    // ioctl (BLKZEROOUT) that would block the reactor for the whole chunk.
    if (!zero_buf_) {
      zero_buf_ = std::make_unique<ZeroBuf>();
      zero_buf_->buf = AllocAligned(kZeroWriteBytes);
    }
    io->io.op = IoOp::kWrite;
    io->io.length_bytes = std::min<uint32_t>(chunk_bytes_, kZeroWriteBytes);
    io->io.buf = zero_buf_->buf.get();
  }
  SubmitBackground(&io->io);
}

void Pool::SubmitBackground(BackendIo* io) {
  io->gate_state = nullptr;
  if (bg_gate_ != nullptr) return bg_gate_->Submit(backend_.get(), io);
  backend_->Submit(io);
}

void Pool::StartBackgroundZeroing() {
  free_zero_.clear();
  known_zero_free_.clear();
  zero_queue_.clear();
  // Stacks pop from the back: low chunks first.
  for (uint64_t i = chunks_total_; i-- > 0;) {
    if (state_[i] == kFreeKnownZero) known_zero_free_.push_back(static_cast<uint32_t>(i));
    if (state_[i] == kFreeDirty) {
      state_[i] = kZeroing;
      zero_queue_.push_back(static_cast<uint32_t>(i));
    }
  }
  open_zeroing_total.Add(zero_queue_.size());
  while (!zero_queue_.empty() && !zero_io_free_.empty()) {
    const uint32_t p = zero_queue_.back();
    zero_queue_.pop_back();
    StartPunch(p);
  }
}

void Pool::ReturnZeroedChunk(uint32_t p) {
  if (!zero_map_ || free_zero_.size() < reserve_target_) {
    state_[p] = kFreeZero;
    free_zero_.push_back(p);
    return;
  }
  // The device flush that just completed covered its zeroing: the record may say so.
  state_[p] = kFreeKnownZero;
  known_zero_free_.push_back(p);
  commit_->records.push_back({static_cast<uint32_t>(pf::LogRecordType::kZeroed), 0, 0, p, 0});
}

void Pool::RefillReserve() {
  if (reserving_ > 0 || known_zero_free_.empty() || read_only()) return;
  const uint64_t n = std::min<uint64_t>(reserve_target_, known_zero_free_.size());
  for (uint64_t i = 0; i < n; ++i) {
    const uint32_t p = known_zero_free_.back();
    known_zero_free_.pop_back();
    state_[p] = kReserving;
    ++reserving_;
    commit_->records.push_back({static_cast<uint32_t>(pf::LogRecordType::kReserve), 0, 0, p, 0});
  }
  reserve_commits_total.Add();
  group_->Kick();
}

bool Pool::CommitWouldFreeSpace() const {
  return !freed_pending_.empty() || !zeroed_pending_.empty() || reserving_ > 0;
}

Status Pool::CheckFreeChunksHoldZeros() {
  AlignedBuf buf = AllocAligned(chunk_bytes_);
  const AlignedBuf zeros = AllocAligned(chunk_bytes_);
  for (uint64_t c = 0; c < chunks_total_; ++c) {
    if (state_[c] != kFreeZero && state_[c] != kFreeKnownZero && state_[c] != kReserving) continue;
    SPD_RETURN_IF_ERROR(
        backend_->ReadSync(ChunkOffset(static_cast<uint32_t>(c)), buf.get(), chunk_bytes_));
    if (std::memcmp(buf.get(), zeros.get(), chunk_bytes_) != 0)
      return DataLoss("free chunk " + std::to_string(c) + " (state " + std::to_string(state_[c]) +
                      ") holds data");
  }
  return Status::Ok();
}

void Pool::OnPunchDone(BackendIo* bio) {
  auto* io = static_cast<PunchIo*>(bio->ctx);
  Pool* self = io->pool;
  uint32_t p = io->pchunk;
  if (bio->gate_state != nullptr && self->bg_gate_ != nullptr) self->bg_gate_->Done(bio);
  bio->gate_state = nullptr;
  if (bio->result >= 0 && bio->op == IoOp::kWrite) {
    io->done_bytes += bio->length_bytes;
    if (io->done_bytes < self->chunk_bytes_) {  // the next piece of zeros
      bio->offset_bytes += bio->length_bytes;
      bio->length_bytes = static_cast<uint32_t>(
          std::min<uint64_t>(self->chunk_bytes_ - io->done_bytes, kZeroWriteBytes));
      return self->SubmitBackground(bio);
    }
  }
  if (self->state_[p] == kZeroing) {
    --self->zeroing_inflight_;
    if (bio->result < 0) {
      // Stays out of circulation until the next open zeroes it again.
      punch_errors_total.Add();
      self->state_[p] = kFreeDirty;
      self->WakeSpaceWaiters();
    } else {
      // Allocatable once a device flush covers the zeros (the next commit).
      self->state_[p] = kZeroFlushPending;
      self->zeroed_pending_.push_back(p);
      // A commit per batch, or for a writer waiting, or when the last zeroing is done: not one
      // per chunk while nothing is allocatable yet after open.
      if (!self->closing_ && (self->zeroed_pending_.size() >= kBackgroundCommitRecords ||
                              self->space_head_ != nullptr ||
                              (self->zero_queue_.empty() && self->zeroing_inflight_ == 0)))
        self->group_->Kick();
    }
  } else if (bio->result < 0) {
    // The chunk stays out of circulation until the next open zeroes it again.
    punch_errors_total.Add();
    self->state_[p] = kFreeDirty;
    self->WakeSpaceWaiters();  // that chunk will not come back: a waiter may have none left
  } else {
    self->state_[p] = kFreePending;
    self->commit_->records.push_back({static_cast<uint32_t>(pf::LogRecordType::kFree), 0, 0, p, 0});
    self->freed_pending_.push_back(p);
    if (!self->closing_ &&
        (self->freed_pending_.size() >= kBackgroundCommitRecords || self->free_zero_.empty()))
      self->group_->Kick();
  }
  (io->background ? self->zero_io_free_ : self->punch_free_).push_back(io);
  if (self->closing_) return;  // draining for shutdown: start nothing new
  std::vector<uint32_t>& queue = io->background ? self->zero_queue_ : self->punch_queue_;
  if (!queue.empty()) {
    uint32_t next = queue.back();
    queue.pop_back();
    self->StartPunch(next);
  }
}

}  // namespace spd
