# spd-it: alone (a Prometheus server and its scrape timing)
# A real Prometheus (Debian's) scrapes the daemon: promtool finds the exposition clean, and
# PromQL through Prometheus' HTTP API returns the per-volume figures of the I/O this test did
# (requests by operation, bytes, errors by kind, histogram counts), for two volumes apart; and
# every query of the Grafana dashboard (deploy/grafana) returns data.
source "$(dirname "$0")/lib.sh"
command -v prometheus >/dev/null || fail "prometheus is not installed (scripts/setup.sh)"
command -v promtool >/dev/null || fail "promtool is not installed (scripts/setup.sh)"

MPORT=$((SPD_PORT + 1))
PPORT=$((SPD_PORT + 2))
PROM_PID=""
stop_prom() {
  if [ -n "$PROM_PID" ] && kill -0 "$PROM_PID" 2>/dev/null; then
    kill -TERM "$PROM_PID"
    local rc=0
    wait "$PROM_PID" || rc=$?
    # 0, or 143 when SIGTERM ended it before its handler ran; anything else is a crash.
    [ "$rc" -eq 0 ] || [ "$rc" -eq 143 ] || echo "prometheus exited $rc" >&2
  fi
  PROM_PID=""
}
trap 'stop_prom; cleanup' EXIT

SPD_METRICS=127.0.0.1:$MPORT start_spd2 --backend sim --volume vol0:64M --volume other:16M

# The I/O, request by request (libnbd): on vol0 5 writes of 64 KiB, 3 reads of 64 KiB, one
# read beyond the end (refused: EINVAL), a flush and a trim; on other 2 reads of 4 KiB.
$PY - "$(uri)" "$(uri other)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)  # let the bad read reach the server
h.connect_uri(sys.argv[1])
for i in range(5):
    h.pwrite(bytes([i + 1]) * 65536, i * 65536)
for i in range(3):
    h.pread(65536, i * 65536)
try:
    h.pread(4096, 64 << 20)
    raise SystemExit("a read beyond the end succeeded")
except nbd.Error as e:
    assert "EINVAL" in str(e), e
h.flush()
h.trim(65536, 0)
h.shutdown()
o = nbd.NBD()
o.connect_uri(sys.argv[2])
o.pread(4096, 0)
o.pread(4096, 8192)
o.shutdown()
PY

curl -sf "http://127.0.0.1:$MPORT/metrics" >"$T/metrics" || fail "scrape"
promtool check metrics <"$T/metrics" >"$T/promtool" 2>&1 || {
  cat "$T/promtool"
  fail "promtool check metrics"
}

mkdir -p "$T/prom"
cat >"$T/prom/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: spd2
    static_configs:
      - targets: ['127.0.0.1:$MPORT']
EOF
prometheus --config.file="$T/prom/prometheus.yml" --storage.tsdb.path="$T/prom/data" \
  --web.listen-address="127.0.0.1:$PPORT" >"$T/prom.log" 2>&1 &
PROM_PID=$!

# q PROMQL: the query's single value (empty while Prometheus has none).
q() {
  local body
  # Not up yet, or no answer: empty, which every caller treats as "not there".
  body=$(curl -sf --max-time 5 "http://127.0.0.1:$PPORT/api/v1/query" \
    --data-urlencode "query=$1") || return 0
  $PY -c 'import json,sys
r = json.loads(sys.argv[1])["data"]["result"]
print(r[0]["value"][1] if len(r) == 1 else "")' "$body"
}
# Until the first scrape with our figures is in (bounded: 60 s).
for _ in $(seq 120); do
  kill -0 "$PROM_PID" 2>/dev/null || { cat "$T/prom.log"; fail "prometheus exited"; }
  [ "$(q 'up{job="spd2"}')" = 1 ] && [ -n "$(q 'spd_volume_written_bytes_total{volume="vol0"}')" ] && break
  sleep 0.5
done
[ "$(q 'up{job="spd2"}')" = 1 ] || { cat "$T/prom.log"; fail "prometheus never scraped spd2"; }

check() {  # check PROMQL WANT
  local got
  got=$(q "$1")
  [ "$got" = "$2" ] || fail "$1 = '$got', wanted $2"
}
check 'spd_volume_requests_total{volume="vol0",op="write"}' 5
check 'spd_volume_requests_total{volume="vol0",op="read"}' 4
check 'spd_volume_requests_total{volume="vol0",op="flush"}' 1
check 'spd_volume_requests_total{volume="vol0",op="discard"}' 1
check 'spd_volume_written_bytes_total{volume="vol0"}' $((5 * 65536))
check 'spd_volume_read_bytes_total{volume="vol0"}' $((3 * 65536))
check 'spd_volume_errors_total{volume="vol0",kind="invalid"}' 1
check 'sum(spd_volume_request_duration_seconds_count{volume="vol0"})' 11
check 'spd_volume_request_duration_seconds_bucket{volume="vol0",op="write",le="+Inf"}' 5
check 'spd_volume_requests_total{volume="other",op="read"}' 2
check 'spd_volume_read_bytes_total{volume="other"}' 8192
check 'count(spd_volume_requests_total{volume="other"})' 1
check 'spd_volume_inflight_requests{volume="vol0"}' 0
check 'spd_volume_size_bytes{volume="other"}' $((16 << 20))
# A percentile Prometheus computes from the histogram: some finite bucket edge (every request
# here took well under a second on the sim).
p99=$(q 'histogram_quantile(0.99, spd_volume_request_duration_seconds_bucket{volume="vol0",op="write"})')
$PY -c "import sys; v = float('$p99'); sys.exit(0 if 0 < v <= 1 else 1)" || fail "p99 of writes '$p99'"

# The Grafana dashboard: every panel's query, its variables set to this daemon's volumes, is
# valid PromQL that returns data here (a rate once Prometheus holds two samples; it waits 30 s at
# most). A control call first, so that the control-call family has a series to show.
expect 0 --socket "$T/data/control.sock" volume list
$PY "$(dirname "$0")/dashboard_check.py" "http://127.0.0.1:$PPORT" \
  "$(dirname "$0")/../../deploy/grafana/spd2-dashboard.json" || fail "dashboard queries"

stop_prom
stop_spd2
