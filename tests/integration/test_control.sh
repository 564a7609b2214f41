# The control API through spdctl against a real daemon: every command, its output shapes
# (apiVersion), its exit codes, access by uid (SO_PEERCRED), events, completion, and a clean
# SIGTERM with a watcher connected.
source "$(dirname "$0")/lib.sh"
chmod 0755 "$T"  # so that user nobody can reach the socket (and be refused by the daemon)
export SPD_CONTROL_SOCKET="$T/data/control.sock"
ctl() { "$SPDCTL" "$@"; }

start_spd2 --control-socket-mode 0666 --volume vol0:64M
# Created owner-only: the data directory, the pool file, the control socket (unless asked).
[ "$(stat -c %a "$T/data")" = 700 ] || fail "data dir mode $(stat -c %a "$T/data")"
[ "$(stat -c %a "$T/data/pool.img")" = 600 ] || fail "pool file mode $(stat -c %a "$T/data/pool.img")"
[ "$(stat -c %a "$T/data/control.sock")" = 666 ] || fail "--control-socket-mode not applied"
chmod 0711 "$T/data"  # let user nobody reach the socket below (and be refused by the daemon)
# Follows every event from the first one, in the background.
"$SPDCTL" events --since 1 -o json >"$T/events" 2>&1 &
events_pid=$!

# The control plane's threads (gRPC's, the worker, the listener) are SCHED_BATCH (policy 3) so
# that calls never preempt a reactor; the reactors are not (--control-batch-threads).
policies() { for t in /proc/"$SPD_PID"/task/*; do awk '/^policy/{print $3}' "$t/sched"; done; }
batch=$(policies | grep -c '^3$')
other=$(policies | grep -c '^0$')
[ "$batch" -ge 4 ] && [ "$other" -ge 1 ] || fail "SCHED_BATCH threads: $batch, others: $other"

expect 0 node info -o json
[ "$(json "d['apiVersion'], d['kind'], d['engine'] in ('io_uring', 'epoll')")" = "spd.v1 NodeInfo True" ] ||
  fail "node info: $(cat "$T/out")"
expect 0 volume create db1 --size 10G --durability sync -o json
[ "$(json "d['apiVersion'], d['kind'], d['name'], d['sizeBytes'], d['durability']")" = \
  "spd.v1 Volume db1 10737418240 sync" ] || fail "create: $(cat "$T/out")"
expect 0 volume create db1 --size 10G --durability sync      # idempotent
expect 4 volume create db1 --size 20G                          # same name, other size
grep -q ALREADY_EXISTS "$T/err" || fail "no ALREADY_EXISTS: $(cat "$T/err")"
expect 3 volume get nope
expect 2 volume create bad --size 10X                          # refused by spdctl itself
expect 8 volume create bad --size 1000                         # refused by the daemon
grep -q "size_bytes: must be a positive multiple of 4096" "$T/err" || fail "$(cat "$T/err")"
expect 8 volume create "bad/name" --size 1G
grep -q "INVALID_ARGUMENT: name:" "$T/err" || fail "$(cat "$T/err")"
expect 2 volume frobnicate
expect 2 --timeout nan volume list  # CLI11's range check lets nan through; spdctl does not
grep -q -- "--timeout must be a number" "$T/err" || fail "--timeout nan: $(cat "$T/err")"
expect 0 volume resize db1 --size 12G -o yaml
/usr/bin/python3 -c "import yaml,sys; d=yaml.safe_load(open('$T/out')); \
  assert d['apiVersion'] == 'spd.v1' and d['kind'] == 'Volume' and d['sizeBytes'] == 12 << 30, d" ||
  fail "resize yaml: $(cat "$T/out")"
expect 0 volume set-durability db1 none -o json
[ "$(json "d['durability']")" = none ] || fail "set-durability: $(cat "$T/out")"
expect 0 volume list -o json
[ "$(json "d['kind'], [v['name'] for v in d['items']]")" = "VolumeList ['vol0', 'db1']" ] ||
  fail "list: $(cat "$T/out")"
expect 0 pool list -o json
[ "$(json "d['items'][0]['volumes'], d['items'][0]['readOnly']")" = "2 False" ] ||
  fail "pool list: $(cat "$T/out")"
expect 0 pool get
expect 3 pool get other
# Thin provisioning: the pool reports what its volumes were promised (their sizes summed), here
# 64 MiB + 12 GiB, more than its 2 GiB.
expect 0 pool get -o json
[ "$(json "d['provisionedBytes'], d['provisionedBytes'] > d['sizeBytes']")" = \
  "$(((64 << 20) + (12 << 30))) True" ] || fail "pool get provisionedBytes: $(cat "$T/out")"

# Data beyond a shrink, and a delete while a client has the volume open.
head -c 64M /dev/urandom >"$T/data64"
nbdcopy "$T/data64" "$(uri vol0)" || fail "nbdcopy into vol0"
# Allocation as of now (read without the pool's reactor), in get and in list.
expect 0 volume get vol0 -o json
[ "$(json "d['allocatedBytes']")" = $((64 << 20)) ] || fail "allocated after the copy: $(cat "$T/out")"
expect 0 volume list -o json
[ "$(json "[v['allocatedBytes'] for v in d['items'] if v['name'] == 'vol0'][0]")" = $((64 << 20)) ] ||
  fail "allocated in the list: $(cat "$T/out")"
expect 5 volume resize vol0 --size 32M
grep -q FAILED_PRECONDITION "$T/err" || fail "$(cat "$T/err")"
/usr/bin/python3 -c "
import nbd, time
h = nbd.NBD(); h.connect_uri('$(uri vol0)')
open('$T/held', 'w').close()
time.sleep(20)" &
holder=$!
for _ in $(seq 100); do [ -e "$T/held" ] && break; sleep 0.05; done
expect 5 volume delete vol0
grep -q "FAILED_PRECONDITION" "$T/err" || fail "delete in use: $(cat "$T/err")"
expect 0 volume delete vol0 --force
# Its connection is gone already; end its 20 s sleep (it must still be there to be killed).
kill "$holder" || fail "the NBD holder exited early"
rc=0
wait "$holder" 2>/dev/null || rc=$?
[ "$rc" -eq 143 ] || fail "the NBD holder ended with $rc, not by our SIGTERM"
expect 3 volume get vol0

# Access: another uid reaches the socket (mode 0666) but has no role.
rc=0
setpriv --reuid=65534 --regid=65534 --clear-groups "$SPDCTL" volume list >"$T/out" 2>"$T/err" ||
  rc=$?
[ "$rc" -eq 6 ] || fail "uid 65534 got exit $rc: $(cat "$T/err")"
grep -q "PERMISSION_DENIED: uid 65534 has no role" "$T/err" || fail "$(cat "$T/err")"
rc=0
setpriv --reuid=65534 --regid=65534 --clear-groups "$SPDCTL" volume create x --size 1G \
  >"$T/out" 2>"$T/err" || rc=$?
[ "$rc" -eq 6 ] || fail "uid 65534 create got exit $rc: $(cat "$T/err")"
# The uid map and tokens through spdctl: uid 65534 as a viewer reads but cannot change.
expect 0 access set 65534 --role viewer
expect 0 access list -o json
[ "$(json "[(e['uid'], e['role']) for e in d['items']]")" = "[(65534, 'viewer')]" ] ||
  fail "access list: $(cat "$T/out")"
setpriv --reuid=65534 --regid=65534 --clear-groups "$SPDCTL" volume list >/dev/null 2>&1 ||
  fail "a viewer cannot list"
rc=0
setpriv --reuid=65534 --regid=65534 --clear-groups "$SPDCTL" volume create y --size 1G \
  >"$T/out" 2>"$T/err" || rc=$?
[ "$rc" -eq 6 ] && grep -q "(role viewer) may not" "$T/err" || fail "viewer create: $rc $(cat "$T/err")"
expect 0 access delete 65534
expect 0 token create --role viewer --description ci
token=$(cat "$T/out")
[[ "$token" == spd_* ]] || fail "token create printed '$token'"
id=$(echo "$token" | cut -d_ -f2)
expect 0 token list
grep -q "$id" "$T/out" && ! grep -q "$token" "$T/out" || fail "token list: $(cat "$T/out")"
expect 0 token revoke "$id"
expect 3 token revoke "$id"
expect 7 --socket "$T/nothing.sock" volume list                 # no daemon there

# Completion: a valid bash script that completes the nouns.
ctl completion bash >"$T/comp.bash"
bash -n "$T/comp.bash" || fail "completion script is not valid bash"
words=$(bash -c "source '$T/comp.bash'; COMP_WORDS=(spdctl vol); COMP_CWORD=1; _spdctl; echo \${COMPREPLY[*]}")
[ "$words" = volume ] || fail "completion of 'vol' gave '$words'"
words=$(bash -c "source '$T/comp.bash'; COMP_WORDS=(spdctl token ''); COMP_CWORD=2; _spdctl; echo \${COMPREPLY[*]}")
[ "$words" = "create list revoke" ] || fail "completion of 'token' gave '$words'"

# The audit log: every mutating call so far (and the refused ones), chained and intact.
expect 0 audit verify -o json
[ "$(json "d['kind'], d['ok']")" = "AuditVerification True" ] || fail "audit: $(cat "$T/out")"
expect 0 audit head
head_line=$(cat "$T/out")
/usr/bin/python3 - "$T/data/audit/audit.log" <<'PY' || fail "audit log content"
import json, sys
es = [json.loads(l) for l in open(sys.argv[1])]
calls = [(e["method"].split("/")[1], e["who"], e["result"].split(":")[0]) for e in es]
print("audit:", calls)
assert ("CreateVolume", "uid:0", "OK") in calls, calls
assert ("ResizeVolume", "uid:0", "FAILED_PRECONDITION") in calls, calls   # refused shrink
assert ("DeleteVolume", "uid:0", "OK") in calls, calls
assert ("CreateVolume", "uid:65534", "PERMISSION_DENIED") in calls, calls  # refused: recorded
assert any(c[0] == "CreateVolume" and c[2] == "INVALID_ARGUMENT" for c in calls), calls
create = next(e for e in es if e["method"].endswith("CreateVolume") and e["result"] == "OK")
assert create["args"]["name"] == "db1" and create["args"]["size_bytes"] == str(10 << 30), create
assert all(e["method"] != "spd.v1.VolumeService/ListVolumes" for e in es), "reads are not audited"
PY

# The events so far, in order; then SIGTERM ends the watcher cleanly.
expect 0 events --since 1 --count 4 -o json
types=$(/usr/bin/python3 -c "import json; print(' '.join(json.loads(l)['type'] for l in open('$T/out')))")
echo "events: $types"
[ "$types" = "volume-created volume-resized volume-durability-changed volume-deleted" ] ||
  fail "events out of order or missing: $types"
stop_spd2
wait "$events_pid" || fail "the event watcher did not end cleanly at SIGTERM"
grep -c '"type"' "$T/events" | grep -q '^4$' || fail "watcher saw: $(cat "$T/events")"
[ ! -e "$T/data/control.sock" ] || fail "control socket left behind"

# A byte changed in the log: verification names the entry and exits 1; the daemon still serves
# data, refuses mutating calls, and says why.
expect 0 audit verify --dir "$T/data/audit" --anchor "$head_line"
/usr/bin/python3 -c "
p = '$T/data/audit/audit.log'
b = bytearray(open(p, 'rb').read())
lines = b.split(b'\\n')
off = len(lines[0]) + 1 + 40  # inside entry 2
b[off] ^= 0x01
open(p, 'wb').write(bytes(b))"
expect 1 audit verify --dir "$T/data/audit"
grep -q "DAMAGED at entry 2" "$T/out" || fail "verify: $(cat "$T/out")"
start_spd2 --control-batch-threads 0
[ "$(policies | grep -c '^3$')" = 0 ] || fail "--control-batch-threads 0 left batch threads"
expect 7 volume create after --size 1G
grep -q "audit log cannot be written" "$T/err" || fail "$(cat "$T/err")"
expect 0 volume list
expect 1 audit verify
grep -q "entry 2" "$T/out" || fail "verify through the daemon: $(cat "$T/out")"
stop_spd2
