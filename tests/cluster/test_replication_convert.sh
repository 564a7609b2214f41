#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# A local volume made replicated while it serves (docs/replication.md, "Making a local volume
# replicated"): three spd2 nodes on loopback and a real etcd. `spdctl volume set-replicas lv 2`
# on the node that holds lv, under QD16 writes with FUA and FLUSH: no write fails (no guard
# between the record and the primary), the node is lv's primary at once, the new copy is copied
# whole and in sync and holds every acknowledged write, and with the first node stopped it
# takes lv over with them all; the first node, back, is a copy again. The refusals first, each
# changing nothing. Last, the on-disk states a stop can leave mid-conversion, settled at start. Each part fails with its guard removed (see the doc).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

repl_cluster_init
for n in a b c; do start_repl_node $n; done
wait_registered
etcd_keys() {
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix --keys-only "$1"
}

# --- Refusals (nothing recorded): a read-only volume (5), more copies than nodes (5), --remove
# (8), a name with no volume (3).
ctl a volume create ro --size 16M --read-only
expect 5 --socket "${DIR[a]}/control.sock" volume set-replicas ro 2
grep -q "read-only" "$T/err" || fail "a read-only volume: $(cat "$T/err")"
ctl a volume create lv --size 64M
expect 5 --socket "${DIR[a]}/control.sock" volume set-replicas lv 4
grep -q "only 3 node(s) serve replicas; 4 asked" "$T/err" || fail "4 copies: $(cat "$T/err")"
expect 8 --socket "${DIR[a]}/control.sock" volume set-replicas lv 2 --remove b
expect 3 --socket "${DIR[b]}/control.sock" volume set-replicas lv 2
[ -z "$(etcd_keys /spd/v1/volumes/)" ] || fail "a refusal recorded: $(etcd_keys /spd/v1/volumes/)"
! ls "${DIR[a]}/replication/" | grep -q '\.spec$' ||
  fail "a refusal left a spec: $(ls "${DIR[a]}/replication/")"

# --- lv, written through a, made replicated under writes.
VOL=lv
bc_write a 1 1 4096 1500
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 2 --blocks 4096 --qd 16 \
  --ops 6000 --seconds 90 --flush-every 32 --fua-ratio 0.2 --epoch 1 >"$T/w2.log" 2>&1 &
writer=$!
sleep 1
ctl a volume set-replicas lv 2
read -r P E <<<"$(primary_of a)"
[ "$P" = a ] || fail "lv's primary once set-replicas answered: '$P'"
[ "$(placed)" = "a b" ] || fail "lv placed on: $(placed)"
grep -q "replication: lv: the local volume is replicated now (2 copies)" "$T/a.log" ||
  fail "a did not log the conversion"
[ "$(metric a spd_replication_conversions_total)" = 1 ] ||
  fail "conversions on a: $(metric a spd_replication_conversions_total)"
wait_for "a and b in sync" 60 in_sync_on b
rc=0
wait "$writer" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/w2.log"; fail "writes while lv became replicated failed ($rc)"; }
[ "$(metric a spd_replication_writes_refused_total)" = 0 ] ||
  fail "a refused $(metric a spd_replication_writes_refused_total) writes (a guard on lv)"
$PY "$BC" verify --uri "$(nbd_uri b)" --state "$T/bc.json" --min-durable 1000 >"$T/v1.log" ||
  { cat "$T/v1.log"; fail "b's copy lacks acknowledged writes"; }
# Now a replicated volume: set-replicas of it again changes the count as for any.
expect 5 --socket "${DIR[a]}/control.sock" volume set-replicas lv 4
grep -q "1 more node(s) serve replicas; 4 asked" "$T/err" || fail "lv to 4: $(cat "$T/err")"

# --- a stopped: b takes lv over with every acknowledged write; a, back, is a copy in sync.
bc_write a 3 "$E" 4096 500
stop_repl_node a
b_primary() { [ "$(primary_of b | cut -d' ' -f1)" = b ]; }
wait_for "b the primary of lv" 20 b_primary
$PY "$BC" verify --uri "$(nbd_uri b)" --state "$T/bc.json" --min-durable 1000 >"$T/v2.log" ||
  { cat "$T/v2.log"; fail "b, the primary, lacks acknowledged writes"; }
start_repl_node a
both() { [ "$(copies b)" = "a=in_sync b=in_sync" ]; }
wait_for "a back in sync as b's copy" 30 both

# --- A stop cut short a conversion (the on-disk states it can leave, made by hand while the node
# is stopped): recorded (its spec still NAME.spec.converting): the spec is kept and the node is
# a copy; not recorded: the file goes and the volume stays local (no spec recovery publishes).
stop_repl_node a
mv "${DIR[a]}/replication/lv.spec" "${DIR[a]}/replication/lv.spec.converting"
ctl c volume create nv --size 16M
stop_repl_node c
echo '{"durability":"flush","nodes":["c","a"],"replicas":2,"size":16777216}' \
  >"${DIR[c]}/replication/nv.spec.converting"
start_repl_node a
start_repl_node c
wait_registered b "three nodes registered again"
wait_for "a in sync again, its spec kept" 30 both
[ -f "${DIR[a]}/replication/lv.spec" ] && [ ! -e "${DIR[a]}/replication/lv.spec.converting" ] ||
  fail "a's conversion files: $(ls "${DIR[a]}/replication/")"
grep -q "lv: a conversion cut short by a stop was recorded" "$T/a.log" || fail "a did not log it"
settled_c() { grep -q "nv: a conversion cut short by a stop was not recorded" "$T/c.log"; }
wait_for "c settled nv" 10 settled_c
[ ! -e "${DIR[c]}/replication/nv.spec.converting" ] && [ ! -e "${DIR[c]}/replication/nv.spec" ] ||
  fail "c's conversion files: $(ls "${DIR[c]}/replication/")"
[ -z "$(etcd_keys /spd/v1/volumes/nv)" ] || fail "nv published: $(etcd_keys /spd/v1/volumes/nv)"
ctl c volume set-replicas nv 2
[ "$(VOL=nv primary_of c | cut -d' ' -f1)" = c ] || fail "nv's primary is not c"

echo "replication convert: OK (lv replicated under writes, none failed; b in sync with every acknowledged write, took it over; a back as a copy; cut-short conversions settled)"
