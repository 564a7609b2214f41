"""16+ concurrent connections, each writing and verifying its own region; multi-conn FLUSH
durability: a write on A into space never allocated, FLUSH on B, kill -9 (no final flush),
restart, read on a new connection C: the data is there. Chunk allocations are committed at
FLUSH and lost at a crash otherwise, so this fails if B's FLUSH covered only B's own writes.
Three reactors (--cores 3, more than CI's cores on purpose), so most connections live on a
reactor other than the pool's and every request takes the cross-reactor hop."""
import os
import signal
import subprocess
import sys
import tempfile
import threading

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spdlib  # noqa: E402

T = tempfile.mkdtemp(prefix="spd-conc.")
SOCK = os.path.join(T, "data", "nbd.sock")
URI = "nbd+unix:///vol0?socket=" + SOCK


def start():
    return spdlib.start_spd2(os.path.join(T, "data"), ["--pool-size", "2G", "--volume",
                                                        "vol0:512M", "--cores", "3"], URI)


p = start()
try:
    errors = []

    def worker(i):
        try:
            h = nbd.NBD()
            h.connect_uri(URI)
            base = i * (16 << 20)
            blob = os.urandom(1 << 20)
            for k in range(8):
                h.aio_pwrite(blob, base + k * (1 << 20))
            while h.aio_in_flight() > 0:
                h.poll(-1)
            h.flush()
            for k in range(8):
                if h.pread(1 << 20, base + k * (1 << 20)) != blob:
                    errors.append("conn %d chunk %d differs" % (i, k))
            h.shutdown()
        except Exception as e:  # reported below
            errors.append("conn %d: %r" % (i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    print("ok - 20 concurrent connections wrote and verified their regions")

    # The 20 connections wrote 0..320 MiB: 400 MiB onwards was never allocated.
    a, b = nbd.NBD(), nbd.NBD()
    for h in (a, b):
        h.connect_uri(URI)
        assert h.can_multi_conn()
    data = os.urandom(1 << 20)
    assert a.pread(1 << 20, 400 << 20) == bytes(1 << 20)
    a.pwrite(data, 400 << 20)  # acknowledged: libnbd waits for the reply
    b.flush()
    p.kill()  # SIGKILL: no final flush, nothing but B's FLUSH made A's write durable
    assert p.wait(timeout=30) == -signal.SIGKILL, p.returncode
    del a, b, h  # close the dead connections
    p = start()
    c = nbd.NBD()
    c.connect_uri(URI)
    got = c.pread(1 << 20, 400 << 20)
    assert got == data, "A's write lost after FLUSH on B and kill -9: %d of %d bytes differ" % (
        sum(x != y for x, y in zip(got, data)), len(data))
    print("ok - write on A, flush on B, kill -9, restart, read on C")
    c.shutdown()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
finally:
    if p.poll() is None:
        p.kill()
    subprocess.run(["rm", "-rf", T])
