#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# etcd lost after a copy moved away from a node that was down (docs/replication.md, "When etcd
# loses its data" and "Moving a copy"): three spd2 nodes on loopback and a real etcd. A 2-way
# volume on a and X; X stops; its copy moves to Y; more writes. Then every node stops, etcd
# loses its data, and X, whose saved spec still names it, comes back first and publishes the
# placement of before the move. a and Y, back, publish theirs over it (a newer placement: the
# move counted it): the recovered volume is elected among a and Y, holds every acknowledged
# write on both, and X, no longer placed, deletes its stale copy. Without the placement's
# generation, X's placement stays: Y's copy is left out and X's, which missed writes, counts.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

VOL=mr
three_nodes_two_way
write() { bc_write a "$1" "$2" 4096 1000; }  # SEED EPOCH
write 11 "$E1"

# --- X stops; its copy moves to Y; writes go on (X misses them).
stop_repl_node "$X"
write 12 "$E1"
ctl "$Y" replica move mr --from "$X" --to "$Y"
wait_for "a and $Y in sync" 30 in_sync_on "$Y"
write 13 "$E1"
saved_newer() { grep -q '"placement":1' "${DIR[$1]}/replication/mr.spec"; }
wait_for "a and $Y keep the moved placement" 10 eval "saved_newer a && saved_newer $Y"
! grep -q '"placement"' "${DIR[$X]}/replication/mr.spec" ||
  fail "$X's saved spec has a placement generation: $(cat "${DIR[$X]}/replication/mr.spec")"

# --- Every node stops, etcd loses its data; X comes back first and publishes its placement.
stop_repl_node a
stop_repl_node "$Y"
stop_etcd
rm -rf "$T/etcd/data"
start_etcd
start_repl_node "$X"
published() { grep -q "mr published again from this node's disk" "$T/$1.log"; }
wait_for "$X published its (older) placement" 20 published "$X"
etcd_nodes() {
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get /spd/v1/volumes/mr \
    --print-value-only | $PY -c 'import json,sys; print(" ".join(json.load(sys.stdin)["nodes"]))'
}
[ "$(etcd_nodes)" = "a $X" ] || fail "X published: $(etcd_nodes)"

# --- a and Y come back: their newer placement replaces X's; the election is among a and Y.
start_repl_node a
start_repl_node "$Y"
replaced() { grep -q "mr published again from this node's disk over an older placement" "$T/$1.log"; }
wait_for "a or $Y replaced the older placement" 20 eval "replaced a || replaced $Y"
[ "$(etcd_nodes)" = "a $Y" ] || fail "placement after the recovery: $(etcd_nodes)"
[ $(($(metric a spd_replication_placements_replaced_total) + \
  $(metric "$Y" spd_replication_placements_replaced_total))) = 1 ] || fail "placements_replaced"
recovered() {
  local c
  c=$(copies a) || return 1
  [[ "$c" == "a=in_sync $Y=in_sync" ]]
}
wait_for "a and $Y in sync under a recovered primary" 40 recovered
read -r P2 E2 <<<"$(primary_of a)"
[ "$E2" -gt "$E1" ] || fail "the recovered epoch $E2 is not above $E1"
for n in a "$Y"; do
  $PY "$BC" verify --uri "$(nbd_uri "$n")" --state "$T/bc.json" >"$T/v-$n.log" ||
    { cat "$T/v-$n.log"; fail "the copy on $n lacks acknowledged writes after the recovery"; }
done

# --- X, no longer placed, deletes its copy and its state by the key the replacement wrote.
dropped() {
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get --prefix /spd/v1/moved/ \
    --keys-only >"$T/moved" && ! grep -q . "$T/moved"
}
wait_for "$X deleted its stale copy and its key" 20 dropped
ctl "$X" volume list -o json
[ "$(json '[v["name"] for v in d["items"]].count("mr")')" = 0 ] || fail "mr still on $X"
! [ -e "${DIR[$X]}/replication/mr.spec" ] || fail "$X kept its spec of mr"
echo "move then etcd lost: $X's older placement replaced; the primary $P2 (epoch $E2 > $E1), a and $Y hold every write; $X dropped its copy"
