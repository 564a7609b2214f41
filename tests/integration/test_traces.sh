# spd-it: alone (it measures the exporter's cost)
# Traces: spd2 exports spans as OTLP/HTTP JSON to a receiver that checks every body against
# OpenTelemetry's own message definitions (otlp_receiver.py, opentelemetry-proto from PyPI in
# the test venv that scripts/setup.sh makes). Checked: a control call continues the caller's
# W3C traceparent (same trace id, our span the child of its span) and carries its status; I/O
# requests become a span with a child per stage, the children tiling the parent and matching
# its stage attributes; sampling takes exactly one in N of a connection's requests; slow
# requests are traced without sampling; a collector that refuses, one that is gone and one
# that never answers cost spans (counted) but never I/O or a clean stop.
source "$(dirname "$0")/lib.sh"
VENV=${SPD_TEST_VENV:-$(cd "$(dirname "$0")/../.." && pwd)/.venv-test}
[ -x "$VENV/bin/python3" ] || fail "no test venv at $VENV: run scripts/setup.sh"
RECEIVER="$(dirname "$0")/otlp_receiver.py"
MPORT=$((SPD_PORT + 1))
RPORT=$((SPD_PORT + 3))
ENDPOINT="http://127.0.0.1:$RPORT/v1/traces"
RPID=""
stop_receiver() {
  if [ -n "$RPID" ] && kill -0 "$RPID" 2>/dev/null; then
    kill -TERM "$RPID"
    wait "$RPID" 2>/dev/null || [ $? -eq 143 ] || fail "the receiver crashed"
  fi
  RPID=""
}
trap 'stop_receiver; cleanup' EXIT
# start_receiver SPANS_FILE [--status CODE]
start_receiver() {
  "$VENV/bin/python3" "$RECEIVER" "$RPORT" "$@" 2>>"$T/receiver.log" &
  RPID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$RPORT/" && return 0
    kill -0 "$RPID" 2>/dev/null || { cat "$T/receiver.log"; fail "the receiver exited"; }
    sleep 0.1
  done
  fail "the receiver did not start"
}
metric() {
  curl -s "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

# ---- 1. control calls and I/O, every request sampled ------------------------------------
start_receiver "$T/spans.jsonl"
SPD_METRICS=127.0.0.1:$MPORT start_spd2 --backend sim --volume vol0:64M \
  --trace-endpoint "$ENDPOINT" --trace-sample-rate 1
TID=4bf92f3577b34da6a3ce929d0e0e4736
SID=00f067aa0ba902b7
TRACEPARENT="00-$TID-$SID-01" "$SPDCTL" --socket "$T/data/control.sock" volume create t1 \
  --size 16M >/dev/null
TRACEPARENT="00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01" \
  "$SPDCTL" --socket "$T/data/control.sock" volume get nope >/dev/null 2>&1 && fail "got 'nope'"
# A malformed traceparent starts a new trace rather than failing the call.
TRACEPARENT="00-zz-yy-01" "$SPDCTL" --socket "$T/data/control.sock" volume list >/dev/null
$PY - "$(uri)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.set_strict_mode(0)  # let the bad read reach the server
h.connect_uri(sys.argv[1])
for i in range(3):
    h.pwrite(b"x" * 65536, i * 1048576)
h.pread(4096, 0)
try:
    h.pread(4096, 64 << 20)
    raise SystemExit("a read beyond the end succeeded")
except nbd.Error:
    pass
h.shutdown()
PY
[ "$(metric spd_trace_spans_dropped_total)" = 0 ] || fail "spans dropped"
stop_spd2  # sends the last batch
[ ! -s "$T/spans.jsonl.errors" ] || { cat "$T/spans.jsonl.errors"; fail "the receiver refused a body"; }
$PY - "$T/spans.jsonl" "$TID" "$SID" <<'PY'
import json, sys
spans = [json.loads(l) for l in open(sys.argv[1])]
tid, sid = sys.argv[2], sys.argv[3]
assert spans and all(s["service"] == "spd2" for s in spans), spans[:1]
by = lambda name: [s for s in spans if s["name"] == name]

# Control calls: server spans (kind 2) named package.Service/Method.
[create] = by("spd.v1.VolumeService/CreateVolume")
assert create["trace_id"] == tid and create["parent_span_id"] == sid, create
assert create["kind"] == 2 and create["status"] == 1, create
assert create["attributes"]["rpc.system"] == "grpc", create
assert create["attributes"]["rpc.method"] == "CreateVolume", create
assert create["attributes"]["rpc.grpc.status_code"] == 0, create
assert 0 < create["start"] <= create["end"], create
[get] = by("spd.v1.VolumeService/GetVolume")
assert get["trace_id"] == "a" * 32 and get["parent_span_id"] == "b" * 16, get
assert get["status"] == 2 and get["attributes"]["rpc.grpc.status_code"] == 5, get
[lst] = by("spd.v1.VolumeService/ListVolumes")
assert lst["parent_span_id"] == "" and lst["trace_id"] not in (tid, "0" * 32), lst

# I/O: one spd.request per request (3 writes, 2 reads), each the root of its own trace.
reqs = by("spd.request")
ops = sorted(r["attributes"]["spd.op"] for r in reqs)
assert ops.count("write") == 3 and len([o for o in ops if o in ("read", "refused")]) == 2, ops
assert len({r["trace_id"] for r in reqs}) == len(reqs), "trace ids repeat"
writes = sorted((r for r in reqs if r["attributes"]["spd.op"] == "write"),
                key=lambda r: r["attributes"]["spd.offset"])
assert [w["attributes"]["spd.offset"] for w in writes] == [0, 1048576, 2097152], writes
for w in writes:
    a = w["attributes"]
    assert a["spd.length"] == 65536 and a["spd.volume"] == "vol0" and a["spd.error"] == 0, a
    assert a["spd.frontend"] == "nbd" and a["spd.trace_reason"] == "sampled", a
    assert w["parent_span_id"] == "" and w["kind"] == 2 and w["status"] == 1, w
    kids = sorted((s for s in spans if s["parent_span_id"] == w["span_id"]),
                  key=lambda s: s["start"])
    names = [k["name"] for k in kids]
    assert "spd.backend" in names and names[-1] == "spd.reply", names
    assert all(k["trace_id"] == w["trace_id"] for k in kids), kids
    # The stages tile the request: contiguous, from its arrival to its reply.
    assert kids[0]["start"] == w["start"] and kids[-1]["end"] == w["end"], (w, kids)
    for a_, b_ in zip(kids, kids[1:]):
        assert a_["end"] == b_["start"], (a_, b_)
    attr_of = {"spd.queued": "spd.queued_us", "spd.scheduler": "spd.dispatched_us",
               "spd.volume": "spd.submit_us", "spd.backend": "spd.backend_us",
               "spd.reply": "spd.reply_us"}
    for k in kids:
        us = (k["end"] - k["start"]) // 1000
        assert abs(us - a[attr_of[k["name"]]]) <= 1, (k, a)
bad = [r for r in reqs if r["attributes"]["spd.offset"] == 64 << 20]
assert len(bad) == 1 and bad[0]["status"] == 2 and bad[0]["attributes"]["spd.error"] == 22, bad
print("traces: %d spans, %d requests, control calls ok" % (len(spans), len(reqs)))
PY

# ---- 2. sampling one in 4, and slow requests --------------------------------------------
rm -f "$T/spans.jsonl"
SPD_METRICS=127.0.0.1:$MPORT start_spd2 --backend sim --volume vol0:64M \
  --trace-endpoint "$ENDPOINT" --trace-sample-rate 0.25
$PY - "$(uri)" <<'PY'
import nbd, sys
for _ in range(2):  # two connections: each samples its own 1 in 4
    h = nbd.NBD()
    h.connect_uri(sys.argv[1])
    for i in range(8):
        h.pread(4096, i * 4096)
    h.shutdown()
PY
stop_spd2
n=$($PY -c "import json,sys; print(sum(1 for l in open('$T/spans.jsonl') if json.loads(l)['name'] == 'spd.request'))")
[ "$n" = 4 ] || fail "sampling 0.25 traced $n of 16 requests, wanted 4"

rm -f "$T/spans.jsonl"
SPD_METRICS=127.0.0.1:$MPORT start_spd2 --backend sim --volume vol0:64M --sim-read-us 20000 \
  --trace-endpoint "$ENDPOINT" --trace-slow-ms 10
$PY - "$(uri)" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"y" * 4096, 0)  # fast: not traced
for i in range(3):
    h.pread(4096, i * 4096)  # 20 ms: slow
h.shutdown()
PY
stop_spd2
$PY - "$T/spans.jsonl" <<'PY'
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
reqs = [r for r in reqs if r["name"] == "spd.request"]
assert len(reqs) == 3, reqs
for r in reqs:
    a = r["attributes"]
    assert a["spd.op"] == "read" and a["spd.trace_reason"] == "slow", a
    assert a["spd.total_us"] >= 10000 and a["spd.backend_us"] >= 10000, a
PY
stop_receiver

# ---- 3. collectors that fail: refused, gone, silent -----------------------------------
io_ok() {
  head -c 1M /dev/urandom >"$T/blob"
  nbdcopy "$T/blob" "$(uri)"
  nbdcopy "$(uri)" "$T/back"
  cmp -n $((1 << 20)) "$T/blob" "$T/back" || fail "data with a failing collector"
}
start_receiver "$T/refused.jsonl" --status 503
SPD_METRICS=127.0.0.1:$MPORT start_spd2 --backend sim --volume vol0:64M \
  --trace-endpoint "$ENDPOINT" --trace-sample-rate 1
io_ok
for _ in $(seq 100); do
  [ "$(metric spd_trace_export_errors_total)" -gt 0 ] && break
  sleep 0.1
done
[ "$(metric spd_trace_export_errors_total)" -gt 0 ] || fail "a 503 was not counted"
[ "$(metric spd_trace_spans_lost_total)" -gt 0 ] || fail "lost spans not counted"
stop_spd2
grep -q "trace export to .* failed: HTTP 503" "$T/spd2.log" || fail "no log line for the 503"
stop_receiver

# Gone (nothing listens) and silent (a socket that accepts and never answers): the exporter's
# deadlines bound the final flush, so a stop still ends (within the test's own bound).
SPD_METRICS=127.0.0.1:$MPORT start_spd2 --backend sim --volume vol0:64M \
  --trace-endpoint "$ENDPOINT" --trace-sample-rate 1
io_ok
stop_spd2
$PY -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $RPORT)); s.listen(64); time.sleep(120)" &
SILENT=$!
SPD_METRICS=127.0.0.1:$MPORT start_spd2 --backend sim --volume vol0:64M \
  --trace-endpoint "$ENDPOINT" --trace-sample-rate 1
io_ok
t0=$SECONDS
stop_spd2
kill "$SILENT"
wait "$SILENT" 2>/dev/null || [ $? -eq 143 ] || fail "the silent listener failed"
[ $((SECONDS - t0)) -le 30 ] || fail "stopping with a silent collector took $((SECONDS - t0)) s"
grep -q "trace export to .* failed: Timeout" "$T/spd2.log" || {
  grep "trace export" "$T/spd2.log"
  fail "no timeout logged for the silent collector"
}
echo "traces: ok"
