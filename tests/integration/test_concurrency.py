"""16+ concurrent connections, each writing and verifying its own region; multi-conn FLUSH
consistency: a write on A, FLUSH on B, read on C sees it. Three reactors (--cores 3, more than
CI's cores on purpose), so most connections live on a reactor other than the pool's and every
request takes the cross-reactor hop."""
import os
import signal
import subprocess
import tempfile
import threading
import time

import nbd

SPD2 = os.environ["SPD2"]
T = tempfile.mkdtemp(prefix="spd-conc.")
SOCK = os.path.join(T, "data", "nbd.sock")
URI = "nbd+unix:///vol0?socket=" + SOCK

p = subprocess.Popen([SPD2, "--data-dir", os.path.join(T, "data"), "--pool-size", "2G",
                      "--volume", "vol0:512M", "--cores", "3", "--nbd-listen", "off",
                      "--metrics-listen", "off",
                      "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        if os.path.exists(SOCK):
            break
        time.sleep(0.05)
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

    a, b, c = nbd.NBD(), nbd.NBD(), nbd.NBD()
    for h in (a, b, c):
        h.connect_uri(URI)
        assert h.can_multi_conn()
    data = os.urandom(65536)
    a.pwrite(data, 400 << 20)
    b.flush()
    assert c.pread(65536, 400 << 20) == data
    print("ok - write on A, flush on B, read on C")
    for h in (a, b, c):
        h.shutdown()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
finally:
    if p.poll() is None:
        p.kill()
    subprocess.run(["rm", "-rf", T])
