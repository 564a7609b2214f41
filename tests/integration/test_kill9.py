"""Process crash: kill -9 spd2 while a libnbd client writes and flushes (FLUSH on a second
connection), restart it, and check every write acknowledged before a completed FLUSH, or with
FUA, is there; blocks written after the last FLUSH may hold either their old or new value."""
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spdlib  # noqa: E402

T = tempfile.mkdtemp(prefix="spd-kill9.")
SOCK = os.path.join(T, "data", "nbd.sock")
URI = "nbd+unix:///vol0?socket=" + SOCK
BLOCK = 4096
BLOCKS = 16384  # 64 MiB volume


def start():
    return spdlib.start_spd2(os.path.join(T, "data"), ["--pool-size", "1G", "--chunk-size", "64K",
                                                        "--volume", "vol0:64M"], URI)


def block(seq, idx):
    return (b"%016d:%016d:" % (seq, idx)).ljust(BLOCK, b"x")


rng = random.Random(int(os.environ.get("SPD_KILL9_SEED", "7")))
checked = 0
durable = {}  # block index -> set of acceptable contents; kept across restarts
try:
    for attempt in range(3):
        p = start()
        pending = {}   # written since the last completed FLUSH
        w, f = nbd.NBD(), nbd.NBD()
        w.connect_uri(URI)
        f.connect_uri(URI)
        killer = threading.Timer(0.5 + rng.random(), lambda: os.kill(p.pid, signal.SIGKILL))
        killer.start()
        seq = 0
        try:
            while True:
                for _ in range(32):
                    seq += 1
                    idx = rng.randrange(BLOCKS)
                    fua = rng.random() < 0.1
                    data = block(seq, idx)
                    pending.setdefault(idx, set()).add(data)
                    w.pwrite(data, idx * BLOCK, nbd.CMD_FLAG_FUA if fua else 0)
                    if fua:
                        durable[idx] = {data}
                        pending[idx] = set()
                f.flush()
                for idx, vals in pending.items():
                    if vals:
                        # The newest write of each block is now durable.
                        durable[idx] = {max(vals)}
                pending = {}
        except nbd.Error:
            pass  # the server died under us
        killer.join()
        p.wait()
        assert p.returncode == -signal.SIGKILL, p.returncode
        p = start()
        h = nbd.NBD()
        h.connect_uri(URI)
        for idx in list(durable) + [i for i in pending if i not in durable]:
            vals = durable.get(idx, {b"\0" * BLOCK})
            ok = vals | pending.get(idx, set())
            got = bytes(h.pread(BLOCK, idx * BLOCK))
            assert got in ok, "block %d lost: got %r" % (idx, got[:40])
            checked += 1
            durable[idx] = {got}  # what survived is the durable value from here on
        h.shutdown()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        print("ok - attempt %d: %d durable blocks verified after kill -9" % (attempt, len(durable)))
    assert checked > 0
finally:
    spdlib.stop_all()
    subprocess.run(["rm", "-rf", T])
