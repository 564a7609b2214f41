# Logs (docs/observability.md): with --log-format json every line spd2 writes is a JSON
# object with time, level, component and msg; with --slow-request-ms below the sim backend's
# latency each request logs a slow-request line with its volume, op, offset, length,
# correlation id and stage breakdown; floods (slow requests from fio, failed TLS handshakes from
# a client sending garbage) stay within each call site's rate limit (100 at once, 20/s), and the
# lines dropped are counted and reported.
source "$(dirname "$0")/lib.sh"
command -v psktool >/dev/null || fail "psktool missing (gnutls-bin; scripts/setup.sh)"

# Usage: an unknown format is a usage error.
rc=0
"$SPD2" --data-dir "$T/bad" --log-format yaml >"$T/usage" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || { cat "$T/usage"; fail "--log-format yaml exited $rc, wanted 2"; }
# (Into a file: grep -q quitting early would kill spd2 with SIGPIPE, a failure under pipefail.)
"$SPD2" --help >"$T/help"
grep -q -- "--slow-request-ms" "$T/help" || fail "--help lacks --slow-request-ms"

mkdir -m 700 "$T/keys"
psktool -u alice -p "$T/keys/keys.psk" >/dev/null
mport=$((SPD_PORT + 1))
# 3 ms a request against a 1 ms threshold: every request is slow, and its time is the device's.
# TLS on (not required): plaintext clients are served, a failed TLS handshake logs a line.
SPD_METRICS=127.0.0.1:$mport start_spd2 --volume vol0:64M --log-format json --backend sim \
  --sim-latency-us 3000 --slow-request-ms 1 --nbd-tls on --nbd-tls-psk "$T/keys/keys.psk"

# One write of 1 MiB at 2 MiB: its slow-request line, found by its offset.
head -c 1M /dev/urandom >"$T/blob"
$PY - "$(uri)" "$T/blob" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(open(sys.argv[2], "rb").read(), 2 << 20); h.shutdown()
PY
$PY - "$T/spd2.log" <<'PY' || { cat "$T/spd2.log"; fail "no slow-request line for the write"; }
import json, re, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
w = [j for j in lines if j.get("op") == "write" and j.get("offset") == 2 << 20]
assert len(w) == 1, w
j = w[0]
assert j["level"] == "warn" and j["volume"] == "vol0" and j["length"] == 1 << 20, j
assert re.fullmatch(r"[0-9a-f]{32}", j["correlation_id"]), j
assert j["msg"].startswith("slow request: write of 1048576 bytes at 2097152 took "), j
# Every stage was stamped, and the device's 3 ms is where the time went.
stages = ("queued_us", "dispatched_us", "submit_us", "backend_us", "reply_us")
assert all(isinstance(j[k], int) and j[k] >= 0 for k in stages), j
assert j["backend_us"] >= 2900 and j["total_us"] >= j["backend_us"], j
assert sum(j[k] for k in stages) <= j["total_us"] + len(stages), j
PY

# Flood 1, slow requests: fio at QD 32 for 3 s makes thousands; the one call site prints at
# most its burst plus 20 a second.
fio --name=flood --ioengine=nbd --uri="$(uri)" --rw=randread --bs=4k --iodepth=32 \
  --time_based --runtime=3 --size=64M >"$T/fio.out" 2>&1 || { cat "$T/fio.out"; fail "fio"; }
# Flood 2, bad input: 401 clients ask for TLS, then send garbage instead of a TLS handshake.
$PY - "$SPD_PORT" <<'PY' || fail "TLS garbage clients"
import socket, struct, sys, time
port = int(sys.argv[1])
def garbage():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = b""
    while len(hello) < 18:
        chunk = s.recv(18 - len(hello))
        assert chunk, "closed before the greeting"
        hello += chunk
    assert hello[:8] == b"NBDMAGIC", hello
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 5, 0))  # NBD_OPT_STARTTLS
    ack = b""
    while len(ack) < 20:
        chunk = s.recv(20 - len(ack))
        assert chunk, "closed before the STARTTLS reply"
        ack += chunk
    assert struct.unpack(">QII", ack[:16])[2] == 1, ack  # NBD_REP_ACK
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 4)
    try:
        while s.recv(4096):  # until the server closes (an alert first, maybe)
            pass
    except ConnectionResetError:  # closed with our garbage unread: as good
        pass
    s.close()
for i in range(400):
    garbage()
# The flood may take less than the 50 ms a token takes to come back: once one has, one more
# line gets through and says how many were dropped.
time.sleep(0.2)
garbage()
PY
curl -s "http://127.0.0.1:$mport/metrics" >"$T/metrics"
stop_spd2

$PY - "$T/spd2.log" "$T/metrics" <<'PY' || fail "log check"
import json, re, sys
from datetime import datetime
metrics = {}
for l in open(sys.argv[2]):
    if l and not l.startswith("#"):
        k, _, v = l.rpartition(" ")
        metrics[k] = float(v)
# Every line is one JSON object with the required fields.
lines = []
for n, l in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    try:
        j = json.loads(l)
    except ValueError as e:
        sys.exit(f"line {n} is not JSON ({e}): {l!r}")
    assert isinstance(j, dict), l
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", j["time"]), l
    assert j["level"] in ("debug", "info", "warn", "error"), l
    assert isinstance(j["component"], str) and j["component"], l
    assert isinstance(j["msg"], str), l
    if "correlation_id" in j:
        assert re.fullmatch(r"[0-9a-f]{32}", j["correlation_id"]), l
    j["t"] = datetime.strptime(j["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
    lines.append(j)
assert any(j["component"] == "daemon" for j in lines), "no start-up line from the daemon"

def check_site(name, site, happened):
    """`site`: the lines of one call site; `happened`: how many events it saw (a counter)."""
    assert site, f"{name}: no line"
    span = site[-1]["t"] - site[0]["t"]
    # The token bucket: 100 at once, then one every 50 ms (+2: the clock read of a line and
    # its timestamp differ by microseconds).
    bound = 100 + 20 * span + 2
    assert len(site) <= bound, f"{name}: {len(site)} lines in {span:.2f} s, bound {bound:.0f}"
    reported = sum(j.get("suppressed", 0) for j in site)
    assert reported > 0, f"{name}: no line says how many were suppressed"
    assert len(site) + reported <= happened, (name, len(site), reported, happened)
    print(f"{name}: {happened:.0f} events, {len(site)} lines in {span:.2f} s, "
          f"{reported} reported suppressed")
    return reported

slow = [j for j in lines if j["msg"].startswith("slow request: ")]
r1 = check_site("slow requests", slow, metrics["spd_slow_requests_total"])
tls = [j for j in lines if "TLS handshake failed" in j["msg"]]
r2 = check_site("TLS garbage", tls, 401)
assert all(j["component"] == "nbd" for j in tls), tls[0]
assert metrics["spd_log_suppressed_total"] >= r1 + r2, metrics["spd_log_suppressed_total"]
PY
