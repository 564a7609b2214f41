#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# A local volume that shares a replicated volume's name is never taken for its copy
# (docs/replication.md, "A local volume of the same name"): three spd2 nodes on loopback and a
# real etcd.
# - a replicated create of a name that is a local volume on the node asked is refused (exit 4)
#   and records nothing in etcd; a local create of a replicated volume's name too, on any node;
# - placed on a node that holds a local volume of the name, the node keeps it, logs and counts it
#   and says so in etcd; the primary places the copy on another node (the local volume is not
#   deleted by the moved/ key); a move or a new copy onto that node is refused;
# - with no other node to take it, the volume runs without a copy there (the node refuses the
#   primary's hello); on that node the name is the local volume's: deleting it there deletes the
#   local one, and the node then makes its copy, resynced to in sync;
# - a replicated volume deleted while placed on such a node: the delete completes and the local
#   volume stays;
# - a live move onto such a node recorded before the node said so is called off.
# Each fails with its guard removed (see the doc).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

repl_cluster_init
TTL=8  # b is stopped for a few seconds below and must stay registered
for n in a b c; do start_repl_node $n; done
wait_registered

# local_data NODE VOL FILE: 1 MiB of FILE written at the start of NODE's local volume VOL.
local_data() {
  VOL=$2 ctl "$1" volume create "$2" --size 16M
  nbdcopy "$3" "$(VOL=$2 nbd_uri "$1")" || fail "cannot write $1's local $2"
}
# holds NODE VOL FILE: NODE's volume VOL starts with FILE's 1 MiB.
holds() {
  nbdcopy "$(VOL=$2 nbd_uri "$1")" "$T/read" || return 1
  head -c 1048576 "$T/read" | cmp -s - "$3"
}
etcd_keys() {
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix --keys-only "$1"
}
for f in pa pb pw; do head -c 1048576 /dev/urandom >"$T/$f"; done

# --- A replicated create of a name that is a local volume here: refused, nothing recorded.
local_data a y "$T/pa"
expect 4 --socket "${DIR[a]}/control.sock" volume create y --size 16M --replicas 2
grep -q "a local volume 'y' is on this node" "$T/err" || fail "create over a local y: $(cat "$T/err")"
[ -z "$(etcd_keys /spd/v1/volumes/y)" ] || fail "the refused create recorded y: $(etcd_keys /spd/v1/volumes/y)"
holds a y "$T/pa" || fail "a's local y changed"

# --- Placed on b, which holds a local x: b keeps it and says so in etcd; a, the primary, places
# the copy on c instead (copied whole); b's local x keeps its data.
VOL=x
local_data b x "$T/pb"
ctl a volume create x --size 16M --replicas 2 --durability sync
c_in() { [ "$(copies a)" = "a=in_sync c=in_sync" ]; }
wait_for "x's copy on c instead of b, in sync" 20 c_in
grep -q "replication: x: a local volume of that name is here" "$T/b.log" ||
  fail "b did not log its local x"
[ "$(metric b spd_replication_local_volumes_kept_total)" = 1 ] ||
  fail "b counted $(metric b spd_replication_local_volumes_kept_total) local volumes kept"
grep -q "replication: x: node b holds a local volume of that name: its copy is placed on c instead" \
  "$T/a.log" || fail "a did not log the copy placed on c"
[ "$(metric a spd_replication_copies_replaced_total)" = 1 ] ||
  fail "a counted $(metric a spd_replication_copies_replaced_total) copies replaced"
[ -n "$(etcd_keys /spd/v1/volumes/x/local/b)" ] || fail "b's local x is not in etcd"
no_key() { [ -z "$(etcd_keys /spd/v1/moved/b/)" ]; }
wait_for "b done with its moved/ key" 15 no_key
bc_write a 1 1 2048 500
holds b x "$T/pb" || fail "b's local x was written over or deleted"
$PY "$BC" verify --uri "$(nbd_uri c)" --state "$T/bc.json" --min-durable 100 >"$T/v1.log" ||
  { cat "$T/v1.log"; fail "c lacks acknowledged writes"; }
# b's volume get shows its local x (no replication); a's shows the replicated one.
ctl b volume get x -o json
[ "$(json '"replication" in d')" = False ] || fail "b's local x shows a replication: $(cat "$T/out")"
ctl a volume get x -o json
[ "$(json 'd["replication"]["primary"]')" = a ] || fail "a's x: $(cat "$T/out")"
ctl b volume list -o json
[ "$(json '[v["name"] for v in d["items"] if "replication" in v].count("x")')" = 0 ] ||
  fail "b's list shows its local x replicated: $(cat "$T/out")"
read -r P1 E1 <<<"$(primary_of a)"
[ "$P1" = a ] || fail "x's primary: $P1"
# One name, one volume in the cluster: no local x made on c or a (copies there).
for n in c a; do
  expect 4 --socket "${DIR[$n]}/control.sock" volume create x --size 16M
  grep -q "'x' is a replicated volume of the cluster" "$T/err" ||
    fail "a local x created on $n: $(cat "$T/out" "$T/err")"
done
# Neither a move nor a new copy goes onto b.
expect 5 --socket "${DIR[a]}/control.sock" replica move x --from c --to b
grep -q "node b holds a local volume named 'x'" "$T/err" || fail "move onto b: $(cat "$T/err")"
expect 5 --socket "${DIR[a]}/control.sock" volume set-replicas x 3
grep -q "0 more node(s) serve replicas" "$T/err" || fail "a third copy of x: $(cat "$T/err")"

# --- No other node to take it (3-way): b stays placed without a copy, refuses the primary's
# hello and keeps its local z; deleted there, b makes its copy and is resynced.
VOL=z
local_data b z "$T/pb"
ctl a volume create z --size 16M --replicas 3 --durability sync
[ "$(placed)" = "a b c" ] || fail "z placed on: $(placed)"
b_out() { [ "$(copies a)" = "a=in_sync b=out_of_sync c=in_sync" ]; }
wait_for "b's copy of z out of sync (none there)" 15 b_out
grep -q "replication: z: node b holds a local volume of that name and no other node can take its copy" \
  "$T/a.log" || fail "a did not log that z's copy on b has nowhere else to go"
bc_write a 2 1 2048 200
[ "$(metric b spd_replica_local_volumes_refused_total)" -ge 1 ] ||
  fail "b refused no hello for its local z"
ctl b volume get z -o json
[ "$(json 'd["allocatedBytes"]')" = 1048576 ] || fail "b's z is not its local one: $(cat "$T/out")"
ctl b volume delete z
b_in() { [ "$(copies a)" = "a=in_sync b=in_sync c=in_sync" ]; }
wait_for "b's new copy of z in sync" 30 b_in
[ -n "$(etcd_keys /spd/v1/volumes/z)" ] || fail "deleting b's local z deleted the replicated one"
! holds b z "$T/pb" || fail "b's copy of z still holds its local data"
z_key_gone() { [ -z "$(etcd_keys /spd/v1/volumes/z/local/)" ]; }
wait_for "b's local z out of etcd" 10 z_key_gone

# --- Deleted while placed on b, which holds a local w: the delete completes, w stays on b.
VOL=w
local_data b w "$T/pw"
ctl a volume create w --size 16M --replicas 3 --durability sync
[ "$(placed)" = "a b c" ] || fail "w placed on: $(placed)"
wait_for "b's copy of w out of sync (none there)" 15 b_out
ctl a volume delete w
w_gone() { [ -z "$(etcd_keys /spd/v1/volumes/w)" ]; }
wait_for "w deleted in the cluster" 20 w_gone
holds b w "$T/pw" || fail "b's local w went with the replicated one"

# --- A live move onto b recorded before b said it holds a local v (b stopped meanwhile): once
# b says so, a calls the move off; v stays on a and c. Two volumes on b first, so that v is
# placed on c (the fewest copies).
for u in u1 u2; do VOL=$u ctl a volume create $u --size 16M --replicas 2; done
VOL=v
local_data b v "$T/pw"
kill -STOP "${PID[b]}"
ctl a volume create v --size 16M --replicas 2
[ "$(placed)" = "a c" ] || { kill -CONT "${PID[b]}"; fail "v placed on: $(placed)"; }
in_sync_on c || wait_for "v in sync on c" 4 in_sync_on c
ctl a replica move v --from c --to b
kill -CONT "${PID[b]}"
called_off() { [ "$(placed)" = "a c" ] && in_sync_on c; }
wait_for "the move of v onto b called off" 20 called_off
grep -q "replication: v: node b holds a local volume of that name: the move onto it is called off" \
  "$T/a.log" || fail "a did not log the move called off"
holds b v "$T/pw" || fail "b's local v was written over or deleted"

echo "replication local name: OK (a create over a local volume refused; a local volume kept, unwritten, not deleted; its copy placed elsewhere, or the move onto it called off; with no other node, deleted where it is, the copy made)"
