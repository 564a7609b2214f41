# --config (TOML) takes the same keys as the flags; the sim backend serves real clients with its
# latency model; the metrics endpoint exports the counters; bad flags fail with exit 2.
source "$(dirname "$0")/lib.sh"
mport=$((SPD_PORT + 1))
cat >"$T/spd2.toml" <<TOML
data-dir = "$T/data"
pool-size = "1G"
volume = ["cfgvol:32M", "scratch:8M:none"]
nbd-listen = "127.0.0.1:$SPD_PORT"
metrics-listen = "127.0.0.1:$mport"
backend = "sim"
sim-latency-us = 2000
quiet = true
TOML
"$SPD2" --config "$T/spd2.toml" >>"$T/spd2.log" 2>&1 &
SPD_PID=$!
for _ in $(seq 100); do [ -S "$SPD_SOCK" ] && break; sleep 0.05; done
nbdinfo --list "nbd+unix:///?socket=$SPD_SOCK" >"$T/list" || fail "list"
grep -q 'export="cfgvol"' "$T/list" || { cat "$T/list"; fail "config volume missing"; }
grep -q 'export="scratch"' "$T/list" || fail "second config volume missing"
grep -q "sim backend" "$T/spd2.log" || { cat "$T/spd2.log"; fail "sim backend not used"; }
head -c 4M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "nbd+unix:///cfgvol?socket=$SPD_SOCK"
rm -f "$T/out"; nbdcopy "nbd+unix:///cfgvol?socket=$SPD_SOCK" "$T/out"
cmp -n $((4 << 20)) "$T/out" "$T/blob" || fail "sim round trip"
# The 2 ms synthetic latency shows in a QD1 read.
lat=$($PY - "$SPD_SOCK" <<'PY'
import nbd, sys, time
h = nbd.NBD(); h.connect_uri("nbd+unix:///cfgvol?socket=" + sys.argv[1])
t = time.monotonic()
for i in range(10):
    h.pread(4096, i * 4096)
print(int((time.monotonic() - t) / 10 * 1e6))
h.shutdown()
PY
)
[ "$lat" -ge 2000 ] || fail "sim latency not applied (${lat} us per read)"
curl -s "http://127.0.0.1:$mport/metrics" >"$T/metrics"
grep -q '^spd_nbd_connections_total [1-9]' "$T/metrics" || { head "$T/metrics"; fail "metrics"; }
grep -q '^# TYPE spd_volume_client_bytes_written_total counter' "$T/metrics" || fail "metric type"
# Server-side request latency: a Prometheus histogram that counted the requests above.
grep -q '^# TYPE spd_nbd_request_duration_seconds histogram' "$T/metrics" || fail "histogram type"
grep -q '^spd_nbd_request_duration_seconds_bucket{le="+Inf"} [1-9]' "$T/metrics" ||
  fail "histogram counted nothing"
grep -q '^spd_nbd_request_duration_seconds_count [1-9]' "$T/metrics" || fail "histogram count"
# ... and it saw the synthetic latency: at least the 10 timed reads took over 1.024 ms.
below=$(awk '$1 == "spd_nbd_request_duration_seconds_bucket{le=\"0.001024\"}" {print $2}' "$T/metrics")
all=$(awk '$1 == "spd_nbd_request_duration_seconds_bucket{le=\"+Inf\"}" {print $2}' "$T/metrics")
[ $((all - below)) -ge 10 ] || fail "histogram did not see the 2 ms reads ($below of $all below 1 ms)"
curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/nope" | grep -q 404 || fail "404"
stop_spd2
rc=0; "$SPD2" --no-such-flag >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -eq 2 ] || fail "bad flag exit $rc"
rc=0; "$SPD2" --volume "bad" >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "NAME:SIZE" "$T/err" || fail "bad --volume not explained"
