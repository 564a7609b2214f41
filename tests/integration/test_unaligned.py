"""A client that does not negotiate block sizes (like the kernel's nbd-client with 512-byte
blocks) may send any size; spd2 serves it with read-modify-write below the pool's 4 KiB
O_DIRECT alignment. Random sub-block reads and writes, sequential and concurrent (many writes
into the same 4 KiB blocks at once), checked against a model; then after a restart."""
import os
import random
import signal
import subprocess
import sys
import tempfile

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spdlib  # noqa: E402
from spdlib import check  # noqa: E402

T = tempfile.mkdtemp(prefix="spd-unaligned.")
SOCK = os.path.join(T, "data", "nbd.sock")
URI = "nbd+unix:///vol0?socket=" + SOCK
SIZE = 8 << 20


def start():
    return spdlib.start_spd2(os.path.join(T, "data"),
                             ["--pool-size", "256M", "--volume", "vol0:8M", "--cores", "2"], URI)


def client():
    h = nbd.NBD()
    h.set_request_block_size(False)  # do not promise to honour the minimum block size
    h.set_strict_mode(0)             # and let libnbd send what it is told
    h.connect_uri(URI)
    return h


p = start()
try:
    rng = random.Random(5)
    model = bytearray(SIZE)
    h = client()
    check("server advertises a 4 KiB minimum (O_DIRECT pool)",
          h.get_block_size(nbd.SIZE_MINIMUM) in (0, 512, 4096))
    for i in range(400):
        n = rng.randint(1, 20000)
        off = rng.randrange(0, SIZE - n)
        if rng.random() < 0.5:
            data = os.urandom(n)
            h.pwrite(data, off)
            model[off:off + n] = data
        else:
            got = h.pread(n, off)
            if got != bytes(model[off:off + n]):
                raise SystemExit("FAIL: read %d+%d differs from the model" % (off, n))
    check("400 random unaligned reads and writes match the model", True)
    # Concurrent: 64 writes of 512 bytes, eight into each of eight 4 KiB blocks, all in flight.
    g = client()
    cookies = []
    for blk in range(8):
        base = (1 << 20) + blk * 3 * 4096
        for sec in range(8):
            data = bytes([blk * 8 + sec + 1]) * 512
            model[base + 512 * sec:base + 512 * (sec + 1)] = data
            cookies.append((h if sec % 2 else g).aio_pwrite(data, base + 512 * sec))
    for c in (h, g):
        while c.aio_in_flight() > 0:
            c.poll(-1)
    check("64 concurrent sector writes on two connections all landed",
          h.pread(SIZE, 0) == bytes(model))
    h.flush()
    h.shutdown()
    g.shutdown()
    p.send_signal(signal.SIGTERM)
    check("clean exit", p.wait(timeout=30) == 0)
    p = start()
    h = client()
    check("everything is there after a restart", h.pread(SIZE, 0) == bytes(model))
    h.shutdown()
    p.send_signal(signal.SIGTERM)
    check("clean exit again", p.wait(timeout=30) == 0)
finally:
    if p.poll() is None:
        p.kill()
        p.wait()
    subprocess.run(["rm", "-rf", T])
