#!/usr/bin/env bash
# spd-it: alone (etcd, lease timing)
# A local volume that shares a replicated volume's name is never taken for its copy
# (docs/replication.md, "A local volume of the same name"): three spd2 nodes on loopback and a
# real etcd.
# - a replicated create of a name that is a local volume on the node asked is refused (exit 4)
#   and records nothing in etcd; a local create of a replicated volume's name too, on any node;
# - placed on a node that holds a local volume of the name, the volume runs without a copy
#   there: the node logs and counts it, refuses the primary's hello, and its local volume keeps
#   its data while writes go on through the primary;
# - that copy moved elsewhere, the node does not delete its local volume by the moved/ key;
# - on that node the name is the local volume's: deleting it there deletes the local one, and
#   the node then makes its copy, resynced to in sync;
# - a replicated volume deleted while placed on such a node: the delete completes and the local
#   volume stays.
# Each fails with its guard removed (see the doc).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

repl_cluster_init
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

# --- Placed on b, which holds a local x: b keeps it and holds no copy; writes go on through a.
VOL=x
local_data b x "$T/pb"
ctl a volume create x --size 16M --replicas 2 --durability sync
[ "$(placed)" = "a b" ] || fail "x placed on: $(placed)"
b_out() { [ "$(copies a)" = "a=in_sync b=out_of_sync" ]; }
wait_for "b's copy of x out of sync (none there)" 15 b_out
grep -q "replication: x: a local volume of that name is here" "$T/b.log" ||
  fail "b did not log its local x"
[ "$(metric b spd_replication_local_volumes_kept_total)" = 1 ] ||
  fail "b counted $(metric b spd_replication_local_volumes_kept_total) local volumes kept"
bc_write a 1 1 2048 500
[ "$(metric b spd_replica_local_volumes_refused_total)" -ge 1 ] ||
  fail "b refused no hello for its local x"
holds b x "$T/pb" || fail "b's local x was written over"
read -r P1 E1 <<<"$(primary_of a)"
[ "$P1" = a ] || fail "x's primary: $P1"
# One name, one volume in the cluster: no local x made on c (no copy there) or over a's copy.
for n in c a; do
  expect 4 --socket "${DIR[$n]}/control.sock" volume create x --size 16M
  grep -q "'x' is a replicated volume of the cluster" "$T/err" ||
    fail "a local x created on $n: $(cat "$T/out" "$T/err")"
done

# --- Moved to c: b keeps its local x (its moved/ key is done with, nothing deleted).
ctl a replica move x --from b --to c
c_in() { [ "$(copies a)" = "a=in_sync c=in_sync" ]; }
wait_for "a and c in sync" 30 c_in
no_key() { [ -z "$(etcd_keys /spd/v1/moved/b/)" ]; }
wait_for "b done with its moved/ key" 15 no_key
holds b x "$T/pb" || fail "b deleted or changed its local x when the copy moved away"
$PY "$BC" verify --uri "$(nbd_uri c)" --state "$T/bc.json" --min-durable 100 >"$T/v1.log" ||
  { cat "$T/v1.log"; fail "c lacks acknowledged writes"; }

# --- On b the name z is its local volume's: deleted there, b makes its copy and is resynced.
VOL=z
local_data b z "$T/pb"
ctl a volume create z --size 16M --replicas 2 --durability sync
[ "$(placed)" = "a b" ] || fail "z placed on: $(placed)"
wait_for "b's copy of z out of sync (none there)" 15 b_out
ctl b volume get z -o json
[ "$(json 'd["allocatedBytes"]')" = 1048576 ] || fail "b's z is not its local one: $(cat "$T/out")"
ctl b volume delete z
b_in() { [ "$(copies a)" = "a=in_sync b=in_sync" ]; }
wait_for "b's new copy of z in sync" 30 b_in
[ -n "$(etcd_keys /spd/v1/volumes/z)" ] || fail "deleting b's local z deleted the replicated one"
! holds b z "$T/pb" || fail "b's copy of z still holds its local data"

# --- Deleted while placed on b, which holds a local w: the delete completes, w stays on b.
VOL=w
local_data b w "$T/pw"
ctl a volume create w --size 16M --replicas 2 --durability sync
[ "$(placed)" = "a b" ] || fail "w placed on: $(placed)"
wait_for "b's copy of w out of sync (none there)" 15 b_out
ctl a volume delete w
w_gone() { [ -z "$(etcd_keys /spd/v1/volumes/w)" ]; }
wait_for "w deleted in the cluster" 20 w_gone
holds b w "$T/pw" || fail "b's local w went with the replicated one"

echo "replication local name: OK (a create over a local volume refused; a local volume kept, unwritten, not deleted by a move or a delete; deleted where it is, the copy made)"
