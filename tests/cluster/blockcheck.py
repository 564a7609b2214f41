#!/usr/bin/python3
"""blockcheck: a durability checker for NBD volumes (issue 17's fault matrix, and the shared
pieces of tests/integration/powercut_nbd.py, which imports this file as a module).

It writes self-describing blocks through NBD, records in a state file what the server
acknowledged, and later reads the volume back and checks that nothing acknowledged durable is
missing and that no block went back to an older write.

  blockcheck.py write  --uri URI --state FILE --seed S [--blocks N] [--qd Q] [--connections C]
                       [--seconds T] [--ops K] [--flush-every F] [--fua-ratio R] [--epoch E]
                       [--kill-pid PID --kill-after-ops K]
  blockcheck.py verify --uri URI --state FILE [--min-durable K]
  blockcheck.py verify --uri URI --state FILE --prefix     (asynchronous replication's promise)
  blockcheck.py damage --uri URI --state FILE --kind regress|zero|garbage|torn|misplace
                       [--older FILE] [--block B]      (negative controls only: breaks a block)

A write run ends at --ops writes or after --seconds, whichever comes first (both have defaults, so
a run is always bounded); --kill-pid sends SIGKILL to that pid (the server) right after write K
is sent, and the run then goes on until the connection fails.

Exit codes: 0 done (verify: every block fine); 1 verify found a failure (or too few blocks were
acknowledged durable to prove anything); 2 bad arguments or state file; 3 connection lost (or the
server failed a request): write saved its state first; 4 the server stopped answering (requests
still in flight after --stall seconds): write saved its state first.

Blocks (4096 bytes). A block never written is all zeros (version 0). A written block is
  0   magic "SPDBLKC1"
  8   block index        u64 little-endian
  16  version            u64: the number of the write, from one counter per state file, so it
                              grows with every write of a block and is never reused
  24  epoch              u64: the writer's idea of the current primary epoch (--epoch), or 0
  32  writer             u64: the writer's --seed
  40  payload            derived from (block index, version) only (SHAKE-256)
  4092 crc32             u32 little-endian, zlib.crc32 of bytes 0..4091
Decoding catches a block that is not ours (no magic), a torn or mixed block (bad checksum), a
misplaced one (another block's index), and a payload that does not match its header; verify
also catches a version the state never issued, or issued with another epoch or writer.

State file (JSON, replaced atomically: temp file, fsync, rename). Per tracked block:
[durable version, versions written after it, category]. The durable version is the newest one
the server acknowledged durable: a FUA write of it completed, or a FLUSH completed that was
sent after the write had completed (a FLUSH covers completed writes on every connection: spd2
offers multi-conn, and write refuses more than one connection to a server that does not).
Every write is added to "written after" before it is sent, so a write still in flight, or lost
with the connection, counts as "may be there". After a crash or failover each block must hold
its durable version or one written after it; holding an older version is a regression. A block
never has two writes in flight at once, so the order of its versions is the order the server
saw. The state also keeps the version counter ("next"), each write run's first version, epoch
and writer ("runs"), the versions that were write-zeroes ("zeroed": powercut_nbd.py uses them),
and the size of the checked range ("blocks_total": verify reads blocks [0, blocks_total) and
untracked blocks there must be zeros). A later write run with the same state file continues the
counter, so rounds chain: write, kill or fail over, verify against another server, write more.

The last write run also keeps its order: the versions it issued per block with the number of
their completion ("issued": [version, n] in issue order; n = -1 if never acknowledged), what
each block held as far as the state knew before the run ("pre"), and, for every FLUSH it sent,
the version counter and the completions so far at that moment ("flushes": a write issued before
FLUSH k has a version below flushes[k][0]; one completed before it was sent, a number below
flushes[k][1]). verify --prefix checks that the volume is a FLUSH-consistent prefix of that run,
what an asynchronous replica promises after a failover (it may lack acknowledged writes): for
some k, every block holds its newest write completed before FLUSH k was sent (or a later one;
NBD's FLUSH covers completed writes) and nothing issued after FLUSH k+1 was sent (k = 0: nothing
of the run is required; k = the number of FLUSHes: everything may be there). It prints the
range of such k, or fails.
"""
import argparse
import bisect
import collections
import hashlib
import json
import os
import random
import select
import signal
import struct
import sys
import time
import zlib

import nbd

BLOCK = 4096
MAGIC = b"SPDBLKC1"
HEADER = struct.Struct("<8sQQQQ")  # magic, block, version, epoch, writer
CRC = struct.Struct("<I")
PAYLOAD = BLOCK - HEADER.size - CRC.size
ZEROS = bytes(BLOCK)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION, EXIT_STALLED = 0, 1, 2, 3, 4
KINDS = ("ok", "lost", "regressed", "corrupt")


# ---- block encoding ----------------------------------------------------------------------

def payload(block, version):
    return hashlib.shake_256(b"blockcheck block %d version %d" % (block, version)).digest(PAYLOAD)


def encode(block, version, epoch=0, writer=0):
    """The 4096 bytes of write `version` of `block` (version > 0)."""
    body = HEADER.pack(MAGIC, block, version, epoch, writer) + payload(block, version)
    return body + CRC.pack(zlib.crc32(body))


def decode(buf, block):
    """Reads one block expected at index `block`: (version, epoch, writer, problem). Zeros are
    version 0. problem is None or says why the bytes are not a block this tool wrote there (the
    other fields are then whatever the header said, or None)."""
    if buf == ZEROS:
        return 0, 0, 0, None
    magic, idx, version, epoch, writer = HEADER.unpack_from(buf)
    if magic != MAGIC:
        return None, None, None, "no block header (garbage): starts %s" % bytes(buf[:16]).hex()
    if CRC.unpack_from(buf, BLOCK - CRC.size)[0] != zlib.crc32(buf[:BLOCK - CRC.size]):
        return version, epoch, writer, ("bad checksum (torn or mixed), header says block %d "
                                        "version %d" % (idx, version))
    if idx != block:
        return version, epoch, writer, "misplaced: holds block %d version %d" % (idx, version)
    if version == 0 or buf[HEADER.size:BLOCK - CRC.size] != payload(block, version):
        return version, epoch, writer, "payload does not match version %d" % version
    return version, epoch, writer, None


# ---- state -------------------------------------------------------------------------------

def new_state(blocks_total):
    return {"format": 1, "blocks_total": blocks_total, "next": 1, "runs": [], "zeroed": set(),
            "blocks": {}}


def load_state(path):
    with open(path) as f:
        s = json.load(f)
    if s.get("format") != 1:
        raise ValueError("%s: not a blockcheck state file (format 1)" % path)
    s["blocks"] = {int(k): v for k, v in s["blocks"].items()}
    s["zeroed"] = set(s["zeroed"])
    return s


def save_state(path, s):
    out = dict(s, zeroed=sorted(s["zeroed"]), blocks={str(k): v for k, v in s["blocks"].items()})
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(out, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def begin_run(s, epoch, writer):
    """Starts a write run: its versions (from s["next"] on) carry this epoch and writer. Only
    the last run keeps its order (issued, pre, flushes: verify --prefix)."""
    for r in s["runs"]:
        for k in ("issued", "pre", "flushes"):
            r.pop(k, None)
    s["runs"].append({"first": s["next"], "epoch": epoch, "writer": writer, "issued": {},
                      "pre": {}, "flushes": []})


def run_of(s, version):
    """The run that issued `version`, or None if the state never issued it."""
    if not 0 < version < s["next"] or not s["runs"]:
        return None
    i = bisect.bisect_right([r["first"] for r in s["runs"]], version) - 1
    return s["runs"][i] if i >= 0 else None


def new_versions(s, n):
    first = s["next"]
    s["next"] += n
    return list(range(first, first + n))


def content(s, block, version):
    """The bytes `block` holds after write `version` (zeros for version 0 or a write-zeroes)."""
    if version == 0 or version in s["zeroed"]:
        return ZEROS
    run = run_of(s, version)
    return encode(block, version, run["epoch"], run["writer"])


# ---- what the server acknowledged --------------------------------------------------------

class Recorder:
    """Keeps the state's per-block records up to date as requests are sent and complete.

    issued() before a write is sent; completed() when the server acknowledged it; flush_sent()
    just before a FLUSH is sent (its result is the FLUSH's mark) and flush_done(mark) when the
    server acknowledged that FLUSH. A FLUSH makes durable the plain writes that completed before
    it was sent: those whose completed() came before its flush_sent(). counts: category ->
    blocks acknowledged durable (a block counts once per FUA write or FLUSH that made it so)."""

    def __init__(self, state):
        self.s = state
        self.completions = 0  # plain writes completed so far
        self.all_done = 0  # writes completed so far, FUA or not (the run's order: --prefix)
        self.pending = collections.deque()  # (completion number, block, version, category)
        self.counts = {}

    def issued(self, block, version, zero=False):
        rec = self.s["blocks"].setdefault(block, [0, [], None])
        run = self.s["runs"][-1] if self.s["runs"] else None
        if run is not None and "issued" in run:
            key = str(block)
            if key not in run["issued"]:
                run["pre"][key] = [rec[0]] + list(rec[1])  # what it could hold before the run
                run["issued"][key] = []
            run["issued"][key].append([version, -1])  # its completion's number, once done
        rec[1].append(version)
        if zero:
            self.s["zeroed"].add(version)

    def completed(self, block, version, durable_as=None, category=None):
        """durable_as: the category if the write was acknowledged durable (FUA), else None;
        category: the category it gets when a later FLUSH makes it durable."""
        run = self.s["runs"][-1] if self.s["runs"] else None
        if run is not None and "issued" in run:
            last = run["issued"].get(str(block))
            if last and last[-1][0] == version:  # never two writes of a block in flight
                last[-1][1] = self.all_done
        self.all_done += 1
        if durable_as:
            self._durable(block, version, durable_as)
        else:
            self.pending.append((self.completions, block, version, category))
            self.completions += 1

    def flush_sent(self):
        run = self.s["runs"][-1] if self.s["runs"] else None
        if run is not None and "flushes" in run:
            run["flushes"].append([self.s["next"], self.all_done])
        return self.completions

    def flush_done(self, mark):
        newest = {}  # block -> (version, category): the newest write of each block it covers
        while self.pending and self.pending[0][0] < mark:
            _, block, version, category = self.pending.popleft()
            newest[block] = (version, category)
        for block, (version, category) in newest.items():
            self._durable(block, version, category)

    def flushed(self):
        """For a synchronous client: a FLUSH sent after every completed write has completed."""
        self.flush_done(self.flush_sent())

    def _durable(self, block, version, category):
        rec = self.s["blocks"][block]
        if version <= rec[0]:
            return  # a newer version was acknowledged durable already (by FUA)
        rec[0], rec[1], rec[2] = version, [v for v in rec[1] if v > version], category
        self.counts[category] = self.counts.get(category, 0) + 1


# ---- verify ------------------------------------------------------------------------------

def check_block(s, block, buf):
    """(kind, detail): kind is one of KINDS; detail says what is wrong (None when ok)."""
    rec = s["blocks"].get(block)
    durable, after = (rec[0], rec[1]) if rec else (0, [])
    version, epoch, writer, problem = decode(buf, block)
    if problem:
        return "corrupt", problem
    if version == 0:
        if durable == 0 or any(v in s["zeroed"] for v in [durable] + after):
            return "ok", None
        return "lost", "zeros, but version %d was acknowledged durable" % durable
    run = run_of(s, version)
    if run is None or version in s["zeroed"]:
        return "corrupt", "version %d, which the state never issued as a data write" % version
    if (epoch, writer) != (run["epoch"], run["writer"]):
        return "corrupt", ("version %d says epoch %d writer %d, but was written with epoch %d "
                           "writer %d" % (version, epoch, writer, run["epoch"], run["writer"]))
    if version == durable or version in after:
        return "ok", None
    if version < durable:
        return "regressed", "version %d, older than version %d acknowledged durable" % (
            version, durable)
    return "corrupt", ("unknown version %d: never written to this block (durable %d, written "
                       "after it %s)" % (version, durable, after[:4]))


def check_volume(h, s, step=256):
    """Reads blocks [0, s["blocks_total"]) through handle h; yields (block, kind, detail)."""
    total = s["blocks_total"]
    for first in range(0, total, step):
        n = min(step, total - first)
        got = h.pread(n * BLOCK, first * BLOCK)
        for i in range(n):
            yield (first + i,) + check_block(s, first + i, got[i * BLOCK:(i + 1) * BLOCK])


# ---- connections -------------------------------------------------------------------------

class ConnectionLost(Exception):
    pass


class Usage(Exception):
    """Bad arguments, or a server or volume that cannot serve the check (exit 2)."""


def connect(uri, n=1, need_size=0):
    """n connections to uri that offer FUA and FLUSH (and multi-conn if n > 1)."""
    handles = []
    for _ in range(n):
        h = nbd.NBD()
        h.connect_uri(uri)
        if not h.can_fua() or not h.can_flush():
            raise Usage("server offers no FUA or no FLUSH")
        if n > 1 and not h.can_multi_conn():
            raise Usage("server offers no multi-conn: use --connections 1")
        if h.get_size() < need_size:
            raise Usage("volume has %d bytes, the state needs %d" % (h.get_size(), need_size))
        handles.append(h)
    return handles


def wait_events(handles, timeout_ms):
    """One round of the libnbd main loop over several handles (poll(2) on their sockets)."""
    p = select.poll()
    by_fd = {}
    for h in handles:
        if h.aio_is_dead() or h.aio_is_closed():
            raise ConnectionLost("connection closed")
        d = h.aio_get_direction()
        ev = (select.POLLIN if d & nbd.AIO_DIRECTION_READ else 0) | (
            select.POLLOUT if d & nbd.AIO_DIRECTION_WRITE else 0)
        if ev:
            fd = h.aio_get_fd()
            p.register(fd, ev)
            by_fd[fd] = h
    for fd, rev in p.poll(timeout_ms):
        h = by_fd[fd]
        if rev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            h.aio_notify_read()
        elif rev & select.POLLOUT:
            h.aio_notify_write()


# ---- write -------------------------------------------------------------------------------

def cmd_write(a):
    if os.path.exists(a.state):
        s = load_state(a.state)
        if a.blocks is not None and a.blocks != s["blocks_total"]:
            raise Usage("--blocks %d, but the state file tracks %d" % (
                a.blocks, s["blocks_total"]))
    else:
        if a.blocks is None:
            raise Usage("--blocks is needed to start a new state file")
        s = new_state(a.blocks)
    total = s["blocks_total"]
    try:
        handles = connect(a.uri, a.connections, total * BLOCK)
    except nbd.Error as e:
        print("write: cannot connect (state file unchanged): %s" % e)
        return EXIT_CONNECTION
    rng = random.Random(a.seed * 1000003 + len(s["runs"]))  # a chained run picks other blocks
    begin_run(s, a.epoch, a.seed)
    s["runs"][-1]["connections"] = a.connections
    rec = Recorder(s)

    # (connection, cookie) -> ("write", [(block, version)], fua, buffer) or ("flush", mark)
    inflight = {}
    busy = set()  # blocks with a write in flight: never two at once
    n = dict(writes=0, fua=0, flushes=0, flushes_done=0, failed=0, max_inflight=0)
    since_flush = 0
    deadline = time.monotonic() + a.seconds
    last_progress = time.monotonic()
    outcome, code = "completed", EXIT_OK

    def pick():
        for _ in range(8):
            first = rng.randrange(total)
            length = min(rng.choice([1, 1, 1, 2, 4, 8]), total - first, a.max_len)
            if not busy.intersection(range(first, first + length)):
                return first, length
        return None  # too many blocks busy: wait for completions

    def issue_flush():
        nonlocal since_flush
        ci = rng.randrange(len(handles))
        mark = rec.flush_sent()
        inflight[(ci, handles[ci].aio_flush())] = ("flush", mark)
        n["flushes"] += 1
        since_flush = 0

    def issue_write(first, length):
        nonlocal since_flush
        ci = rng.randrange(len(handles))
        fua = rng.random() < a.fua_ratio
        blocks = list(zip(range(first, first + length), new_versions(s, length)))
        for b, v in blocks:
            rec.issued(b, v)  # before it is sent: from now on it may be on the disk
        buf = nbd.Buffer.from_bytearray(bytearray(b"".join(
            encode(b, v, a.epoch, a.seed) for b, v in blocks)))
        busy.update(b for b, _ in blocks)
        cookie = handles[ci].aio_pwrite(buf, first * BLOCK, flags=nbd.CMD_FLAG_FUA if fua else 0)
        inflight[(ci, cookie)] = ("write", blocks, fua, buf)
        n["writes"] += 1
        n["fua"] += fua
        since_flush += 1

    def retire():
        nonlocal last_progress
        for key in list(inflight):
            ci, cookie = key
            try:
                if not handles[ci].aio_command_completed(cookie):
                    continue
                ok = True
            except nbd.Error as e:
                ok = False
                err = e
            op = inflight.pop(key)
            last_progress = time.monotonic()
            if op[0] == "write":
                busy.difference_update(b for b, _ in op[1])
            if not ok:
                n["failed"] += 1
                if handles[ci].aio_is_dead() or handles[ci].aio_is_closed():
                    raise ConnectionLost("connection lost: %s" % err)
                raise ConnectionLost("the server failed a %s: %s" % (op[0], err))
            if op[0] == "write":
                for b, v in op[1]:
                    rec.completed(b, v, "fua" if op[2] else None, "flush")
            else:
                rec.flush_done(op[1])
                n["flushes_done"] += 1

    try:
        while True:
            stopping = n["writes"] >= a.ops or time.monotonic() >= deadline
            while not stopping and len(inflight) < a.qd:
                if a.flush_every and since_flush >= a.flush_every:
                    issue_flush()
                    continue
                target = pick()
                if target is None:
                    break
                issue_write(*target)
                if a.kill_pid and n["writes"] == a.kill_after_ops:
                    try:
                        os.kill(a.kill_pid, signal.SIGKILL)
                    except OSError as e:
                        raise Usage("cannot kill pid %d: %s" % (a.kill_pid, e))
                    print("write: sent SIGKILL to pid %d after %d writes" % (
                        a.kill_pid, n["writes"]))
                stopping = n["writes"] >= a.ops
            n["max_inflight"] = max(n["max_inflight"], len(inflight))
            if not inflight:
                break
            wait_events(handles, 100)
            retire()
            if time.monotonic() - last_progress > a.stall:
                outcome, code = ("no reply for %.0f s with %d requests in flight" % (
                    a.stall, len(inflight))), EXIT_STALLED
                break
    except (nbd.Error, ConnectionLost) as e:
        outcome, code = "stopped: %s" % e, EXIT_CONNECTION
    finally:
        save_state(a.state, s)  # whatever happened: every write sent is in the state
    if code == EXIT_OK:
        for h in handles:
            h.shutdown()
    durable = sum(1 for r in s["blocks"].values() if r[0])
    print("write: %s; %d writes (%d FUA), %d FLUSHes (%d completed), at most %d requests in "
          "flight, %d unanswered; acknowledged durable in this run: %s; %d of %d blocks durable "
          "in the state, versions up to %d" % (
              outcome, n["writes"], n["fua"], n["flushes"], n["flushes_done"], n["max_inflight"],
              len(inflight) + n["failed"],
              ", ".join("%s %d" % kv for kv in sorted(rec.counts.items())) or "none",
              durable, total, s["next"] - 1))
    return code


# ---- verify ------------------------------------------------------------------------------

def prefix_range(s, read_block):
    """verify --prefix: (kmin, kmax, problems) over every block; read_block(b) -> its bytes. A
    FLUSH-consistent prefix exists iff there are no problems and kmin <= kmax."""
    run = s["runs"][-1] if s["runs"] else None
    if run is None or "issued" not in run:
        raise Usage("the state's last run kept no order (written by an older blockcheck)")
    if run.get("connections", 1) != 1:
        raise Usage("--prefix: the last run used %d connections: their order at the server is "
                    "not the order they were sent in" % run["connections"])
    issued = {int(b): v for b, v in run["issued"].items()}
    pre = {int(b): v for b, v in run["pre"].items()}
    # FLUSH k (1..K) was sent when the counter was sent_at[k] and done[k] writes had completed;
    # k = 0 is the run's start, K + 1 its end.
    K = len(run["flushes"])
    sent_at = [run["first"]] + [f[0] for f in run["flushes"]] + [s["next"]]
    done = [0] + [f[1] for f in run["flushes"]] + [float("inf")]
    kmin, kmax, problems = 0, K, []
    for b in range(s["blocks_total"]):
        buf = read_block(b)
        if b not in issued:  # not written in the run: as the state had it
            kind, detail = check_block(s, b, buf)
            if kind != "ok":
                problems.append((b, kind, detail))
            continue
        versions = [v for v, _ in issued[b]]
        version, epoch, writer, problem = decode(buf, b)
        if problem:
            problems.append((b, "corrupt", problem))
            continue
        if version >= run["first"] and version not in s["zeroed"]:
            if version not in versions:
                problems.append((b, "corrupt", "version %d was never written to it" % version))
                continue
            newer = issued[b][versions.index(version) + 1:]
            # issued before FLUSH k+1 was sent: sent_at[k + 1] > version
            lo = next(k for k in range(K + 1) if sent_at[k + 1] > version)
        else:  # what it held before the run (or zeros)
            before = pre[b]
            if not (version in before or (version == 0 and (before[0] == 0 or any(
                    v in s["zeroed"] for v in before)))):
                problems.append((b, "regressed", "version %d, not what it held before the run "
                                 "(%s)" % (version, before[:4])))
                continue
            newer, lo = issued[b], 0
        # no newer write of it completed before FLUSH k was sent: done[k] <= its number
        first_done = min((n for _, n in newer if n >= 0), default=None)
        hi = K if first_done is None else max(k for k in range(K + 1) if done[k] <= first_done)
        kmin, kmax = max(kmin, lo), min(kmax, hi)
    return kmin, kmax, problems


def cmd_verify(a):
    s = load_state(a.state)
    try:
        (h,) = connect(a.uri, 1, s["blocks_total"] * BLOCK)
        if a.prefix:
            kmin, kmax, problems = prefix_range(s, lambda b: h.pread(BLOCK, b * BLOCK))
            h.shutdown()
            K = len(s["runs"][-1]["flushes"])
            for b, kind, detail in problems[:a.show]:
                print("  %s: block %d: %s" % (kind.upper(), b, detail))
            if problems or kmin > kmax:
                print("verify --prefix: FAILED: %s" % (
                    "%d blocks broken" % len(problems) if problems else
                    "no FLUSH-consistent prefix (a block needs FLUSH >= %d, another <= %d of %d)"
                    % (kmin, kmax, K)))
                return EXIT_FAILED
            print("verify --prefix: passed: a FLUSH-consistent prefix, FLUSH %d..%d of %d" % (
                kmin, kmax, K))
            return EXIT_OK
        results = list(check_volume(h, s))
        h.shutdown()
    except nbd.Error as e:
        print("verify: connection lost: %s" % e)
        return EXIT_CONNECTION
    counts = dict.fromkeys(KINDS, 0)
    failures = []
    for block, kind, detail in results:
        counts[kind] += 1
        if kind != "ok":
            failures.append((block, kind, detail))
    durable = sum(1 for r in s["blocks"].values() if r[0])
    print("verify: %d blocks checked (%d tracked, %d acknowledged durable): ok %d, lost %d, "
          "regressed %d, corrupt %d" % (len(results), len(s["blocks"]), durable, counts["ok"],
                                        counts["lost"], counts["regressed"], counts["corrupt"]))
    shown = dict.fromkeys(KINDS, 0)
    for block, kind, detail in failures:  # the first few of each kind
        shown[kind] += 1
        if shown[kind] <= a.show:
            print("  %s: block %d: %s" % (kind.upper(), block, detail))
    if len(failures) > sum(min(n, a.show) for n in shown.values()):
        print("  ... and %d more" % (len(failures) - sum(min(n, a.show) for n in shown.values())))
    if failures:
        print("verify: FAILED")
        return EXIT_FAILED
    if durable < a.min_durable:
        print("verify: FAILED: only %d blocks acknowledged durable (--min-durable %d): the run "
              "proves nothing" % (durable, a.min_durable))
        return EXIT_FAILED
    print("verify: passed")
    return EXIT_OK


# ---- damage (negative controls) ----------------------------------------------------------

def cmd_damage(a):
    """Breaks one tracked block on purpose, so that a test can see verify fail: regress (the
    block's durable version in an older state file, --older), zero, garbage (random bytes),
    torn (the first half of the durable version, the rest of another), misplace (another
    block's durable content)."""
    s = load_state(a.state)
    older = load_state(a.older) if a.older else None
    durable = {b: r[0] for b, r in sorted(s["blocks"].items())
               if r[0] and r[0] not in s["zeroed"]}

    def fits(b):
        if a.kind == "regress":
            old = older["blocks"].get(b, [0])[0] if older else 0
            return 0 < old < durable[b] and old not in older["zeroed"]
        return a.kind != "misplace" or b + 1 in durable

    if a.kind == "regress" and not older:
        raise Usage("damage --kind regress needs --older STATE (an earlier copy)")
    candidates = [b for b in durable if fits(b)] if a.block is None else [a.block]
    if not candidates or candidates[0] not in durable or not fits(candidates[0]):
        raise Usage("damage: no block fits --kind %s" % a.kind)
    b = candidates[0]
    if a.kind == "regress":
        buf, what = content(older, b, older["blocks"][b][0]), "its older version %d" % (
            older["blocks"][b][0])
    elif a.kind == "zero":
        buf, what = ZEROS, "zeros"
    elif a.kind == "garbage":
        buf, what = random.Random(b).randbytes(BLOCK), "random bytes"
    elif a.kind == "torn":
        other = encode(b, durable[b] + 1)
        buf = content(s, b, durable[b])[:BLOCK // 2] + other[BLOCK // 2:]
        what = "half of version %d, half of another" % durable[b]
    else:
        buf, what = content(s, b + 1, durable[b + 1]), "block %d's content" % (b + 1)
    (h,) = connect(a.uri, 1)
    h.pwrite(buf, b * BLOCK, nbd.CMD_FLAG_FUA)
    h.shutdown()
    print("damage: block %d (durable version %d) now holds %s" % (b, durable[b], what))
    return EXIT_OK


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write self-describing blocks, record what was acknowledged")
    v = sub.add_parser("verify", help="check the volume against the state file")
    d = sub.add_parser("damage", help="break one block on purpose (negative controls)")
    for q in (w, v, d):
        q.add_argument("--uri", required=True)
        q.add_argument("--state", required=True)
    w.add_argument("--seed", type=int, required=True, help="random seed; also the writer id")
    w.add_argument("--blocks", type=int, help="blocks [0, N) of the volume (new state file)")
    w.add_argument("--qd", type=int, default=32, help="requests in flight at most")
    w.add_argument("--connections", type=int, default=1)
    w.add_argument("--seconds", type=float, default=60, help="time limit (default 60)")
    w.add_argument("--ops", type=int, default=1000000, help="writes at most (default 1000000)")
    w.add_argument("--flush-every", type=int, default=16, help="a FLUSH after every F writes "
                   "sent (0: never)")
    w.add_argument("--fua-ratio", type=float, default=0.25, help="share of writes sent with FUA")
    w.add_argument("--max-len", type=int, default=8, help="blocks per write at most (1 to 8)")
    w.add_argument("--epoch", type=int, default=0, help="the writer's primary epoch, in headers")
    w.add_argument("--kill-pid", type=int, help="SIGKILL this pid after --kill-after-ops writes")
    w.add_argument("--kill-after-ops", type=int, default=0)
    w.add_argument("--stall", type=float, default=30,
                   help="give up when no reply came for this many seconds (exit 4)")
    v.add_argument("--min-durable", type=int, default=1, help="fail unless at least this many "
                   "blocks were acknowledged durable (default 1; 0: no such check)")
    v.add_argument("--show", type=int, default=5, help="failures to list, of each kind")
    v.add_argument("--prefix", action="store_true",
                   help="check a FLUSH-consistent prefix of the last write run instead (what an "
                   "asynchronous replica promises; the run must have used one connection)")
    d.add_argument("--kind", required=True,
                   choices=["regress", "zero", "garbage", "torn", "misplace"])
    d.add_argument("--older", help="an earlier copy of the state file (--kind regress)")
    d.add_argument("--block", type=int, help="the block to break (default: the first that fits)")
    a = p.parse_args(argv)
    if a.cmd == "write":
        if a.kill_pid and a.kill_after_ops <= 0:
            p.error("--kill-pid needs --kill-after-ops K > 0")
        if a.qd < 1 or a.connections < 1 or not 0 <= a.fua_ratio <= 1 or a.max_len < 1:
            p.error("bad --qd, --connections, --fua-ratio or --max-len")
    try:
        return {"write": cmd_write, "verify": cmd_verify, "damage": cmd_damage}[a.cmd](a)
    except Usage as e:
        print("%s: %s" % (a.cmd, e), file=sys.stderr)
        return EXIT_USAGE
    except nbd.Error as e:  # write and verify catch their own; this is damage's
        print("%s: connection lost: %s" % (a.cmd, e), file=sys.stderr)
        return EXIT_CONNECTION
    except (OSError, ValueError, KeyError) as e:
        print("%s: bad state file or arguments: %r" % (a.cmd, e), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
