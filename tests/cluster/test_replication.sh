#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# Synchronous replication end to end (docs/replication.md): three spd2 nodes on loopback and a
# real etcd. A volume created with --replicas 3 gets a copy on every node, a primary elected in
# etcd, and every write acknowledged through the primary's NBD export is on every copy
# (tests/cluster/blockcheck.py verifies it through each node's own export). Replicas refuse
# local writes. When the primary is killed, an in-sync copy is promoted once its lease expires,
# with a higher epoch, and holds every acknowledged write; the other survivor and, when it
# returns, the old primary are resynced from the new one and hold every acknowledged write.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

repl_cluster_init
start_node() { start_repl_node "$1"; }

for n in a b c; do start_node $n; done
wait_registered

# --- Create on a: a copy on each node, a the primary, every copy in sync.
ctl a volume create rv --size 64M --replicas 3 --durability sync
# A replicated volume cannot be read-only (its replicas take the primary's writes).
expect 8 --socket "${DIR[a]}/control.sock" volume create ro --size 16M --replicas 2 --read-only
grep -q "cannot be created read-only" "$T/err" || fail "read-only refusal: $(cat "$T/err")"
all_in_sync() { [ "$(copies "$1")" = "a=in_sync b=in_sync c=in_sync" ]; }
wait_for "every copy in sync" 15 all_in_sync a
read -r P1 E1 <<<"$(primary_of a)"
[ "$P1" = a ] || fail "primary is '$P1', wanted a"
[ "$E1" -gt 0 ] || fail "no epoch"
for n in b c; do
  nbdinfo --size "$(nbd_uri $n)" >"$T/size" || fail "no local copy on $n"
  [ "$(cat "$T/size")" = 67108864 ] || fail "copy on $n has size $(cat "$T/size")"
  # Every copy has the durability asked for.
  ctl $n volume get rv -o json
  [ "$(json 'd["durability"]')" = sync ] || fail "copy on $n: durability $(cat "$T/out")"
  # ... and shows its set: every node sees a as the primary and every copy in sync.
  [ "$(json 'd["replication"]["primary"] + " " + str(d["replication"]["epoch"]) + " " + " ".join(c["node"] + "=" + c["state"] for c in d["replication"]["copies"])')" = \
    "a $E1 a=in_sync b=in_sync c=in_sync" ] || fail "copy on $n: replication $(cat "$T/out")"
done
ctl c volume get rv
grep -q "^REPLICATION: sync, 3 copies, primary a (epoch $E1); a=in_sync b=in_sync c=in_sync$" "$T/out" ||
  fail "volume get on c: $(cat "$T/out")"
# A local volume shows none.
ctl a volume get vol0 -o json
[ "$(json '"replication" in d')" = False ] || fail "vol0 shows a replication: $(cat "$T/out")"
# Each of spd2's threads says what it is (top -H, perf, gdb): the primary's, by name.
comms=$(cat /proc/"${PID[a]}"/task/*/comm | sort -u | tr '\n' ' ')
want="spd-cluster spd-lease spd-replication spd-repl-marks spd-etcd-watch spd-ctl-worker spd-health"
[ "$(nproc)" -lt 2 ] || want+=" spd-reactor1"
for w in $want; do
  [[ " $comms" == *" $w "* ]] || fail "no thread named $w in node a (threads: $comms)"
done
# The list shows the same: a column more, "-" for the local volume.
ctl b volume list -o json
[ "$(json '" ".join(v["name"] + "=" + (v["replication"]["primary"] if "replication" in v else "-") for v in d["items"])')" = \
  "vol0=- rv=a" ] || fail "volume list on b: $(cat "$T/out")"
ctl b volume list
grep -q "^vol0 .*  -$" "$T/out" && grep -q "^rv .*  sync, 3 copies, primary a$" "$T/out" ||
  fail "volume list on b: $(cat "$T/out")"
ctl a replica list
grep -q "^rv *a *primary *sync *in_sync" "$T/out" || fail "table: $(cat "$T/out")"

# --- Writes through the primary, FUA and FLUSH among them, are on every copy.
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 7 --blocks 4096 --qd 16 \
  --ops 3000 --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "$E1" >"$T/w1.log" ||
  { cat "$T/w1.log"; fail "writes through the primary failed"; }
for n in a b c; do
  $PY "$BC" verify --uri "$(nbd_uri $n)" --state "$T/bc.json" --min-durable 500 >"$T/v.log" ||
    { cat "$T/v.log"; fail "copy on $n lacks acknowledged writes"; }
done

# --- Durability changes on every copy, asked of any node (here a replica, then the primary);
# an asynchronous volume's copies keep flush.
durability_everywhere() {
  local n
  for n in a b c; do
    ctl $n volume get rv -o json
    [ "$(json 'd["durability"]')" = "$1" ] || return 1
  done
}
ctl b volume set-durability rv flush
wait_for "durability flush on every copy" 5 durability_everywhere flush
ctl a volume set-durability rv sync
wait_for "durability sync on every copy" 5 durability_everywhere sync
ctl a volume create av --size 16M --replicas 2 --durability async
# set-durability makes an asynchronous volume synchronous (test_replication_mode.sh); a policy's
# durability does not.
expect 5 --socket "${DIR[a]}/control.sock" policy set av --durability sync
grep -q "asynchronous replicated volume" "$T/err" || fail "async policy durability: $(cat "$T/err")"
ctl a volume set-durability av sync
ctl a replica list av -o json
[ "$(json 'd["items"][0]["durability"]')" = sync ] || fail "av after set-durability sync: $(cat "$T/out")"

# --- A delete asked of a replica without --force is refused (the clients are on the primary):
# once, a delete answered "deleted" and the replication re-created the primary's copy empty,
# still "in sync". (The delete in the cluster is tested at the end.)
expect 5 --socket "${DIR[b]}/control.sock" volume delete rv
grep -q "the primary of 'rv' is node a" "$T/err" || fail "delete on b: $(cat "$T/err")"
for n in a b c; do
  $PY "$BC" verify --uri "$(nbd_uri $n)" --state "$T/bc.json" --min-durable 500 >"$T/v.log" ||
    { cat "$T/v.log"; fail "copy on $n lacks acknowledged writes after the refused deletes"; }
done

# --- A replica refuses local writes (it would diverge from the primary).
rc=0
$PY -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
try:
    h.pwrite(b'x' * 4096, 0)
except nbd.Error as e:
    print('refused:', e); sys.exit(0)
sys.exit(1)" "$(nbd_uri b)" >"$T/ro.log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/ro.log"; fail "a replica took a local write"; }

# --- The primary dies under writes: an in-sync copy takes over with a higher epoch, holding
# every write acknowledged before, and the writes go on there.
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 8 --qd 16 --ops 20000 \
  --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "$E1" --kill-pid "${PID[a]}" \
  --kill-after-ops 1500 >"$T/w2.log" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || { cat "$T/w2.log"; fail "the write run did not end with the lost connection ($rc)"; }
wait "${PID[a]}" 2>/dev/null || rc=$?
new_primary() { read -r P2 E2 <<<"$(primary_of b)"; [ -n "$P2" ] && [ "$P2" != - ] && [ "$P2" != a ]; }
wait_for "a new primary" $((TTL + 12)) new_primary
[ "$E2" -gt "$E1" ] || fail "the new epoch $E2 is not above $E1"
$PY "$BC" verify --uri "$(nbd_uri "$P2")" --state "$T/bc.json" >"$T/v2.log" ||
  { cat "$T/v2.log"; fail "the new primary $P2 lost acknowledged writes"; }
$PY "$BC" write --uri "$(nbd_uri "$P2")" --state "$T/bc.json" --seed 9 --qd 16 --ops 1000 \
  --seconds 60 --flush-every 32 --epoch "$E2" >"$T/w3.log" ||
  { cat "$T/w3.log"; fail "writes through the new primary failed"; }
$PY "$BC" verify --uri "$(nbd_uri "$P2")" --state "$T/bc.json" >"$T/v3.log" ||
  { cat "$T/v3.log"; fail "the new primary lost its own acknowledged writes"; }
OTHER=b
[ "$P2" = b ] && OTHER=c
# The other survivor may hold writes the dead primary had in flight that the new primary lacks
# (or lack some it has): it is resynced from the new primary while writes go on, then in sync,
# and holds every write acknowledged before and after the failover. The dead node's copy is out
# of sync.
survivors_in_sync() {
  local c
  c=$(copies "$P2")
  [[ "$c" == *"a=out_of_sync"* && "$c" == *"$P2=in_sync"* && "$c" == *"$OTHER=in_sync"* ]]
}
wait_for "the other survivor resynced, the dead node out of sync" 30 survivors_in_sync
# Both survivors were in sync with the dead primary: only the units either applied of its last
# writes (its in-flight window), plus what the new primary wrote meanwhile, were copied. A
# whole-volume copy counts 64 MiB (16 MiB of blocks written, the rest as discards).
units=$(metric "$P2" spd_replication_failover_resync_units_total)
copied=$(metric "$P2" spd_replication_resync_bytes_total)
holes=$(metric "$P2" spd_replication_resync_discard_bytes_total)
[ "$units" != missing ] && [ "$units" -gt 0 ] || fail "no failover resync units on $P2 ($units)"
[ $((copied + holes)) -lt $((32 << 20)) ] ||
  fail "the survivor got $((copied + holes)) bytes resynced: the whole volume, not the window"
echo "failover resync to $OTHER: $units units in flight, $copied bytes copied, $holes discarded"
$PY "$BC" verify --uri "$(nbd_uri $OTHER)" --state "$T/bc.json" >"$T/v4.log" ||
  { cat "$T/v4.log"; fail "the resynced survivor $OTHER lacks acknowledged writes"; }
# The new primary's event stream says what happened (the watch is cut after 3 s).
rc=0
timeout 3 "$SPDCTL" --socket "${DIR[$P2]}/control.sock" events --since 1 -o json >"$T/ev" || rc=$?
[ "$rc" -eq 124 ] || fail "events: exit $rc"
grep -q "\"primary-changed\".*node $P2 is the primary (epoch $E2)" "$T/ev" ||
  fail "no primary-changed event: $(cat "$T/ev")"
grep -q "\"replica-state\".*copy on $OTHER: resyncing" "$T/ev" || fail "no resyncing event: $(cat "$T/ev")"
grep -q "\"replica-state\".*copy on $OTHER: in-sync" "$T/ev" || fail "no in-sync event: $(cat "$T/ev")"
$PY "$BC" write --uri "$(nbd_uri "$P2")" --state "$T/bc.json" --seed 10 --qd 16 --ops 500 \
  --seconds 60 --flush-every 16 --epoch "$E2" >"$T/w4.log" ||
  { cat "$T/w4.log"; fail "writes through the new primary failed"; }
$PY "$BC" verify --uri "$(nbd_uri $OTHER)" --state "$T/bc.json" >"$T/v5.log" ||
  { cat "$T/v5.log"; fail "the resynced copy on $OTHER lacks acknowledged writes"; }

# --- Resize in the cluster while a is down, asked of the replica: the primary grows its replica
# in sync first, then its own copy, and a write past the old end is on both; a shrink is
# refused. a's copy grows when it returns (its hello names the new size) and gets that write.
ctl $OTHER volume resize rv --size 96M -o json
[ "$(json 'd["sizeBytes"]')" = 100663296 ] || fail "resize answered $(cat "$T/out")"
sized() { nbdinfo --size "$(nbd_uri "$1")" >"$T/size" && [ "$(cat "$T/size")" = "$2" ]; }
for n in "$P2" $OTHER; do sized "$n" 100663296 || fail "copy on $n is $(cat "$T/size") bytes"; done
expect 5 --socket "${DIR[$P2]}/control.sock" volume resize rv --size 64M
grep -q "does not shrink" "$T/err" || fail "shrink: $(cat "$T/err")"
# A size no pool takes is refused before it is recorded (else every node would fail to grow).
expect 8 --socket "${DIR[$OTHER]}/control.sock" volume resize rv --size 1000000T
# So is a size the asked node's pool bounds refuse (--pool-map-memory-max, 1G: a 2P copy's chunk
# map would take 8 GiB), and a replicated create of such a size.
expect 9 --socket "${DIR[$OTHER]}/control.sock" volume resize rv --size 2P
grep -q "RESOURCE_EXHAUSTED: resize volume rv: .*--pool-map-memory-max" "$T/err" ||
  fail "2P resize: $(cat "$T/err")"
expect 9 --socket "${DIR[$OTHER]}/control.sock" volume create rhuge --size 2P --replicas 2
ctl "$P2" replica list -o json
[ "$(json '[v["name"] for v in d["items"] if v["name"] == "rhuge"]')" = "[]" ] ||
  fail "a refused create recorded: $(cat "$T/out")"
ctl "$P2" replica list rv -o json
[ "$(json 'd["items"][0]["sizeBytes"]')" = 100663296 ] || fail "recorded size: $(cat "$T/out")"
past_end() {  # $1: URI; write: the block 64 MiB + 8 KiB in, with FUA, else read and compare
  $PY -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
want = b'grown!' * 600 + b'.' * 496
if sys.argv[2] == 'write':
    h.pwrite(want, (64 << 20) + 8192, nbd.CMD_FLAG_FUA)
elif h.pread(4096, (64 << 20) + 8192) != want:
    sys.exit('the block past the old end differs')" "$1" "$2"
}
past_end "$(nbd_uri "$P2")" write || fail "a write past the old end through the primary"
for n in "$P2" $OTHER; do past_end "$(nbd_uri "$n")" read || fail "copy on $n lacks it"; done
[ "$(metric "$P2" spd_replication_copies_grown_total)" = 1 ] || fail "grown on $P2: not counted"
[ "$(metric $OTHER spd_replica_grows_total)" = 1 ] || fail "grown on $OTHER: not counted"

# --- The old primary returns: it is no primary (fenced: the new epoch is above its own), it
# is resynced from the new primary and then holds every acknowledged write, and writes on it
# fail.
start_node a
all_in_sync_now() { [ "$(copies "$P2")" = "a=in_sync b=in_sync c=in_sync" ]; }
all_in_sync_now_a() { [ "$(copies a)" = "a=in_sync b=in_sync c=in_sync" ]; }
wait_for "the returning node resynced" 30 all_in_sync_now
read -r P3 E3 <<<"$(primary_of a)"
[ "$P3" = "$P2" ] && [ "$E3" = "$E2" ] || fail "after a returned: primary '$P3' epoch $E3"
$PY "$BC" verify --uri "$(nbd_uri a)" --state "$T/bc.json" >"$T/v6.log" ||
  { cat "$T/v6.log"; fail "the resynced old primary lacks acknowledged writes"; }
sized a 100663296 || fail "the returning copy on a is $(cat "$T/size") bytes"
past_end "$(nbd_uri a)" read || fail "the returning copy on a lacks the write past the old end"
rc=0
$PY -c "
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
try:
    h.pwrite(b'x' * 4096, 0)
except nbd.Error as e:
    sys.exit(0)
sys.exit(1)" "$(nbd_uri a)" >"$T/ro2.log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || fail "the deposed primary took a local write"

# --- Manual promote: a (in sync again) takes the volume back; the old primary hands it over.
expect 3 --socket "${DIR[a]}/control.sock" replica promote nope
ctl a replica promote rv -o json
read -r P4 E4 <<<"$(primary_of a)"
[ "$P4" = a ] && [ "$E4" -gt "$E2" ] || fail "after promote: primary '$P4' epoch $E4 (was $E2)"
$PY "$BC" verify --uri "$(nbd_uri a)" --state "$T/bc.json" >"$T/v7.log" ||
  { cat "$T/v7.log"; fail "the promoted copy lacks acknowledged writes"; }
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 11 --qd 16 --ops 500 \
  --seconds 60 --flush-every 16 --epoch "$E4" >"$T/w5.log" ||
  { cat "$T/w5.log"; fail "writes through the promoted primary failed"; }
wait_for "every copy in sync after the promote" 30 all_in_sync_now_a
for n in b c; do
  $PY "$BC" verify --uri "$(nbd_uri $n)" --state "$T/bc.json" >"$T/v8.log" ||
    { cat "$T/v8.log"; fail "copy on $n lacks the promoted primary's writes"; }
done

# --- Manual demote, asked of the primary: refused on a replica, for a node with no copy and for
# the primary itself; then a hands the volume to c, which holds every acknowledged write.
expect 5 --socket "${DIR[b]}/control.sock" replica demote rv
expect 3 --socket "${DIR[a]}/control.sock" replica demote rv --to nope
expect 5 --socket "${DIR[a]}/control.sock" replica demote rv --to a
ctl a replica demote rv --to c -o json
read -r P5 E5 <<<"$(primary_of a)"
[ "$P5" = c ] && [ "$E5" -gt "$E4" ] || fail "after demote: primary '$P5' epoch $E5 (was a, $E4)"
$PY "$BC" verify --uri "$(nbd_uri c)" --state "$T/bc.json" >"$T/v9.log" ||
  { cat "$T/v9.log"; fail "the copy a handed the volume to lacks acknowledged writes"; }
$PY "$BC" write --uri "$(nbd_uri c)" --state "$T/bc.json" --seed 12 --qd 16 --ops 300 \
  --seconds 60 --flush-every 16 --epoch "$E5" >"$T/w6.log" ||
  { cat "$T/w6.log"; fail "writes through the new primary c failed"; }
all_in_sync_now_c() { [ "$(copies c)" = "a=in_sync b=in_sync c=in_sync" ]; }
wait_for "every copy in sync after the demote" 30 all_in_sync_now_c
$PY "$BC" verify --uri "$(nbd_uri a)" --state "$T/bc.json" >"$T/v10.log" ||
  { cat "$T/v10.log"; fail "the demoted a lacks the new primary's writes"; }

# --- Delete in the cluster, with node b down: refused on the primary while a client is
# connected, forced from a (the client is closed); the copies on a and c go at once, b's when it
# is back, then the volume's keys; meanwhile the name cannot be created again. Then it can,
# and the new volume is empty on every copy.
kill -TERM "${PID[b]}"
wait "${PID[b]}" || fail "node b exited $? on SIGTERM"
# A policy on c's copy goes with it (the delete is asked of a).
ctl c policy set rv --limit-iops 1000
# The client reads until its connection is closed (60 s at most).
$PY -c "
import nbd, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print('connected', flush=True)
for _ in range(600):
    try:
        h.pread(4096, 0)
    except nbd.Error as e:
        print('closed:', e); sys.exit(0)
    time.sleep(0.1)
sys.exit(1)" "$(nbd_uri c)" >"$T/holder.log" 2>&1 &
HOLDER=$!
holder_connected() { grep -q connected "$T/holder.log"; }
wait_for "a client connected to c" 10 holder_connected
expect 5 --socket "${DIR[c]}/control.sock" volume delete rv
grep -q "1 open user" "$T/err" || fail "unforced delete with a client: $(cat "$T/err")"
ctl a volume delete rv --force
rc=0
wait "$HOLDER" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/holder.log"; fail "the forced delete left c's client connected ($rc)"; }
gone_on() { ctl "$1" volume list -o json; [ "$(json '[v["name"] for v in d["items"]].count("rv")')" = 0 ]; }
gone_on a || fail "rv still listed on a after its delete: $(cat "$T/out")"
wait_for "the copy on c deleted" 10 gone_on c
deleting() { [ "$(copies a)" = "a=deleted b=deleting c=deleted" ]; }
wait_for "a and c deleted, b deleting" 10 deleting
ls "${DIR[a]}/replication/" "${DIR[c]}/replication/" >"$T/files"
! grep -q "^rv\." "$T/files" || fail "replication state of rv left: $(cat "$T/files")"
ls "${DIR[b]}/replication/" >"$T/files"
grep -q "^rv\.spec$" "$T/files" || fail "b's state went while it was down: $(cat "$T/files")"
expect 4 --socket "${DIR[a]}/control.sock" volume create rv --size 32M --replicas 3
grep -q "still being deleted; copies not deleted yet on: b" "$T/err" ||
  fail "create while deleting: $(cat "$T/err")"
start_node b
no_record() {
  local rc=0
  "$SPDCTL" --socket "${DIR[a]}/control.sock" replica list rv >/dev/null 2>&1 || rc=$?
  [ "$rc" -eq 3 ]
}
wait_for "b's copy deleted and the volume's record gone" 20 no_record
gone_on b || fail "rv still listed on b: $(cat "$T/out")"
ls "${DIR[b]}/replication/" >"$T/files"
! grep -q "^rv\." "$T/files" || fail "replication state of rv left on b: $(cat "$T/files")"
[ "$(metric a spd_replication_deletes_total)" = 1 ] || fail "deletes_total on a: $(metric a spd_replication_deletes_total)"
for n in a b c; do
  [ "$(metric $n spd_replication_copies_deleted_total)" = 1 ] ||
    fail "copies_deleted_total on $n: $(metric $n spd_replication_copies_deleted_total)"
done
ctl a volume create rv --size 32M --replicas 3
# Placed anew: a first, then the nodes holding the fewest replicated volumes (av is on b).
sorted_in_sync() { [ "$(copies a | tr ' ' '\n' | sort | tr '\n' ' ')" = "a=in_sync b=in_sync c=in_sync " ]; }
wait_for "the new rv in sync" 20 sorted_in_sync
ctl c policy get rv -o json
[ "$(json 'd["intent"]')" = "{}" ] || fail "the deleted copy's policy stayed on c: $(cat "$T/out")"
for n in a b c; do
  nbdcopy "$(nbd_uri $n)" - | cmp -s - <(head -c 33554432 /dev/zero) ||
    fail "the new rv on $n is not empty"
done
echo "replication: OK (epochs $E1 -> $E2 -> $E4 -> $E5, primary a -> $P2 -> a -> c; deleted and created again)"
