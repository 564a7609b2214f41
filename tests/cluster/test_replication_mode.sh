#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# A replicated volume made asynchronous and synchronous again at run time (docs/replication.md,
# "Synchronous or asynchronous at run time"): three spd2 nodes on loopback and a real etcd, the
# replication messages with an injected 150 ms round trip (a lag that lasts: with the record
# made synchronous before the lag drained, a mutant, the kill below loses acknowledged writes,
# 2 runs of 2). A synchronous
# 2-way volume, under QD16 writes with FUA and FLUSH, is made asynchronous, asked of its replica:
# the primary completes writes ahead of their acks and the copies become durable at FLUSH; no
# write fails. Made synchronous again under writes, asked of the replica: the call returns once
# the record says so, and the primary is killed with -9 at once: the replica takes the volume
# with every write acknowledged before, in either mode (the record said synchronous only once
# the lag was drained). Then the same with the primary killed while it drains (the new primary
# records it). Refused: async for a local volume (exit 8).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

repl_cluster_init
for n in a b c; do start_repl_node $n --replication-inject-rtt-us 150000; done
wait_registered
VOL=mv
ctl a volume create mv --size 64M --replicas 2 --durability sync
read -r _ X <<<"$(placed)"
wait_for "a and $X in sync" 15 in_sync_on "$X"
read -r P1 E1 <<<"$(primary_of a)"
[ "$P1" = a ] || fail "mv's primary: $P1"
# spec_durability [NODE]: mv's durability in the record, as NODE (X) sees it.
spec_durability() { ctl "${1:-$X}" replica list mv -o json; json 'd["items"][0]["durability"]'; }
copy_durability() { ctl "$1" volume get mv -o json; json 'd["durability"]'; }

ctl a volume create lv --size 16M
expect 8 --socket "${DIR[a]}/control.sock" volume set-durability lv async
grep -q "async is for replicated volumes" "$T/err" || fail "async for lv: $(cat "$T/err")"

# writer SEED SECONDS [NODE EPOCH]: QD16 writes with FUA and FLUSH through NODE (a) for
# SECONDS, in the background (WPID).
writer() {
  $PY "$BC" write --uri "$(nbd_uri "${3:-a}")" --state "$T/bc.json" --seed "$1" --blocks 8192 \
    --qd 16 --ops 1000000 --seconds "$2" --flush-every 32 --fua-ratio 0.2 --epoch "${4:-$E1}" \
    >"$T/w$1.log" 2>&1 &
  WPID=$!
}

# --- To asynchronous, asked of X, under writes.
bc_write a 1 "$E1" 8192 500
writer 2 8
sleep 1
shadowed0=$(metric a spd_replication_async_shadowed_total)
ctl "$X" volume set-durability mv async
[ "$(spec_durability)" = async ] || fail "mv's record after async: $(spec_durability)"
ahead() { [ "$(metric a spd_replication_async_shadowed_total)" -gt "$shadowed0" ]; }
wait_for "a completing writes ahead of their acks" 20 ahead
flush_copies() { [ "$(copy_durability a)" = flush ] && [ "$(copy_durability "$X")" = flush ]; }
wait_for "the copies durable at FLUSH" 10 flush_copies
rc=0
wait "$WPID" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/w2.log"; fail "writes while mv became asynchronous failed ($rc)"; }
grep -q "replication: mv: the primary completes writes ahead of their acks now" "$T/a.log" ||
  fail "a did not log the change"

# --- Synchronous again (sync), asked of X, under writes; a killed at once after the answer.
writer 3 30
sleep 2
lag=$(metric a spd_replication_async_lag_bytes)
ctl "$X" volume set-durability mv sync
kill -KILL "${PID[a]}"
[ "$(spec_durability)" = sync ] || fail "mv's record after sync: $(spec_durability)"
rc=0
wait "$WPID" || rc=$?
[ "$rc" -eq 3 ] || { cat "$T/w3.log"; fail "the writer exited $rc, not cut by the kill"; }
echo "lag when asked: $lag bytes; $(grep -o 'acknowledged durable in this run: [^;]*' "$T/w3.log")"
x_primary() { [ "$(primary_of "$X" | cut -d' ' -f1)" = "$X" ]; }
wait_for "$X the primary of mv" 20 x_primary
$PY "$BC" verify --uri "$(nbd_uri "$X")" --state "$T/bc.json" --min-durable 1000 >"$T/v1.log" ||
  { cat "$T/v1.log"; fail "$X lacks writes acknowledged before mv became synchronous"; }
grep -q "replication: mv: synchronous now (durability sync)" "$T/a.log" ||
  fail "a did not record mv synchronous"
[ "$(copy_durability "$X")" = sync ] || fail "$X's copy: $(copy_durability "$X")"

# --- Synchronous again while the primary dies mid-drain. a back and resynced; mv asynchronous
# again (asked of X, its primary now) under writes through X; a stopped (SIGSTOP: X's lag
# cannot drain, and below its 5 s ack timeout X keeps a in sync); sync asked of c (no copy) in
# the background; once X completes writes with their acks again (draining), X killed with -9
# and a resumed: a takes the volume by the asynchronous rules (the freshest), starts
# synchronous and records it itself, and the call answers then. What a holds is a
# FLUSH-consistent prefix of the writes (what X completed ahead of a's acks may be missing: the
# record still said asynchronous).
start_repl_node a --replication-inject-rtt-us 150000
wait_registered a "a registered again"
wait_for "a back in sync" 30 in_sync_on "$X"
read -r P2 E2 <<<"$(primary_of "$X")"
[ "$P2" = "$X" ] || fail "mv's primary after the kill: $P2"
ctl "$X" volume set-durability mv async
shadowed0=$(metric "$X" spd_replication_async_shadowed_total)
writer 4 40 "$X" "$E2"
ahead_x() { [ "$(metric "$X" spd_replication_async_shadowed_total)" -gt "$shadowed0" ]; }
wait_for "$X completing writes ahead of their acks" 20 ahead_x
sleep 1
kill -STOP "${PID[a]}"
alog=$(wc -l <"$T/a.log")
"$SPDCTL" --socket "${DIR[c]}/control.sock" volume set-durability mv sync >"$T/sd.out" 2>&1 &
SD=$!
draining() { grep -q "replication: mv: the primary completes writes with their acks again" "$T/$X.log"; }
wait_for "$X draining toward sync" 4 draining
kill -0 "$SD" 2>/dev/null || fail "the call answered before the lag drained: $(cat "$T/sd.out")"
kill -KILL "${PID[$X]}"
kill -CONT "${PID[a]}"
rc=0
wait "$WPID" || rc=$?
[ "$rc" -eq 3 ] || { cat "$T/w4.log"; fail "the writer through $X exited $rc, not cut by the kill"; }
a_primary() { [ "$(primary_of a | cut -d' ' -f1)" = a ]; }
wait_for "a the primary of mv" 20 a_primary
rc=0
wait "$SD" || rc=$?
[ "$rc" -eq 0 ] || fail "set-durability sync across the failover exited $rc: $(cat "$T/sd.out")"
[ "$(spec_durability a)" = sync ] || fail "mv's record after the failover: $(spec_durability a)"
tail -n "+$((alog + 1))" "$T/a.log" | grep -q "replication: mv: synchronous now (durability sync)" ||
  fail "a, the new primary, did not record mv synchronous"
[ "$(copy_durability a)" = sync ] || fail "a's copy: $(copy_durability a)"
$PY "$BC" verify --uri "$(nbd_uri a)" --state "$T/bc.json" --prefix >"$T/v2.log" ||
  { cat "$T/v2.log"; fail "a is no FLUSH-consistent prefix of the writes"; }
echo "failover mid-drain: $(grep -o "FLUSH [0-9]*\.\.[0-9]* of [0-9]*" "$T/v2.log")"

echo "replication mode: OK (sync -> async under writes, writes completed ahead of acks; async -> sync under writes with a lag, the primary killed at once: no acknowledged write lost; the primary killed mid-drain: the new one recorded sync, the call answered)"
