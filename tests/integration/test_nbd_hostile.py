# spd-it: alone (it times clients among hundreds of hostile sockets)
"""Hostile and huge clients (docs/nbd.md, "Server limits"):
- 300 sockets that connect and never negotiate: a real client connects and does I/O at once,
  the daemon's RSS stays under a bound, and every silent socket is closed (displaced by newer
  ones beyond --nbd-handshakes-max, or after --nbd-handshake-timeout-ms);
- the advertised maximum request is the enforced one: writes of 300 MiB and of exactly the
  advertised 512 MiB (raw protocol: libnbd 1.14 stops at 64 MiB itself) and, with libnbd, of
  exactly an advertised 64 MiB, each read back."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import nbd

SPD2 = os.environ["SPD2"]
T = tempfile.mkdtemp(prefix="spd-hostile.")
SOCK = os.path.join(T, "data", "nbd.sock")
PORT = 20000 + (os.getpid() % 11000)
MPORT = PORT + 1
SILENT = 300
HANDSHAKE_TIMEOUT_MS = 2000
HANDSHAKES_MAX = 64
RSS_BOUND_MIB = 64  # growth allowed over the idle daemon (was 1.4 MB per silent socket)
# HOSTILE_LEGACY_FLAGS=1 runs without the limit flags (to show what a build without them does).
LIMIT_FLAGS = [] if os.environ.get("HOSTILE_LEGACY_FLAGS") else [
    "--nbd-handshake-timeout-ms", str(HANDSHAKE_TIMEOUT_MS),
    "--nbd-handshakes-max", str(HANDSHAKES_MAX)]


def check(name, cond, detail=""):
    if not cond:
        raise SystemExit("FAIL: %s %s" % (name, detail))
    print("ok -", name, detail)


def start(*extra):
    log = open(os.path.join(T, "log"), "a")
    p = subprocess.Popen([SPD2, "--data-dir", os.path.join(T, "data"), "--pool-size", "2G",
                          "--volume", "vol0:1G", "--nbd-listen", "127.0.0.1:%d" % PORT,
                          "--metrics-listen", "127.0.0.1:%d" % MPORT, "--cores", "2", "--quiet",
                          *extra], stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        if p.poll() is not None:
            raise SystemExit("spd2 exited at start: " + open(os.path.join(T, "log")).read())
        try:
            h = nbd.NBD()
            h.connect_uri("nbd+unix:///vol0?socket=" + SOCK)
            h.shutdown()
            return p
        except nbd.Error:
            time.sleep(0.05)
    raise SystemExit("spd2 did not start")


def stop(p):
    p.terminate()
    rc = p.wait(timeout=30)
    check("spd2 exits 0 on SIGTERM", rc == 0, "(rc %d)" % rc)


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric(name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % MPORT, timeout=5).read()
    for line in text.decode().splitlines():
        if line.split(" ")[0] == name:
            return int(line.split(" ")[1])
    return 0


def closed_within(s, secs):
    s.settimeout(secs)
    try:
        while True:
            if s.recv(4096) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def recv_exact(s, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("closed after %d of %d bytes" % (got, n))
        got += k
    return bytes(buf)


def raw_export(name=b"vol0"):
    """Negotiates with NBD_OPT_EXPORT_NAME (simple replies); returns the socket."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(120)
    s.connect(SOCK)
    magic, opt, flags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == 0x4E42444D41474943 and opt == 0x49484156454F5054
    s.sendall(struct.pack(">I", 3) + struct.pack(">QII", opt, 1, len(name)) + name)
    recv_exact(s, 10)  # size, transmission flags (no zeroes)
    return s


def raw_request(s, typ, offset, length, payload=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, typ, 7, offset, length))
    if payload:
        s.sendall(payload)
    magic, err, _ = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == 0x67446698, hex(magic)
    data = recv_exact(s, length) if typ == 0 and err == 0 else b""
    return err, data


def pattern(n, seed):
    block = bytes((i * 131 + seed) & 0xFF for i in range(4096))
    return block * (n // 4096)


p = start("--nbd-request-max", "512M", *LIMIT_FLAGS)
try:
    time.sleep(0.3)
    base = rss_kib(p.pid)
    silent = []
    for i in range(SILENT):
        s = socket.socket(socket.AF_INET)
        s.connect(("127.0.0.1", PORT))
        silent.append(s)
    t0 = time.monotonic()
    h = nbd.NBD()
    h.connect_uri("nbd://127.0.0.1:%d/vol0" % PORT)
    data = pattern(1 << 20, 1)
    h.pwrite(data, 0)
    check("a real client does I/O right after %d silent sockets" % SILENT,
          h.pread(len(data), 0) == data, "(%.3f s)" % (time.monotonic() - t0))
    time.sleep(0.2)
    grown = (rss_kib(p.pid) - base) // 1024
    check("RSS grows by less than %d MiB" % RSS_BOUND_MIB, grown < RSS_BOUND_MIB,
          "(grew %d MiB from %d MiB)" % (grown, base // 1024))
    still = [s for s in silent if not closed_within(s, (HANDSHAKE_TIMEOUT_MS + 3000) / 1000)]
    check("every silent socket is closed within the handshake timeout", not still,
          "(%d still open)" % len(still))
    ev, to = metric("spd_nbd_handshake_evictions_total"), metric("spd_nbd_handshake_timeouts_total")
    check("displaced + timed out = silent sockets", ev + to == SILENT,
          "(%d displaced, %d timed out)" % (ev, to))
    check("the real client is still served", h.pread(4096, 0) == data[:4096])
    h.shutdown()
    for s in silent:
        s.close()

    # The advertised maximum is enforced, not less: 300 MiB and exactly 512 MiB.
    hh = nbd.NBD()
    hh.connect_uri("nbd+unix:///vol0?socket=" + SOCK)
    adv = hh.get_block_size(nbd.SIZE_MAXIMUM)
    hh.shutdown()
    check("512 MiB advertised", adv == 512 << 20, "(%d)" % adv)
    s = raw_export()
    for n, off in ((300 << 20, 0), (adv, 512 << 20)):
        data = pattern(n, n >> 20)
        err, _ = raw_request(s, 1, off, n, data)
        check("write of %d MiB succeeds" % (n >> 20), err == 0, "(error %d)" % err)
        err, back = raw_request(s, 0, off, n)
        check("read of %d MiB returns it" % (n >> 20), err == 0 and back == data)
        del data, back
    s.close()
    peak = metric("spd_nbd_memory_bytes")
    print("spd_nbd_memory_bytes after the huge requests: %d" % peak)
    stop(p)
    p = None

    # libnbd (which stops at 64 MiB itself): exactly the advertised 64 MiB.
    p = start("--nbd-request-max", "64M")
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///vol0?socket=" + SOCK)
    check("64 MiB advertised", h.get_block_size(nbd.SIZE_MAXIMUM) == 64 << 20)
    data = pattern(64 << 20, 5)
    h.pwrite(data, 3 << 20)
    check("libnbd writes and reads back exactly the advertised maximum",
          h.pread(64 << 20, 3 << 20) == data)
    h.shutdown()
    stop(p)
    p = None
finally:
    if p is not None:
        p.kill()
        p.wait()
    subprocess.run(["rm", "-rf", T])
