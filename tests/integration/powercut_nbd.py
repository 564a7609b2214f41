"""NBD side of test_powercut.sh (not a test by itself): writes through libnbd and records which
blocks the server acknowledged as durable, then, after the power cut, checks them.

  powercut_nbd.py prefill URI STATE            first writes into the "old" chunks, FLUSH
  powercut_nbd.py write URI STATE SEED PID     the mix below, then SIGKILL to PID (spd2)
  powercut_nbd.py verify URI STATE [--expect-loss]

A block's value is 0 (zeros) or the number of the write that put it there; its bytes name that
write and the block, so a block that moved or mixed reads as wrong too. For every block the
state keeps the newest value acknowledged durable and the values written after it: after a power
cut the block must hold one of those. A block is acknowledged durable when a FUA write (or FUA
write-zeroes) of it completed, or when a FLUSH completed that was sent after its write completed.
"""
import json
import os
import random
import signal
import sys

import nbd

BLOCK = 4096
CHUNK_BLOCKS = 256  # 1 MiB chunks (spd2's default --chunk-size)
VOLUME_BLOCKS = 16384  # 64 MiB volume
OLD_CHUNKS = list(range(0, 32, 2))  # allocated by prefill, before the run under test


def data(value, idx):
    if value == 0:
        return bytes(BLOCK)
    head = b"powercut write %08d block %06d " % (value, idx)
    return head + random.Random(value * 1000003 + idx).randbytes(BLOCK - len(head))


def connect(uri, n):
    handles = []
    for _ in range(n):
        h = nbd.NBD()
        h.connect_uri(uri)
        if not h.can_fua() or not h.can_flush():
            raise SystemExit("server offers no FUA or no FLUSH")
        handles.append(h)
    return handles


def load(path):
    with open(path) as f:
        s = json.load(f)
    s["blocks"] = {int(k): v for k, v in s["blocks"].items()}
    return s


def save(path, s):
    with open(path, "w") as f:
        json.dump(s, f)


class Recorder:
    """Tracks what the server acknowledged: blocks[idx] = [durable value, values written after
    it, how it became durable in this run (None: before the run)]."""

    def __init__(self, state):
        self.s = state
        self.pending = {}  # block -> category, written (acknowledged) since the last FLUSH
        self.counts = {}

    def wrote(self, idx, value, durable_as):
        """durable_as: the category when the write was acknowledged durable (FUA), else None."""
        b = self.s["blocks"].setdefault(idx, [0, [], None])
        if durable_as:
            b[0], b[1], b[2] = value, [], durable_as
            self.pending.pop(idx, None)
            self.counts[durable_as] = self.counts.get(durable_as, 0) + 1
        else:
            b[1].append(value)

    def wrote_plain(self, idx, value, category):
        self.wrote(idx, value, None)
        self.pending[idx] = category

    def flushed(self):
        """A FLUSH sent after the pending writes completed has completed: the newest value of
        each of their blocks is durable."""
        for idx, category in self.pending.items():
            b = self.s["blocks"][idx]
            b[0], b[1], b[2] = b[1][-1], [], category
            self.counts[category] = self.counts.get(category, 0) + 1
        self.pending = {}


def prefill(uri, path):
    (h,) = connect(uri, 1)
    state = {"next": 1, "blocks": {}, "allocated": []}
    for c in OLD_CHUNKS:  # the first 256 KiB of each: allocates the chunk
        buf = b""
        for idx in range(c * CHUNK_BLOCKS, c * CHUNK_BLOCKS + 64):
            v = state["next"]
            state["next"] += 1
            buf += data(v, idx)
            state["blocks"][idx] = [v, [], None]
        h.pwrite(buf, c * CHUNK_BLOCKS * BLOCK)
        state["allocated"].append(c)
    h.flush()
    h.shutdown()
    save(path, state)
    print("prefill: %d blocks in %d chunks, flushed" % (64 * len(OLD_CHUNKS), len(OLD_CHUNKS)))


def write(uri, path, seed, pid):
    state = load(path)
    rng = random.Random(seed)
    rec = Recorder(state)
    allocated = set(state["allocated"])  # chunks with an acknowledged write
    # Two connections: with more than one reactor the second one lands on another reactor and
    # writes allocated chunks through its own channel of the backend (the remote path).
    hs = connect(uri, 2)
    fresh_chunks = [c for c in range(VOLUME_BLOCKS // CHUNK_BLOCKS) if c not in allocated]
    rng.shuffle(fresh_chunks)

    def values(n):
        first = state["next"]
        state["next"] += n
        return list(range(first, first + n))

    def target(p_fresh, keep_fresh=0):
        r = rng.random()
        if r < p_fresh and len(fresh_chunks) > keep_fresh:
            chunk = fresh_chunks.pop()  # first write into a chunk: it allocates
        elif r < 0.6:
            chunk = rng.choice(sorted(allocated))  # allocated before this run or during it
        else:
            chunk = rng.choice(OLD_CHUNKS)
        where = "fresh" if chunk not in allocated else "allocated"
        first = chunk * CHUNK_BLOCKS + rng.randrange(CHUNK_BLOCKS)
        n = min(rng.choice([1, 1, 1, 2, 4, 8]), (chunk + 1) * CHUNK_BLOCKS - first)
        allocated.add(chunk)
        return first, n, where

    def fua_write(h, first, n, category):
        vs = values(n)
        h.pwrite(b"".join(data(v, first + i) for i, v in enumerate(vs)), first * BLOCK,
                 nbd.CMD_FLAG_FUA)
        for i, v in enumerate(vs):
            rec.wrote(first + i, v, category)

    def plain_write(h, first, n, category):
        vs = values(n)
        h.pwrite(b"".join(data(v, first + i) for i, v in enumerate(vs)), first * BLOCK)
        for i, v in enumerate(vs):
            rec.wrote_plain(first + i, v, category)

    # Part 1: FUA writes, FUA write-zeroes, plain writes and a FLUSH every 1 to 6 of them.
    since_flush, flush_after = 0, rng.randint(1, 6)
    for _ in range(300):
        first, n, where = target(0.12, keep_fresh=16)  # 16 fresh chunks stay for part 2
        h = rng.choice(hs)
        op = rng.random()
        if op < 0.3:
            fua_write(h, first, n, "fua/" + where)
        elif op < 0.35 and where == "allocated":
            h.zero(n * BLOCK, first * BLOCK, nbd.CMD_FLAG_FUA)
            for i in range(n):
                rec.wrote(first + i, 0, "fua-zeroes/allocated")
        else:
            plain_write(h, first, n, "flush/" + where)
            since_flush += 1
            if since_flush >= flush_after:
                rng.choice(hs).flush()  # either connection: a FLUSH covers every completed write
                rec.flushed()
                since_flush, flush_after = 0, rng.randint(1, 6)
    rng.choice(hs).flush()
    rec.flushed()
    # Part 2, after the last FLUSH: FUA writes, which only FUA makes durable, and plain writes
    # never flushed (each of those blocks may hold its old or its new value after the cut).
    unflushed = 0
    for j in range(60):
        first, n, where = target(1 if j % 4 == 0 else 0.1)
        if j % 2 == 0:
            fua_write(hs[j % 4 // 2], first, n, "fua-last/" + where)
        else:
            plain_write(hs[j % 4 // 2], first, n, None)
            unflushed += n
    # Part 3: plain writes still in flight at the kill.
    inflight = []
    for j in range(16):
        first, n, _ = target(0.2)
        vs = values(n)
        buf = nbd.Buffer.from_bytearray(
            bytearray(b"".join(data(v, first + i) for i, v in enumerate(vs))))
        hs[j % 2].aio_pwrite(buf, first * BLOCK)
        inflight.append(buf)
        for i, v in enumerate(vs):
            rec.wrote(first + i, v, None)
    state["allocated"] = sorted(allocated)
    save(path, state)  # before the kill: everything the server could have acknowledged
    os.kill(pid, signal.SIGKILL)
    print("write: acknowledged durable: %s; %d blocks written after the last FLUSH without "
          "FUA, %d writes in flight at the kill" % (
              ", ".join("%s %d" % kv for kv in sorted(rec.counts.items())), unflushed,
              len(inflight)))
    for k in ("fua/fresh", "fua/allocated", "flush/fresh", "flush/allocated",
              "fua-zeroes/allocated", "fua-last/fresh", "fua-last/allocated"):
        if not rec.counts.get(k):
            raise SystemExit("write: no %s block acknowledged durable: the mix lost coverage" % k)


def verify(uri, path, expect_loss):
    state = load(path)
    (h,) = connect(uri, 1)
    lost = {}  # category -> blocks acknowledged durable in the run under test and not there
    wrong = 0  # any other block that holds none of its acceptable values
    durable_run = 0
    examples = []
    step = CHUNK_BLOCKS
    for first in range(0, VOLUME_BLOCKS, step):
        got = h.pread(step * BLOCK, first * BLOCK)
        for idx in range(first, first + step):
            block = got[(idx - first) * BLOCK:(idx - first + 1) * BLOCK]
            b = state["blocks"].get(idx)
            ok_values = [0] if b is None else [b[0]] + b[1]
            if b is not None and b[2]:
                durable_run += 1
            if any(block == data(v, idx) for v in ok_values):
                continue
            if b is not None and b[2]:
                lost[b[2]] = lost.get(b[2], 0) + 1
            else:
                wrong += 1
            if len(examples) < 3:
                examples.append("block %d holds %r..., expected one of values %s" % (
                    idx, block[:32], ok_values[:4]))
    h.shutdown()
    print("verify: %d blocks acknowledged durable in the run, %d of them lost (%s); "
          "%d other blocks wrong (of %d)" % (
              durable_run, sum(lost.values()),
              ", ".join("%s %d" % kv for kv in sorted(lost.items())) or "none", wrong,
              VOLUME_BLOCKS))
    for e in examples:
        print("  " + e)
    if durable_run == 0:
        raise SystemExit("verify: nothing was acknowledged durable: the test proves nothing")
    if expect_loss:
        if not lost:
            raise SystemExit("verify: --fault-noop-flush lost nothing: the test cannot see a "
                             "missing flush")
        if wrong:
            raise SystemExit("verify: blocks outside the run changed")
        print("verify: the no-op flush was caught: %d blocks lost" % sum(lost.values()))
    elif lost or wrong:
        raise SystemExit("verify: acknowledged-durable data lost at the power cut")


def main():
    cmd = sys.argv[1]
    if cmd == "prefill":
        prefill(sys.argv[2], sys.argv[3])
    elif cmd == "write":
        write(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "verify":
        verify(sys.argv[2], sys.argv[3], "--expect-loss" in sys.argv[4:])
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
