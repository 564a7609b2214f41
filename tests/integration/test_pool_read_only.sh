# A pool turning read-only is announced on the control API's event stream: the sim backend's
# device fails a share of its I/Os (--sim-error-rate), a client writes new chunks and flushes
# until a commit's log write fails; the pool then refuses writes (docs/durability.md), and a
# watcher (spdctl events, following from the start) gets the pool-read-only event saying why,
# once; the pool reads as read-only through the API.
source "$(dirname "$0")/lib.sh"
export SPD_CONTROL_SOCKET="$T/data/control.sock"
# The seed makes the start-up's I/Os (formatting the pool) deterministic: none of them fails.
SPD_NBD_LISTEN=off start_spd2 --backend sim --sim-error-rate 0.05 --sim-seed 3 --cores 1 \
  --volume v:256M
expect 0 pool get -o json
[ "$(json "d['readOnly']")" = False ] || fail "read-only at start: $(cat "$T/out")"
"$SPDCTL" events --since 1 -o json >"$T/events" 2>&1 &
events_pid=$!
EXTRA_PIDS+=("$events_pid")
# A 4 KiB write into a new chunk, then a flush: a commit recording the allocation, each time.
"$PY" - "$(uri v)" <<'PY' >"$T/writes.log" 2>&1 || { cat "$T/writes.log"; fail "the writer"; }
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(256):
    try:
        h.pwrite(b"x" * 4096, i << 20)
        h.flush()
    except nbd.Error as e:
        print("write/flush %d failed: %s" % (i, e))
try:
    h.pwrite(b"y" * 4096, 0)
    h.flush()
    print("still writable")
except nbd.Error as e:
    print("refused at the end: %s" % e)
PY
cat "$T/writes.log"
grep -q "refused at the end" "$T/writes.log" || fail "the pool still takes writes"
grep -q "the pool is read-only from now on" "$T/spd2.log" || fail "spd2 did not say read-only"
expect 0 pool get -o json
[ "$(json "d['readOnly']")" = True ] || fail "pool get after the failure: $(cat "$T/out")"
for _ in $(seq 50); do
  grep -q '"type":"pool-read-only"' "$T/events" && break
  sleep 0.1
done
$PY - "$T/events" <<'PY' || fail "no pool-read-only event: $(cat "$T/events")"
import json, sys
es = [json.loads(l) for l in open(sys.argv[1])]
ro = [e for e in es if e["type"] == "pool-read-only"]
print("events:", [e["type"] for e in es])
assert len(ro) == 1, ro
e = ro[0]
assert e["volume"] == "" and "volumeInfo" not in e, e
assert "commit failed (Input/output error)" in e["message"], e
assert e["message"].endswith("the pool is read-only until spd2 restarts"), e
PY
expect 0 volume list  # the API still answers
# At SIGTERM the final sync cannot succeed: spd2 says so and exits 1; the watcher ends cleanly.
kill -TERM "$SPD_PID"
rc=0
wait "$SPD_PID" || rc=$?
SPD_PID=""
[ "$rc" -eq 1 ] && grep -q "final flush failed" "$T/spd2.log" || fail "spd2 exited $rc at SIGTERM"
wait "$events_pid" || fail "the event watcher did not end cleanly at SIGTERM"
EXTRA_PIDS=()
echo "ok - pool-read-only event"
