"""Shared helpers for the Python integration tests (imported, not run: run.sh runs test_*).

Each test makes its own temp directory (temp_dir) and starts its own spd2 processes; at exit
every process started here is stopped by its pid (SIGTERM, so that it removes what it made, such
as its health cache in /dev/shm; SIGKILL after 10 s), never by name, and the temp directories
are removed (stop_all)."""
import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time

import nbd

SPD2 = os.environ["SPD2"]
STARTED = []
TEMPS = []


def temp_dir(prefix):
    """A new directory under /tmp, removed at exit after the processes are stopped."""
    d = tempfile.mkdtemp(prefix=prefix)
    TEMPS.append(d)
    return d


def start_spd2(data_dir, args, uri, stderr=subprocess.DEVNULL):
    """Starts spd2 on data_dir with the extra args and returns the process once a client can
    connect to uri (after a kill -9 the old socket file is still there, so its existence proves
    nothing). Unix socket only: no TCP port to collide on."""
    p = subprocess.Popen([SPD2, "--data-dir", data_dir, "--nbd-listen", "off",
                          "--metrics-listen", "off", "--quiet"] + args,
                         stdout=subprocess.DEVNULL, stderr=stderr)
    STARTED.append(p)
    for _ in range(200):
        try:
            h = nbd.NBD()
            h.connect_uri(uri)
            h.shutdown()
            return p
        except nbd.Error:
            if p.poll() is not None:
                raise SystemExit("FAIL: spd2 exited at start: %r" % p.returncode)
            time.sleep(0.05)
    raise SystemExit("FAIL: spd2 did not start")


def stop_all():
    for p in STARTED:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in STARTED:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if os.environ.get("KEEP_T"):
        return
    for d in TEMPS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(stop_all)


def check(name, cond):
    if not cond:
        raise SystemExit("FAIL: " + name)
    print("ok -", name)


def self_signed_cert(directory, name="cert", san=True):
    """A self-signed certificate for localhost (and 127.0.0.1 with san): (cert, key) paths."""
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
           "-out", cert, "-days", "1", "-subj", "/CN=localhost"]
    if san:
        cmd += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(cmd, check=True, capture_output=True)
    return cert, key


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
