# SIGTERM with writes in flight: spd2 exits 0, and after a restart every write it acknowledged
# before it stopped is there, flushed or not (SIGTERM lets in-flight requests finish and
# flushes: README), each write that was in flight without an answer holds its old or new value,
# and nothing else changed.
#
# Every write goes to its own 64K chunk that was never allocated, and this daemon commits chunk
# allocations at FLUSH: a write acknowledged but not flushed survives only through the final
# flush at shutdown, so a daemon that skipped it, or that dropped or lost writes while draining,
# fails here.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:1G --chunk-size 64K
# The client sends SIGTERM itself, at a point where it holds writes acknowledged after the last
# FLUSH it sent, and keeps writing (16 in flight) until the server is gone.
$PY - "$(uri)" "$T/record.json" "$SPD_PID" >"$T/client.log" 2>&1 <<'PY' || { cat "$T/client.log"; fail "client failed"; }
import json, nbd, os, signal, sys, time
uri, record, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
BLOCK, STRIDE, SLOTS = 4096, 64 << 10, (1 << 30) // (64 << 10)
salt = os.urandom(8).hex()

def data(slot):
    return ("%s:%08d:" % (salt, slot)).encode().ljust(BLOCK, b"%c" % (65 + slot % 26))

state = {}  # slot -> "issued" | "acked" | "flushed"
h = nbd.NBD()
h.connect_uri(uri)
# A: 256 writes, then FLUSH.
for slot in range(256):
    h.pwrite(data(slot), slot * STRIDE)
    state[slot] = "acked"
h.flush()
for s in range(256):
    state[s] = "flushed"
# B: 16 writes in flight and a FLUSH after every 64 writes, for 0.3 s; then SIGTERM once a write
# has been acknowledged since the last FLUSH was sent (no FLUSH can cover it any more: none is
# sent after SIGTERM), and on, writes only, until the server is gone.
writes, flushes = {}, {}  # cookie -> slot; cookie -> slots acknowledged when it was sent
acked_since_flush = 0
nxt, term_at, cut = 256, None, None
t0 = time.monotonic()
try:
    while time.monotonic() < t0 + 30:
        while len(writes) < 16:
            assert nxt < SLOTS, "ran out of fresh chunks"
            state[nxt] = "issued"
            writes[h.aio_pwrite(data(nxt), nxt * STRIDE)] = nxt
            nxt += 1
            if term_at is None and nxt % 64 == 0:
                flushes[h.aio_flush()] = [s for s, v in state.items() if v == "acked"]
                acked_since_flush = 0
        h.poll(-1)
        for c in list(writes):
            if h.aio_command_completed(c):
                state[writes.pop(c)] = "acked"
                acked_since_flush += 1
        for c in list(flushes):
            if h.aio_command_completed(c):
                for s in flushes.pop(c):
                    state[s] = "flushed"
        if term_at is None and time.monotonic() > t0 + 0.3 and acked_since_flush > 0:
            term_at = (nxt, len(writes), len(flushes))
            os.kill(pid, signal.SIGTERM)
except nbd.Error as e:  # the server answered an error or closed: no further answer counts
    cut = str(e)
assert term_at is not None and cut is not None, "the server still answered 30 s after SIGTERM"
json.dump({"salt": salt, "next": nxt, "state": state}, open(record, "w"))
n = {v: sum(1 for x in state.values() if x == v) for v in ("flushed", "acked", "issued")}
print("client: SIGTERM after %d writes with %d writes and %d FLUSHes in flight; cut off (%s) after "
      "%d writes: %d flushed, %d acknowledged only, %d unanswered"
      % (term_at + (cut, nxt, n["flushed"], n["acked"], n["issued"])))
PY
cat "$T/client.log"
rc=0
wait "$SPD_PID" || rc=$?
SPD_PID=""
[ "$rc" -eq 0 ] || { cat "$T/spd2.log" >&2; fail "spd2 exited $rc after SIGTERM"; }
start_spd2 --volume vol0:1G --chunk-size 64K
$PY - "$(uri)" "$T/record.json" <<'PY'
import json, nbd, sys
uri, record = sys.argv[1:]
rec = json.load(open(record))
salt, state = rec["salt"], {int(k): v for k, v in rec["state"].items()}
BLOCK, STRIDE = 4096, 64 << 10
def data(slot):
    return ("%s:%08d:" % (salt, slot)).encode().ljust(BLOCK, b"%c" % (65 + slot % 26))
h = nbd.NBD()
h.connect_uri(uri)
lost = {"flushed": [], "acked": []}
landed = 0
for slot in range(rec["next"] + 64):  # 64 never-written slots past the last write: zeros
    got = h.pread(BLOCK, slot * STRIDE)
    want = state.get(slot)
    if want in lost:
        if got != data(slot):
            lost[want].append(slot)
    elif want == "issued":
        assert got in (data(slot), b"\0" * BLOCK), "slot %d: neither old nor new" % slot
        landed += got == data(slot)
    else:
        assert got == b"\0" * BLOCK, "slot %d was never written but is not zero" % slot
h.shutdown()
assert not lost["flushed"] and not lost["acked"], \
    "lost after SIGTERM and restart: %d acknowledged+flushed (first %s), %d acknowledged (first %s)" % (
        len(lost["flushed"]), lost["flushed"][:5], len(lost["acked"]), lost["acked"][:5])
n = {v: sum(1 for x in state.values() if x == v) for v in ("flushed", "acked", "issued")}
assert n["flushed"] >= 256 and n["acked"] > 0, n
print("ok - after restart: %d flushed and %d acknowledged-only writes intact, %d of %d unanswered landed"
      % (n["flushed"], n["acked"], landed, n["issued"]))
PY
stop_spd2
