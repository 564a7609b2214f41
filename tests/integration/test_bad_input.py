"""Bad input over a raw socket and through libnbd: every case gets the error the NBD
specification asks for or a clean disconnect, and the server keeps serving everyone else."""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import nbd

SPD2 = os.environ["SPD2"]
T = tempfile.mkdtemp(prefix="spd-bad.")
SOCK = os.path.join(T, "data", "nbd.sock")
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
EINVAL, EPERM, ENOSPC = 22, 1, 28


def start():
    p = subprocess.Popen([SPD2, "--data-dir", os.path.join(T, "data"), "--pool-size", "1G",
                          "--volume", "vol0:64M", "--volume", "other:16M",
                          "--volume", "ro:16M:ro", "--nbd-listen", "off",
                          "--metrics-listen", "off", "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(T, "log"), "w"))
    for _ in range(200):
        if os.path.exists(SOCK):
            try:
                socket.socket(socket.AF_UNIX).connect(SOCK)
                return p
            except OSError:
                pass
        time.sleep(0.05)
    raise SystemExit("spd2 did not start")


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


def greet():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(SOCK)
    magic, opt, flags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT and flags & 1, (magic, opt, flags)
    return s


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def opt_reply(s):
    magic, opt, typ, ln = struct.unpack(">QIII", recv_exact(s, 20))
    assert magic == REPLY_MAGIC, hex(magic)
    return opt, typ, recv_exact(s, ln)


def closed(s):
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return True


def go(s, name=b"vol0", want_block_size=False):
    option(s, 8)  # STRUCTURED_REPLY
    assert opt_reply(s)[1] == 1
    info = struct.pack(">HH", 1, 3) if want_block_size else struct.pack(">H", 0)
    option(s, 7, struct.pack(">I", len(name)) + name + info)
    while True:
        _, typ, _ = opt_reply(s)
        if typ == 1:
            return
        assert typ == 3, typ


def request(s, typ, offset, length, flags=0, payload=b"", cookie=7):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, offset, length) + payload)


def reply_error(s):
    """Error of the next reply (simple or structured)."""
    magic = struct.unpack(">I", recv_exact(s, 4))[0]
    if magic == 0x67446698:
        err, _ = struct.unpack(">IQ", recv_exact(s, 12))
        return err
    err = 0
    while True:
        assert magic == 0x668E33EF, hex(magic)
        flags, typ, cookie, ln = struct.unpack(">HHQI", recv_exact(s, 16))
        body = recv_exact(s, ln)
        if typ & 0x8000:
            err = struct.unpack(">I", body[:4])[0]
        if flags & 1:  # NBD_REPLY_FLAG_DONE
            return err
        magic = struct.unpack(">I", recv_exact(s, 4))[0]


def check(name, cond):
    if not cond:
        raise SystemExit("FAIL: " + name)
    print("ok -", name)


p = start()
try:
    # Bad client flags: close.
    s = greet(); s.sendall(struct.pack(">I", 0xFFFF0000)); check("unknown client flags close", closed(s))
    # Option without IHAVEOPT: close.
    s = greet(); s.sendall(struct.pack(">I", 3)); s.sendall(struct.pack(">QII", 1, 7, 0))
    check("bad option magic closes", closed(s))
    # Unknown option -> ERR_UNSUP and negotiation continues; unknown export -> ERR_UNKNOWN.
    s = greet(); s.sendall(struct.pack(">I", 3))
    option(s, 99, b"xyz"); check("unknown option ERR_UNSUP", opt_reply(s)[1] == (1 << 31) + 1)
    option(s, 7, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0))
    check("unknown export ERR_UNKNOWN", opt_reply(s)[1] == (1 << 31) + 6)
    option(s, 7, struct.pack(">I", 40) + b"vol0" + struct.pack(">H", 0))
    check("bad GO lengths ERR_INVALID", opt_reply(s)[1] == (1 << 31) + 3)
    # Absurd option length: ERR_TOO_BIG after the server skipped it, or a close.
    option(s, 6, b"\0" * 70000)
    check("oversized option refused", opt_reply(s)[1] == (1 << 31) + 9)
    go(s)
    request(s, 0, 0, 4096); check("read after bad options works", reply_error(s) == 0)
    request(s, 42, 0, 4096); check("unknown command EINVAL", reply_error(s) == EINVAL)
    request(s, 0, 0, 4096, flags=0x80); check("unknown flag EINVAL", reply_error(s) == EINVAL)
    request(s, 0, 64 << 20, 4096); check("read beyond end EINVAL", reply_error(s) == EINVAL)
    request(s, 1, (64 << 20) - 4096, 8192, payload=b"x" * 8192)
    check("write beyond end ENOSPC", reply_error(s) == ENOSPC)
    # Larger than the advertised maximum: EINVAL, or EOVERFLOW (structured replies: "retry
    # smaller"), both as the specification allows.
    request(s, 0, 0, 64 << 20); check("oversized read refused", reply_error(s) in (EINVAL, 75))
    request(s, 1, 0, 33 << 20, payload=b"\0" * (33 << 20))
    check("oversized write EINVAL (payload skipped)", reply_error(s) == EINVAL)
    # This client did not ask for block sizes: any size is served (read-modify-write below).
    request(s, 0, 100, 4096); check("misaligned read served", reply_error(s) == 0)
    request(s, 7, 0, 4096); check("block status without meta context EINVAL", reply_error(s) == EINVAL)
    request(s, 1, 0, 4096, payload=b"y" * 4096); check("write still fine", reply_error(s) == 0)
    # Bad request magic: disconnect.
    s.sendall(b"\xde\xad\xbe\xef" + b"\0" * 24); check("bad request magic closes", closed(s))
    # A client that asked for block sizes promised to honour them: misaligned is EINVAL.
    s = greet(); s.sendall(struct.pack(">I", 3)); go(s, want_block_size=True)
    request(s, 0, 100, 4096); check("misaligned read EINVAL after asking", reply_error(s) == EINVAL)
    request(s, 0, 0, 4096); check("aligned read fine after asking", reply_error(s) == 0)
    s.close()
    # Read-only export refuses writes with EPERM.
    s = greet(); s.sendall(struct.pack(">I", 3)); go(s, b"ro")
    request(s, 1, 0, 4096, payload=b"z" * 4096); check("write to read-only EPERM", reply_error(s) == EPERM)
    request(s, 4, 0, 4096); check("trim on read-only EPERM", reply_error(s) == EPERM)
    s.close()
    # Disconnect halfway through a write payload, on many connections at once.
    for _ in range(8):
        s = greet(); s.sendall(struct.pack(">I", 3)); go(s)
        request(s, 1, 0, 1 << 20, payload=b"q" * 1000)
        s.close()
    # Truncated handshakes.
    for n in range(1, 18):
        s = greet(); s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, 7, 100)[:n]); s.close()
    # The server still serves, and the other volume is untouched.
    h = nbd.NBD(); h.connect_uri("nbd+unix:///other?socket=" + SOCK)
    h.pwrite(b"O" * 4096, 0); h.flush()
    g = nbd.NBD(); g.connect_uri("nbd+unix:///vol0?socket=" + SOCK)
    check("vol0 data intact", g.pread(4096, 0) == b"y" * 4096)
    check("other volume intact", h.pread(4096, 0) == b"O" * 4096)
    # libnbd with strict mode off: ENOSPC/EINVAL surface as errors with the right errno.
    g.set_strict_mode(0)
    try:
        g.pread(4096, 64 << 20)
        check("libnbd read beyond end fails", False)
    except nbd.Error as e:
        check("libnbd read beyond end EINVAL", e.errnum == EINVAL)
    h.shutdown(); g.shutdown()
    p.send_signal(signal.SIGTERM)
    check("clean exit after abuse", p.wait(timeout=30) == 0)
finally:
    if p.poll() is None:
        p.kill()
    subprocess.run(["rm", "-rf", T])
