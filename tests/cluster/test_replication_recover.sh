#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# etcd lost with a copy gone for good (docs/replication.md, "When etcd loses its data"): three
# spd2 nodes on loopback and a real etcd, a 3-way volume written through its primary. Every
# node stops, etcd loses its data, and only a and b come back: the recovered volume's election
# waits for c (no primary; the log names c and the way on). `spdctl replica promote --without
# c` refuses a copy that stands, a node with no copy and the asking node's own copy; asked of b
# for c, it lets the election go on: a or b (the best rank) takes the volume with a new epoch,
# holds every acknowledged write, the other is in sync with it, and c, when it returns after
# all, is resynced and holds them too.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

repl_cluster_init

for n in a b c; do start_repl_node $n; done
wait_registered
ctl a volume create rv --size 64M --replicas 3 --durability sync
all_in_sync() { [ "$(copies a)" = "a=in_sync b=in_sync c=in_sync" ]; }
wait_for "every copy in sync" 15 all_in_sync
read -r P1 E1 <<<"$(primary_of a)"
[ "$P1" = a ] || fail "primary is '$P1', wanted a"
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 11 --blocks 4096 --qd 16 \
  --ops 2000 --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "$E1" >"$T/w1.log" ||
  { cat "$T/w1.log"; fail "writes through the primary failed"; }

# --- Every node stops, etcd loses its data, a and b come back; c does not.
for n in a b c; do stop_repl_node $n; done
stop_etcd
rm -rf "$T/etcd/data"
start_etcd
start_repl_node a
start_repl_node b
stood() { grep -q "rv: recovered volume: this copy stands" "$T/$1.log"; }
wait_for "a and b stand in the recovered volume's election" 30 eval 'stood a && stood b'
waits_for_c() {
  grep -q "rv: recovered volume: waiting for every copy to stand: c (.*--without NODE)" "$T/$1.log"
}
wait_for "the election waits for c, and says how to go on" 15 eval 'waits_for_c a || waits_for_c b'
sleep 1
read -r P E <<<"$(primary_of a)"
[ "$P" = - ] || fail "the recovered volume has a primary ($P) while c has not stood"

# --- Refused: a copy that stands, a node with no copy, the asking node's own copy.
SOCK_B="${DIR[b]}/control.sock"
expect 5 --socket "$SOCK_B" replica promote rv --without a
grep -q "the copy on a stands in the election" "$T/err" || fail "standing copy: $(cat "$T/err")"
expect 3 --socket "$SOCK_B" replica promote rv --without zz
grep -q "no copy on node 'zz'" "$T/err" || fail "unknown node: $(cat "$T/err")"
expect 8 --socket "$SOCK_B" replica promote rv --without b
grep -q "cannot go on without its own copy" "$T/err" || fail "own copy: $(cat "$T/err")"
[ "$(metric b spd_replication_copies_given_up_total)" = 0 ] || fail "a refusal counted"
read -r P E <<<"$(primary_of a)"
[ "$P" = - ] || fail "a refused call let the election go on ($P)"

# --- Without c: a or b takes the volume, with an epoch above the old one.
ctl b replica promote rv --without c
read -r P2 E2 <<<"$(primary_of b)"
[ "$P2" = a ] || [ "$P2" = b ] || fail "primary after --without c: '$P2'"
[ "$E2" -gt "$E1" ] || fail "the recovered epoch $E2 is not above $E1"
[ "$(metric b spd_replication_copies_given_up_total)" = 1 ] ||
  fail "given-up copies counted: $(metric b spd_replication_copies_given_up_total)"
grep -q "rv: recovered volume: an admin gave up on the copies on c" "$T/b.log" ||
  fail "b's log does not say that c was given up on"
# Now it has a primary: --without no longer applies.
expect 5 --socket "$SOCK_B" replica promote rv --without c
grep -q "has a primary" "$T/err" || fail "with a primary: $(cat "$T/err")"
OTHER=a
[ "$P2" = a ] && OTHER=b
two_in_sync() {
  local c
  c=$(copies "$P2")
  [[ "$c" == *"$P2=in_sync"* && "$c" == *"$OTHER=in_sync"* ]]
}
wait_for "the other copy in sync with the new primary" 30 two_in_sync
for n in "$P2" "$OTHER"; do
  $PY "$BC" verify --uri "$(nbd_uri "$n")" --state "$T/bc.json" >"$T/v-$n.log" ||
    { cat "$T/v-$n.log"; fail "the copy on $n lacks acknowledged writes after the recovery"; }
done
$PY "$BC" write --uri "$(nbd_uri "$P2")" --state "$T/bc.json" --seed 12 --qd 16 --ops 500 \
  --seconds 60 --flush-every 32 --epoch "$E2" >"$T/w2.log" ||
  { cat "$T/w2.log"; fail "writes through the recovered primary failed"; }

# --- c returns after all: resynced from the new primary, it holds every acknowledged write.
start_repl_node c
all_in_sync_p2() { [ "$(copies "$P2")" = "a=in_sync b=in_sync c=in_sync" ]; }
wait_for "c resynced after its return" 30 all_in_sync_p2
$PY "$BC" verify --uri "$(nbd_uri c)" --state "$T/bc.json" >"$T/v-c.log" ||
  { cat "$T/v-c.log"; fail "c lacks acknowledged writes after its resync"; }
read -r P3 E3 <<<"$(primary_of c)"
[ "$P3" = "$P2" ] && [ "$E3" = "$E2" ] || fail "after c returned: primary '$P3' epoch $E3"
echo "recovered without c: $P2 took the volume (epoch $E2 > $E1); c resynced on its return"
