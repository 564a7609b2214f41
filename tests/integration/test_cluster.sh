#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# Cluster membership (--cluster, docs/replication.md): nodes register in a real etcd with a
# lease, `spdctl node list` shows every node from any of them, a name is exclusive, a stopped
# node leaves at once and a killed one when its lease expires, a node without etcd keeps
# serving, and flags that cannot take effect are refused.
. "$(dirname "$0")/lib.sh"

start_etcd
TTL=3

# A second spd2 (node b) on its own data dir and ports; pid in B_PID.
B="$T/b"
start_b() {
  start_cluster_node b --pool-size 256M --metrics-listen off --cluster "$ETCD_URL" \
    --cluster-lease-ttl $TTL "$@"
  B_PID=$NODE_PID
}
# nodes SOCKET: the names in that node's list, space-separated.
nodes() {
  expect 0 --socket "$1" node list -o json
  json '" ".join(n["name"] for n in d["items"])'
}
# wait_nodes SOCKET WANT: until that node lists exactly WANT (10 s at most).
wait_nodes() {
  local got=""
  for _ in $(seq 100); do
    got=$(nodes "$1")
    [ "$got" = "$2" ] && return 0
    sleep 0.1
  done
  fail "node list on $1: '$got', wanted '$2'"
}
state() {
  expect 0 --socket "$1" node info -o json
  json 'd.get("clusterState", "")'
}
wait_state() {
  local got=""
  for _ in $(seq "${3:-100}"); do
    got=$(state "$1")
    [ "$got" = "$2" ] && return 0
    sleep 0.1
  done
  fail "cluster state on $1: '$got', wanted '$2'"
}

# --- Flags that cannot take effect are refused at start (exit 2), with the reason.
for bad in "--node-name x" "--cluster-lease-ttl 5" "--cluster 127.0.0.1:2379" \
  "--cluster $ETCD_URL --node-name a/b" "--cluster $ETCD_URL --cluster-lease-ttl 1"; do
  rc=0
  # shellcheck disable=SC2086
  "$SPD2" --data-dir "$T/bad" --pool-size 64M --nbd-listen off --metrics-listen off $bad \
    >"$T/bad.log" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$T/bad.log"; fail "spd2 $bad exited $rc, wanted 2"; }
done
grep -q "need --cluster" "$T/bad.log" ||
  grep -q "cluster-lease-ttl" "$T/bad.log" || fail "no reason given: $(cat "$T/bad.log")"

# --- Alone: node list is refused with FAILED_PRECONDITION, node info has no cluster fields.
start_spd2
A_SOCK="$T/data/control.sock"
expect 5 --socket "$A_SOCK" node list
grep -q "without --cluster" "$T/err" || fail "no reason: $(cat "$T/err")"
expect 0 --socket "$A_SOCK" node info -o json
[ "$(json '"nodeName" in d')" = False ] || fail "a lone node reports a node name"
stop_spd2

# --- Two nodes register; each lists both, by name, and knows itself.
SPD_METRICS=127.0.0.1:$((SPD_PORT + 2)) start_spd2 --cluster "$ETCD_URL" --node-name alpha \
  --cluster-lease-ttl $TTL
start_b --node-name beta
wait_state "$A_SOCK" registered
wait_state "$B/control.sock" registered
wait_nodes "$A_SOCK" "alpha beta"
wait_nodes "$B/control.sock" "alpha beta"
expect 0 --socket "$A_SOCK" node list -o json
[ "$(json '[n["name"] for n in d["items"] if n["self"]]')" = "['alpha']" ] || fail "self: $(cat "$T/out")"
[ "$(json '[n["pid"] for n in d["items"] if n["name"] == "beta"][0]')" = "$B_PID" ] ||
  fail "beta's pid is not node b's: $(cat "$T/out")"
expect 0 --socket "$A_SOCK" node list
grep -q "^alpha .*yes" "$T/out" || fail "table: $(cat "$T/out")"
# Registered in etcd under the documented key, bound to a lease.
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" get /spd/v1/nodes/alpha -w json >"$T/etcd.json"
$PY -c "import json; d=json.load(open('$T/etcd.json')); assert d['kvs'][0]['lease'] != 0, d"
curl -sf "http://127.0.0.1:$((SPD_PORT + 2))/metrics" >"$T/metrics"
grep -q '^spd_cluster_node_registered 1$' "$T/metrics" || fail "metric: $(grep cluster "$T/metrics")"
grep -q '^spd_cluster_nodes 2$' "$T/metrics" || fail "metric: $(grep cluster "$T/metrics")"

# --- A third daemon with a taken name waits (name-taken, listed once) and serves meanwhile.
C="$T/c"
"$SPD2" --data-dir "$C" --pool-size 64M --nbd-listen off --metrics-listen off --quiet \
  --cluster "$ETCD_URL" --node-name beta --cluster-lease-ttl $TTL >>"$T/c.log" 2>&1 &
C_PID=$!
EXTRA_PIDS+=("$C_PID")
for _ in $(seq 200); do [ -S "$C/control.sock" ] && break; sleep 0.05; done
wait_state "$C/control.sock" name-taken
expect 0 --socket "$C/control.sock" node info -o json
json 'd["clusterDetail"]' | grep -q "$B_PID" || fail "detail does not name the holder: $(cat "$T/out")"
nbdinfo --size "nbd+unix:///vol0?socket=$C/nbd.sock" >/dev/null || fail "name-taken node does not serve"
wait_nodes "$A_SOCK" "alpha beta"

# --- A stopped node leaves at once (its lease revoked); the waiting one then takes the name.
kill -TERM "$B_PID"
rc=0
wait "$B_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "node b exited $rc"
wait_state "$C/control.sock" registered
expect 0 --socket "$A_SOCK" node list -o json
[ "$(json '[n["pid"] for n in d["items"] if n["name"] == "beta"][0]')" = "$C_PID" ] ||
  fail "beta is not the third daemon now: $(cat "$T/out")"

# --- A killed node stays listed until its lease expires (TTL), then goes.
kill -KILL "$C_PID"
wait "$C_PID" 2>/dev/null || rc=$?
expect 0 --socket "$A_SOCK" node list -o json
[ "$(json '" ".join(n["name"] for n in d["items"])')" = "alpha beta" ] || fail "gone before its TTL"
wait_nodes "$A_SOCK" "alpha"

# --- Without etcd the node keeps serving; its lease runs out by its own clock (unconfirmed);
# with etcd back it is registered again.
stop_etcd
nbdinfo --size "$(uri)" >/dev/null || fail "no service without etcd"
wait_state "$A_SOCK" unconfirmed 100
curl -sf "http://127.0.0.1:$((SPD_PORT + 2))/metrics" >"$T/metrics"
grep -q '^spd_cluster_node_registered 0$' "$T/metrics" || fail "metric: $(grep cluster "$T/metrics")"
grep -Eq '^spd_cluster_keepalive_failures_total [1-9]' "$T/metrics" || fail "no keepalive failure counted"
start_etcd
wait_state "$A_SOCK" registered 300
wait_nodes "$A_SOCK" "alpha"
stop_spd2
# A clean stop revoked alpha's lease: nothing left in etcd.
[ -z "$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" get --prefix /spd/v1/nodes/ --keys-only)" ] ||
  fail "registrations left after every node stopped"
echo "cluster membership: OK"
