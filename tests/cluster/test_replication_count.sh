#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# Changing the number of copies of a replicated volume at run time (docs/replication.md,
# "Changing the number of copies"): three spd2 nodes on loopback and a real etcd. A 2-way volume
# on a and X gets a third copy (`spdctl volume set-replicas cv 3`, asked of X) under QD16 writes
# with FUA and FLUSH: no write fails, the new copy on Y is copied whole and counted once in sync,
# and holds every acknowledged write. Back to 2 copies: the last placed in-sync copy leaves at
# once (not the primary's), its node deletes it, and writes go on with the two left. Three again,
# X's node stopped under writes, down to 2: X's out-of-sync copy leaves, not Y's (the last
# placed), and X, back, deletes its copy. Three again, then two with --remove naming the copy to
# go (not the last placed); a copy removed and placed again at once is deleted when removed again.
# A volume policy's durability then reaches every copy.
# The refusals, each changing nothing. Each part fails with its guard removed (see the doc).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

VOL=cv
three_nodes_two_way
bc_write a 11 "$E1" 4096 1000

# --- Refusals: counts out of range (8), an unknown volume (3), a local volume (3); nothing
# changed by them.
expect 8 --socket "${DIR[$X]}/control.sock" volume set-replicas cv 1
grep -q "2..9" "$T/err" || fail "a count of 1: $(cat "$T/err")"
expect 8 --socket "${DIR[$X]}/control.sock" volume set-replicas cv 10
expect 5 --socket "${DIR[$X]}/control.sock" volume set-replicas cv 4
grep -q "1 more node(s) serve replicas; 4 asked" "$T/err" || fail "4 copies: $(cat "$T/err")"
expect 3 --socket "${DIR[$X]}/control.sock" volume set-replicas nosuch 3
[ "$(placed)" = "a $X" ] || fail "placement changed by a refusal: $(placed)"
# The same count: nothing to do, exit 0.
ctl "$X" volume set-replicas cv 2
[ "$(placed)" = "a $X" ] || fail "placement changed by the same count: $(placed)"

# --- A third copy under writes, asked of X (not the primary).
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 12 --blocks 4096 --qd 16 \
  --ops 6000 --seconds 90 --flush-every 32 --fua-ratio 0.2 --epoch "$E1" >"$T/w12.log" 2>&1 &
writer=$!
sleep 1
ctl "$X" volume set-replicas cv 3
[ "$(placed)" = "a $X $Y" ] || fail "placement after set-replicas 3: $(placed)"
# Every copy of a, X and Y in sync, in any order of placement.
three_in_sync() {
  local c
  c=$(copies a)
  [[ "$c" == *"a=in_sync"* && "$c" == *"$X=in_sync"* && "$c" == *"$Y=in_sync"* ]]
}
wait_for "three copies in sync" 60 three_in_sync
rc=0
wait "$writer" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/w12.log"; fail "writes while a copy was added failed ($rc)"; }
grep -q "cv: 2 copies now, 3 asked: new copies on $Y" "$T/$X.log" ||
  fail "X did not log the change: $(grep 'copies now' "$T/$X.log")"
[ "$(metric "$X" spd_replication_copies_added_total)" = 1 ] ||
  fail "copies added on X: $(metric "$X" spd_replication_copies_added_total)"
$PY "$BC" verify --uri "$(nbd_uri "$Y")" --state "$T/bc.json" --min-durable 500 >"$T/v1.log" ||
  { cat "$T/v1.log"; fail "the new copy on $Y lacks acknowledged writes"; }
read -r P2 E2 <<<"$(primary_of a)"
[ "$P2" = a ] && [ "$E2" = "$E1" ] || fail "the primary changed: $P2 $E2 (was a $E1)"

# --- Back to two: the last placed copy in sync leaves (Y's), never the primary's; Y deletes it.
ctl a volume set-replicas cv 2
[ "$(placed)" = "a $X" ] || fail "placement after set-replicas 2: $(placed)"
dropped() { ! nbdinfo --size "$(nbd_uri "$Y")" >/dev/null 2>&1; }
wait_for "$Y deleted its copy" 15 dropped
bc_write a 13 "$E1" 4096 500
$PY "$BC" verify --uri "$(nbd_uri "$X")" --state "$T/bc.json" --min-durable 500 >"$T/v2.log" ||
  { cat "$T/v2.log"; fail "$X lacks acknowledged writes after the copy left"; }
[ "$(metric a spd_replication_copies_removed_total)" = 1 ] ||
  fail "copies removed on a: $(metric a spd_replication_copies_removed_total)"

# --- Three again; X's node stops and misses writes (out of sync). Down to two: X's copy leaves
# (it counts for nothing), not Y's, the last placed; X, back, deletes its copy and its key.
ctl a volume set-replicas cv 3
wait_for "three copies in sync again" 60 three_in_sync
stop_repl_node "$X"
bc_write a 14 "$E1" 4096 300
x_out() { [ "$(copies a)" = "a=in_sync $X=out_of_sync $Y=in_sync" ]; }
wait_for "$X out of sync" 15 x_out
ctl a volume set-replicas cv 2
[ "$(placed)" = "a $Y" ] || fail "placement after the out-of-sync copy left: $(placed)"
[ "$(copies a)" = "a=in_sync $Y=in_sync" ] || fail "copies: $(copies a)"
bc_write a 15 "$E1" 4096 300
start_repl_node "$X"
wait_registered a "$X registered again"
gone() {
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix --keys-only \
    "/spd/v1/moved/$X/" >"$T/moved" && [ ! -s "$T/moved" ]
}
wait_for "$X deleted its copy and its key" 20 gone
! nbdinfo --size "$(nbd_uri "$X")" >/dev/null 2>&1 || fail "$X still serves its copy"
$PY "$BC" verify --uri "$(nbd_uri "$Y")" --state "$T/bc.json" --min-durable 500 >"$T/v3.log" ||
  { cat "$T/v3.log"; fail "$Y lacks acknowledged writes"; }
$PY "$BC" verify --uri "$(nbd_uri a)" --state "$T/bc.json" --min-durable 500 >"$T/v3.log" ||
  { cat "$T/v3.log"; fail "a lacks acknowledged writes"; }

# --- Three again (X's copy comes back, placed last), then down to two naming the copy to go:
# --remove Y takes Y's, not X's (the last placed, which would leave without it). Refused first:
# the primary's (5), a node with no copy (3), --remove with as many copies (8).
ctl a volume set-replicas cv 3
[ "$(placed)" = "a $Y $X" ] || fail "placement after set-replicas 3: $(placed)"
wait_for "three copies in sync a third time" 60 three_in_sync
expect 5 --socket "${DIR[a]}/control.sock" volume set-replicas cv 2 --remove a
grep -q "is the primary" "$T/err" || fail "--remove of the primary: $(cat "$T/err")"
expect 3 --socket "${DIR[a]}/control.sock" volume set-replicas cv 2 --remove zz
expect 8 --socket "${DIR[a]}/control.sock" volume set-replicas cv 3 --remove "$Y"
[ "$(placed)" = "a $Y $X" ] || fail "placement changed by a refusal: $(placed)"
ctl a volume set-replicas cv 2 --remove "$Y"
[ "$(placed)" = "a $X" ] || fail "placement after --remove $Y: $(placed)"
wait_for "$Y deleted its copy (--remove)" 15 dropped
bc_write a 16 "$E1" 4096 300
$PY "$BC" verify --uri "$(nbd_uri "$X")" --state "$T/bc.json" --min-durable 500 >"$T/v4.log" ||
  { cat "$T/v4.log"; fail "$X lacks acknowledged writes"; }

# --- A copy removed and placed again at once, within its node's round (500 ms): the node finishes
# deleting the old copy before it makes the new one, and removed again, the new one is deleted
# (before, the old copy's finished delete was taken for the new one's: nothing was deleted and Y
# went on serving its copy). Three times, each with writes.
for i in 1 2 3; do
  ctl a volume set-replicas cv 3
  wait_for "three copies in sync ($i)" 60 three_in_sync
  ctl a volume set-replicas cv 2 --remove "$Y"
  ctl a volume set-replicas cv 3
  [ "$(placed)" = "a $X $Y" ] || fail "placement after $Y left and came back ($i): $(placed)"
  wait_for "three copies in sync after $Y came back ($i)" 60 three_in_sync
  bc_write a $((20 + i)) "$E1" 4096 200
  $PY "$BC" verify --uri "$(nbd_uri "$Y")" --state "$T/bc.json" --min-durable 500 \
    >"$T/v5.log" || { cat "$T/v5.log"; fail "$Y's new copy lacks acknowledged writes ($i)"; }
  ctl a volume set-replicas cv 2 --remove "$Y"
  wait_for "$Y deleted its copy, placed again and removed ($i)" 15 dropped
done

# --- A volume policy's durability is the replicated volume's, on every copy (through its record
# in etcd: the copy of the node asked alone would be set back at its next reconciliation).
ctl "$X" policy set cv --durability flush
spec_durability() { ctl a replica list "$VOL" -o json; json 'd["items"][0]["durability"]'; }
copy_durability() { ctl "$1" volume get cv -o json; json 'd["durability"]'; }
flushed() { [ "$(spec_durability)" = flush ] && [ "$(copy_durability a)" = flush ] &&
  [ "$(copy_durability "$X")" = flush ]; }
wait_for "every copy of cv flush after its policy" 10 flushed
sleep 1
flushed || fail "the policy's durability did not stay: $(spec_durability) $(copy_durability a)"


# --- The replica count in a volume's intent (docs/replication.md, "Changing the number of
# copies"): a policy's count is the replicated volume's; a local volume's of 2 or more makes it
# replicated (set-replicas asked of another node finds no such volume); `spdctl apply` creates a volume of a class with a count as
# a replicated one with that many copies.
ctl "$X" policy set cv --replicas 3
three_placed() { [ "$(placed | wc -w)" = 3 ]; }
wait_for "three copies of cv by its policy" 10 three_placed
wait_for "three copies of cv in sync" 60 three_in_sync
ctl a policy set cv --replicas 2
[ "$(placed | wc -w)" = 2 ] || fail "copies after the policy's 2: $(placed)"
ctl a volume create lv --size 16M
expect 3 --socket "${DIR[$X]}/control.sock" volume set-replicas lv 2  # not on the node asked
ctl a policy set lv --replicas 2
[ "$(VOL=lv placed | wc -w)" = 2 ] || fail "lv's copies after its policy's 2: $(VOL=lv placed)"
[ "$(VOL=lv primary_of a | cut -d' ' -f1)" = a ] || fail "lv's primary is not a"
cat >"$T/ha.yaml" <<'YAML'
apiVersion: spd.v1
kind: StorageClass
metadata: {name: ha}
spec:
  intent: {replicas: 3, durability: sync}
---
apiVersion: spd.v1
kind: Volume
metadata: {name: av}
spec: {size: 32M, storageClass: ha}
YAML
ctl a apply -f "$T/ha.yaml"
av_three() { [ "$(VOL=av placed | wc -w)" = 3 ]; }
wait_for "av created with three copies by its class" 10 av_three
[ "$(VOL=av spec_durability)" = sync ] || fail "av's durability: $(VOL=av spec_durability)"

echo "replication count: OK (a copy added under writes and in sync, removed, an out-of-sync one removed first, one named removed)"
