#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# Moving a copy of a replicated volume to another node (docs/replication.md, "Moving a copy"):
# three spd2 nodes on loopback and a real etcd. A 2-way volume on a and X; X goes down (as if
# for good); `spdctl replica move` asked of the third node Y puts the copy on Y, which the
# primary copies whole while writes go on, and Y holds every acknowledged write. The refusals.
# A delete of the volume then no longer waits for X, and X, when it is back, deletes its copy
# and the copy's state (its key under /spd/v1/moved/ says so), then the key goes.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

# --- A 2-way volume, created on a: a and one more node, X; the third is Y.
VOL=mv
three_nodes_two_way
deleting_mx() { [ "$(copies a)" = "a=deleted $P=deleting $Q=deleting" ]; }
bc_write a 11 "$E1" 4096 2000

# --- X goes down; writes go on without it.
kill -TERM "${PID[$X]}"
wait "${PID[$X]}" || fail "node $X exited $? on SIGTERM"
bc_write a 12 "$E1" 4096 1000

# --- Refusals: the primary cannot move (exit 5), nor onto a copy (5); a node with no copy, an
# unknown node, an unknown volume (3); the same node twice (8). Nothing changed by them.
expect 5 --socket "${DIR[$Y]}/control.sock" replica move mv --from a --to "$Y"
grep -q "is the primary" "$T/err" || fail "move of the primary: $(cat "$T/err")"
expect 5 --socket "${DIR[$Y]}/control.sock" replica move mv --from "$X" --to a
grep -q "holds a copy" "$T/err" || fail "move onto a copy: $(cat "$T/err")"
expect 3 --socket "${DIR[$Y]}/control.sock" replica move mv --from "$Y" --to "$X"
grep -q "holds no copy" "$T/err" || fail "move of no copy: $(cat "$T/err")"
expect 3 --socket "${DIR[$Y]}/control.sock" replica move mv --from "$X" --to nosuch
grep -q "no node nosuch" "$T/err" || fail "move to an unknown node: $(cat "$T/err")"
expect 3 --socket "${DIR[$Y]}/control.sock" replica move nosuch --from "$X" --to "$Y"
expect 8 --socket "${DIR[$Y]}/control.sock" replica move mv --from "$X" --to "$X"
[ "$(placed)" = "a $X" ] || fail "a refused move changed the placement: $(placed)"

# --- The move, asked of Y: X, down and out of sync, leaves at once; Y gets the whole volume
# while writes go on, then is in sync.
ctl "$Y" replica move mv --from "$X" --to "$Y"
[ "$(placed)" = "a $Y" ] || fail "placement after the move: $(placed)"
bc_write a 13 "$E1" 4096 1000
wait_for "a and $Y in sync" 30 in_sync_on "$Y"
$PY "$BC" verify --uri "$(nbd_uri "$Y")" --state "$T/bc.json" --min-durable 500 >"$T/v1.log" ||
  { cat "$T/v1.log"; fail "the new copy on $Y lacks acknowledged writes"; }
[ "$(metric "$Y" spd_replication_moves_total)" = 1 ] || fail "moves_total on $Y"
[ "$(metric a spd_replication_links_added_total)" = 1 ] || fail "links_added_total on a"
[ "$(metric a spd_replication_links_removed_total)" = 1 ] || fail "links_removed_total on a"
[ "$(metric a spd_replication_placement_changes_total)" = 1 ] || fail "placement_changes on a"
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix /spd/v1/moved/ --keys-only >"$T/moved"
grep -q "^/spd/v1/moved/$X/mv$" "$T/moved" || fail "no moved key for $X: $(cat "$T/moved")"
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix "/spd/v1/volumes/mv/replicas/" --keys-only >"$T/st"
! grep -q "/replicas/$X$" "$T/st" || fail "a state of $X stayed: $(cat "$T/st")"

# --- A delete no longer waits for X, which is still down.
ctl a volume delete mv --force
no_record() {
  local rc=0
  "$SPDCTL" --socket "${DIR[a]}/control.sock" replica list mv >/dev/null 2>&1 || rc=$?
  [ "$rc" -eq 3 ]
}
wait_for "the volume's record gone with $X down" 20 no_record

# --- X is back: it deletes its copy and the copy's state, then its moved key goes; it never
# served the volume again.
ls "${DIR[$X]}/replication/" >"$T/files"
grep -q "^mv\.spec$" "$T/files" || fail "$X's state went while it was down: $(cat "$T/files")"
start_repl_node "$X"
dropped() {
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix /spd/v1/moved/ --keys-only >"$T/moved" &&
    ! grep -q . "$T/moved"
}
wait_for "$X deleted its copy and its key" 20 dropped
ctl "$X" volume list -o json
[ "$(json '[v["name"] for v in d["items"]].count("mv")')" = 0 ] || fail "mv still on $X: $(cat "$T/out")"
ls "${DIR[$X]}/replication/" >"$T/files"
! grep -q "^mv\." "$T/files" || fail "replication state of mv left on $X: $(cat "$T/files")"
[ "$(metric "$X" spd_replication_copies_dropped_total)" = 1 ] || fail "copies_dropped on $X"

# --- A live move, both nodes up, under writes: the copy leaving, in sync, keeps counting until
# the new one is, then leaves and deletes itself; no write fails, and the new copy holds every
# acknowledged one.
VOL=mw
wait_registered a "three nodes registered again ($X restarted)"
ctl a volume create mw --size 64M --replicas 2 --durability sync
read -r _ Z <<<"$(placed)"
case "$Z" in b) W=c ;; c) W=b ;; *) fail "mw placed on: $(placed)" ;; esac
wait_for "a and $Z in sync" 15 in_sync_on "$Z"
read -r _ E2 <<<"$(primary_of a)"
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc2.json" --seed 21 --blocks 4096 --qd 16 \
  --ops 6000 --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "$E2" >"$T/w4.log" 2>&1 &
WRITER=$!
sleep 1
ctl a replica move mw --from "$Z" --to "$W"
kill -0 "$WRITER" 2>/dev/null || fail "the writes ended before the move (too few to span it)"
rc=0
wait "$WRITER" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/w4.log"; fail "writes across the live move failed ($rc)"; }
wait_for "a and $W in sync" 30 in_sync_on "$W"
# A live move: Z, in sync, kept counting until W was in sync, then left (a's events, in order).
rc=0
timeout 3 "$SPDCTL" --socket "${DIR[a]}/control.sock" events --since 1 -o json >"$T/ev" || rc=$?
[ "$rc" -eq 124 ] || fail "events: exit $rc"
grep -q "the copy on $Z moves to $W (it keeps counting until the new copy is in sync)" "$T/ev" ||
  fail "no live move event: $(grep mw "$T/ev")"
synced=$(grep -n "copy on $W: in-sync" "$T/ev" | tail -1 | cut -d: -f1)
done_at=$(grep -n "the move is done: the copy on $W is in sync, the copy on $Z leaves" "$T/ev" |
  cut -d: -f1)
[ -n "$synced" ] && [ -n "$done_at" ] && [ "$synced" -lt "$done_at" ] ||
  fail "the copy on $Z left before $W was in sync: $(grep mw "$T/ev")"
[ "$(metric a spd_replication_moves_finished_total)" = 1 ] || fail "moves_finished on a"
$PY "$BC" verify --uri "$(nbd_uri "$W")" --state "$T/bc2.json" --min-durable 500 >"$T/v2.log" ||
  { cat "$T/v2.log"; fail "the copy moved live to $W lacks acknowledged writes"; }
wait_for "$Z deleted its copy of mw and its key" 20 dropped
ctl "$Z" volume list -o json
[ "$(json '[v["name"] for v in d["items"]].count("mw")')" = 0 ] || fail "mw still on $Z"

# --- A live move that cannot finish (the new copy's node stopped before its copy), then a
# delete with the copy leaving down: the delete waits for the new copy's node (placed), not for
# the leaving one, whose key the delete writes; each deletes its copy when it is back.
VOL=mx
ctl a volume create mx --size 64M --replicas 2 --durability sync
read -r _ P <<<"$(placed)"
case "$P" in b) Q=c ;; c) Q=b ;; *) fail "mx placed on: $(placed)" ;; esac
wait_for "a and $P in sync" 15 in_sync_on "$P"
kill -STOP "${PID[$Q]}"  # its lease still runs for a while: the moves take it
# Called off at once and asked again: the cancel's key for Q (Q, stopped, has not deleted its
# copy by it) goes with the second move, which places Q again.
ctl a replica move mx --from "$P" --to "$Q"
ctl a replica move mx --cancel -o json
[ "$(json '" ".join(c["node"] for c in d["items"][0]["copies"])')" = "a $P" ] ||
  fail "placement after the cancel: $(cat "$T/out")"
ctl a replica move mx --from "$P" --to "$Q"
[ "$(placed)" = "a $P $Q" ] || fail "a live move's placement: $(placed)"
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix /spd/v1/moved/ \
  --keys-only >"$T/moved"
! grep -q "^/spd/v1/moved/$Q/mx$" "$T/moved" || fail "$Q placed again keeps its key: $(cat "$T/moved")"
ctl a replica list mx -o json
json '[c["detail"] for c in d["items"][0]["copies"] if c["node"] == "'"$P"'"][0]' >"$T/detail"
grep -q "^leaving" "$T/detail" || fail "the leaving copy's detail: $(cat "$T/detail")"
expect 5 --socket "${DIR[a]}/control.sock" replica move mx --from "$P" --to "$Q"
grep -q "under way" "$T/err" || fail "a second move: $(cat "$T/err")"
expect 5 --socket "${DIR[a]}/control.sock" replica move mx --cancel --to a
grep -q "under way is $P to $Q" "$T/err" || fail "a cancel of another move: $(cat "$T/err")"
expect 2 --socket "${DIR[a]}/control.sock" replica move mx --from "$P"
kill -KILL "${PID[$Q]}"
rc=0
wait "${PID[$Q]}" || rc=$?
[ "$rc" -eq 137 ] || fail "node $Q, stopped and killed, exited $rc"
kill -TERM "${PID[$P]}"
wait "${PID[$P]}" || fail "node $P exited $? on SIGTERM"
ctl a volume delete mx --force
VOL=mx wait_for "a deleted its copy, $Q deleting" 10 deleting_mx
start_repl_node "$Q"
mx_gone() {
  local rc=0
  "$SPDCTL" --socket "${DIR[a]}/control.sock" replica list mx >/dev/null 2>&1 || rc=$?
  [ "$rc" -eq 3 ]
}
wait_for "the record of mx gone with $P, leaving, still down" 20 mx_gone
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix /spd/v1/moved/ \
  --keys-only >"$T/moved"
grep -q "^/spd/v1/moved/$P/mx$" "$T/moved" || fail "no moved key for $P: $(cat "$T/moved")"
start_repl_node "$P"
wait_for "$P deleted its copy of mx and its key" 20 dropped
ls "${DIR[$P]}/replication/" >"$T/files"
! grep -q "^mx\." "$T/files" || fail "replication state of mx left on $P: $(cat "$T/files")"

# --- A live move called off: its new node stopped before its copy, the cancel (asked of that
# node's peer, not the primary) takes it out of the placement while writes go on; the old copy
# never stopped counting and holds every acknowledged write; the new node, back, never serves
# the volume and its key goes. A second cancel finds no move.
VOL=my
wait_registered a "three nodes registered again ($P and $Q restarted), as a sees it"
ctl a volume create my --size 64M --replicas 2 --durability sync
read -r _ R <<<"$(placed)"
case "$R" in b) S=c ;; c) S=b ;; *) fail "my placed on: $(placed)" ;; esac
wait_registered "$R" "three nodes registered again, as $R sees it"
wait_for "a and $R in sync" 15 in_sync_on "$R"
read -r _ E3 <<<"$(primary_of a)"
removed0=$(metric a spd_replication_links_removed_total)
kill -STOP "${PID[$S]}"
ctl "$R" replica move my --from "$R" --to "$S"
[ "$(placed)" = "a $R $S" ] || fail "my's live move: $(placed)"
ctl "$R" replica move my --cancel --from "$R" --to "$S"
[ "$(placed)" = "a $R" ] || fail "placement after the cancel: $(placed)"
ctl a replica list my -o json
[ "$(json '[c["detail"] for c in d["items"][0]["copies"] if c["node"] == "'"$R"'"][0]')" = "" ] ||
  fail "the copy staying still leaves: $(cat "$T/out")"
expect 5 --socket "${DIR[a]}/control.sock" replica move my --cancel
grep -q "no move of 'my' is under way" "$T/err" || fail "a second cancel: $(cat "$T/err")"
[ "$(metric "$R" spd_replication_moves_cancelled_total)" = 1 ] || fail "moves_cancelled on $R"
left_link() { [ "$(metric a spd_replication_links_removed_total)" = $((removed0 + 1)) ]; }
wait_for "a removed its link to $S" 10 left_link
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc3.json" --seed 31 --blocks 4096 --qd 16 \
  --ops 1000 --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "$E3" >"$T/w5.log" ||
  { cat "$T/w5.log"; fail "writes after the cancel failed"; }
in_sync_on "$R" || fail "after the cancel: $(copies a)"
$PY "$BC" verify --uri "$(nbd_uri "$R")" --state "$T/bc3.json" --min-durable 200 >"$T/v3.log" ||
  { cat "$T/v3.log"; fail "the copy that stayed on $R lacks acknowledged writes"; }
kill -CONT "${PID[$S]}"
wait_for "$S done with its key of my" 30 dropped
ctl "$S" volume list -o json
[ "$(json '[v["name"] for v in d["items"]].count("my")')" = 0 ] || fail "my still on $S"
echo "replication move: OK ($X -> $Y with $X down; the delete did not wait for $X; $X dropped its copy; $Z -> $W live under writes; a delete during a live move; a live move called off)"
