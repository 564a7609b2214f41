"""NBD side of test_powercut.sh (not a test by itself): writes through libnbd and records which
blocks the server acknowledged as durable, then, after the power cut, checks them.

  powercut_nbd.py prefill URI STATE            first writes into the "old" chunks, FLUSH
  powercut_nbd.py write URI STATE SEED PID     the mix below, then SIGKILL to PID (spd2)
  powercut_nbd.py verify URI STATE [--expect-loss]

The block format, the state file, the recorder of what the server acknowledged and the check of
each block are tests/cluster/blockcheck.py's (imported from there; its docstring describes
them). A block is zeros or holds the write that put it there, with its number (the "value" or
version) and index in a checksummed header, so a block that moved, mixed or tore reads as wrong
too. For every block the state keeps the newest value acknowledged durable and the values written
after it: after a power cut the block must hold one of those. A block is acknowledged durable
when a FUA write (or FUA write-zeroes) of it completed, or when a FLUSH completed that was sent
after its write completed.
"""
import os
import random
import signal
import sys

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
import blockcheck as bc  # noqa: E402

BLOCK = bc.BLOCK
CHUNK_BLOCKS = 256  # 1 MiB chunks (spd2's default --chunk-size)
VOLUME_BLOCKS = 16384  # 64 MiB volume
OLD_CHUNKS = list(range(0, 32, 2))  # allocated by prefill, before the run under test


def prefill(uri, path):
    (h,) = bc.connect(uri, 1)
    state = bc.new_state(VOLUME_BLOCKS)
    state["allocated"] = []
    bc.begin_run(state, 0, 0)
    for c in OLD_CHUNKS:  # the first 256 KiB of each: allocates the chunk
        buf = b""
        for idx in range(c * CHUNK_BLOCKS, c * CHUNK_BLOCKS + 64):
            (v,) = bc.new_versions(state, 1)
            buf += bc.content(state, idx, v)
            state["blocks"][idx] = [v, [], None]  # durable before the run under test
        h.pwrite(buf, c * CHUNK_BLOCKS * BLOCK)
        state["allocated"].append(c)
    h.flush()
    h.shutdown()
    bc.save_state(path, state)
    print("prefill: %d blocks in %d chunks, flushed" % (64 * len(OLD_CHUNKS), len(OLD_CHUNKS)))


def write(uri, path, seed, pid):
    state = bc.load_state(path)
    rng = random.Random(seed)
    bc.begin_run(state, 0, seed)
    rec = bc.Recorder(state)
    allocated = set(state["allocated"])  # chunks with an acknowledged write
    # Two connections: with more than one reactor the second one lands on another reactor and
    # writes allocated chunks through its own channel of the backend (the remote path).
    hs = bc.connect(uri, 2)
    fresh_chunks = [c for c in range(VOLUME_BLOCKS // CHUNK_BLOCKS) if c not in allocated]
    rng.shuffle(fresh_chunks)

    def values(first, n, zero=False):
        """New values for blocks [first, first + n), recorded as sent."""
        vs = bc.new_versions(state, n)
        for i, v in enumerate(vs):
            rec.issued(first + i, v, zero)
        return vs

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
        vs = values(first, n)
        h.pwrite(b"".join(bc.content(state, first + i, v) for i, v in enumerate(vs)), first * BLOCK,
                 nbd.CMD_FLAG_FUA)
        for i, v in enumerate(vs):
            rec.completed(first + i, v, durable_as=category)

    def plain_write(h, first, n, category):
        vs = values(first, n)
        h.pwrite(b"".join(bc.content(state, first + i, v) for i, v in enumerate(vs)), first * BLOCK)
        for i, v in enumerate(vs):
            rec.completed(first + i, v, category=category)

    # Part 1: FUA writes, FUA write-zeroes, plain writes and a FLUSH every 1 to 6 of them.
    since_flush, flush_after = 0, rng.randint(1, 6)
    for _ in range(300):
        first, n, where = target(0.12, keep_fresh=16)  # 16 fresh chunks stay for part 2
        h = rng.choice(hs)
        op = rng.random()
        if op < 0.3:
            fua_write(h, first, n, "fua/" + where)
        elif op < 0.35 and where == "allocated":
            vs = values(first, n, zero=True)
            h.zero(n * BLOCK, first * BLOCK, nbd.CMD_FLAG_FUA)
            for i, v in enumerate(vs):
                rec.completed(first + i, v, durable_as="fua-zeroes/allocated")
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
        vs = values(first, n)  # recorded as sent: may or may not be there after the cut
        buf = nbd.Buffer.from_bytearray(
            bytearray(b"".join(bc.content(state, first + i, v) for i, v in enumerate(vs))))
        hs[j % 2].aio_pwrite(buf, first * BLOCK)
        inflight.append(buf)
    state["allocated"] = sorted(allocated)
    bc.save_state(path, state)  # before the kill: everything the server could have acknowledged
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
    state = bc.load_state(path)
    (h,) = bc.connect(uri, 1)
    lost = {}  # category -> blocks acknowledged durable in the run under test and not there
    wrong = 0  # any other block that holds none of its acceptable values
    durable_run = 0
    examples = []
    for idx, kind, detail in bc.check_volume(h, state, CHUNK_BLOCKS):  # the whole volume
        b = state["blocks"].get(idx)
        if b is not None and b[2]:
            durable_run += 1
        if kind == "ok":
            continue
        if b is not None and b[2]:
            lost[b[2]] = lost.get(b[2], 0) + 1
        else:
            wrong += 1
        if len(examples) < 3:
            examples.append("block %d %s: %s (acceptable values %s)" % (
                idx, kind, detail, ([0] if b is None else [b[0]] + b[1])[:4]))
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
