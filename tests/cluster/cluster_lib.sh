# Helpers shared by the replication tests on loopback (test_replication*.sh), sourced after
# tests/integration/lib.sh. The test declares DIR (node name -> its data directory), PID and
# MPORT (node name -> its metrics port), sets TTL (the nodes' lease) and VOL (its volume's name,
# default rv), and has started etcd (start_etcd).

# The checker of acknowledged writes (blockcheck.py: write, verify).
BC="$(dirname "${BASH_SOURCE[0]}")/blockcheck.py"

# repl_cluster_init: the usual cluster of three nodes a, b and c: etcd started, TTL 3 s, DIR
# and PID empty, MPORT a port each.
repl_cluster_init() {
  start_etcd
  TTL=3
  declare -gA PID=() DIR=()
  declare -gA MPORT=([a]=$((SPD_PORT + 1)) [b]=$((SPD_PORT + 2)) [c]=$((SPD_PORT + 3)))
}

# start_repl_node NAME [ARGS...]: spd2 node NAME of the test's cluster (data in $T/NAME, a 512M
# pool, metrics on MPORT[NAME], replication on a free loopback port) with ARGS; sets DIR[NAME]
# and PID[NAME].
start_repl_node() {
  local n=$1
  shift
  DIR[$n]="$T/$n"
  start_cluster_node "$n" --pool-size 512M --metrics-listen "127.0.0.1:${MPORT[$n]}" \
    --cluster "$ETCD_URL" --node-name "$n" --cluster-lease-ttl "$TTL" \
    --replication-listen 127.0.0.1:0 "$@"
  PID[$n]=$NODE_PID
}

# ctl NODE ARGS...: spdctl against that node, output in $T/out; fails unless it exits 0.
ctl() {
  local n=$1
  shift
  expect 0 --socket "${DIR[$n]}/control.sock" "$@"
}
# nbd_uri NODE: the volume's export on that node (its unix socket).
nbd_uri() { echo "nbd+unix:///${VOL:-rv}?socket=${DIR[$1]}/nbd.sock"; }
# wait_for DESCRIPTION SECONDS COMMAND...: until COMMAND succeeds (checked every 0.1 s).
wait_for() {
  local what=$1 secs=$2
  shift 2
  for _ in $(seq $((secs * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  fail "$what: not within ${secs} s"
}
# metric NODE NAME: the metric's value on that node ("missing" when it is not exported).
metric() {
  curl -sf "http://127.0.0.1:${MPORT[$1]}/metrics" |
    awk -v m="$2" '$1 == m { print $2; found = 1 } END { if (!found) print "missing" }'
}
# primary_of NODE: the volume's primary as NODE sees it ("-" for none) and its epoch, "NAME
# EPOCH". (An empty name would leave " EPOCH", which `read P E` takes as P=EPOCH; spdctl's
# complaints go to stderr, not into the answer.)
primary_of() {
  ctl "$1" replica list "${VOL:-rv}" -o json >&2
  json '(d["items"][0]["primary"] or "-") + " " + str(d["items"][0]["epoch"])'
}
# copies NODE: the volume's copies as NODE sees them, "node=state ...".
copies() {
  ctl "$1" replica list "${VOL:-rv}" -o json
  json '" ".join(c["node"] + "=" + c["state"] for c in d["items"][0]["copies"])'
}
# registered_now NODE: the nodes a, b and c each registered by its current process (a restarted
# node waits until its old lease ends), as NODE sees it.
registered_now() {
  ctl "$1" node list -o json
  [ "$(json '" ".join(sorted(n["name"] + ":" + str(n["pid"]) for n in d["items"]))')" = \
    "a:${PID[a]} b:${PID[b]} c:${PID[c]}" ]
}
# wait_registered [NODE [WHAT]]: until registered_now NODE (a by default), 15 s at most.
wait_registered() { wait_for "${2:-three nodes registered}" 15 registered_now "${1:-a}"; }
# stop_repl_node NAME: SIGTERM, and fails unless the node exits 0.
stop_repl_node() {
  kill -TERM "${PID[$1]}"
  wait "${PID[$1]}" 2>/dev/null || fail "node $1 did not stop cleanly"
}
# placed: the nodes of the volume's copies as node a sees them, "a b ...".
placed() {
  ctl a replica list "${VOL:-rv}" -o json
  json '" ".join(c["node"] for c in d["items"][0]["copies"])'
}
# in_sync_on NODE: a 2-way volume's copies, as a sees them, are a's and NODE's, both in sync.
in_sync_on() { [ "$(copies a)" = "a=in_sync $1=in_sync" ]; }
# three_nodes_two_way: the usual start: etcd and nodes a, b and c (repl_cluster_init), all
# registered; volume $VOL (64M, 2 copies, sync) created through a. Sets X (the other copy's
# node), Y (the third node) and E1 (the epoch of a, its primary), once both copies are in sync.
three_nodes_two_way() {
  repl_cluster_init
  for n in a b c; do start_repl_node $n; done
  wait_registered
  ctl a volume create "$VOL" --size 64M --replicas 2 --durability sync
  read -r _ X <<<"$(placed)"
  case "$X" in b) Y=c ;; c) Y=b ;; *) fail "placed on: $(placed)" ;; esac
  wait_for "a and $X in sync" 15 in_sync_on "$X"
  local p
  read -r p E1 <<<"$(primary_of a)"
  [ "$p" = a ] || fail "primary is '$p', wanted a"
}
# c_refuses_the_link WHY SEED: $VOL (3 copies, created through a) with node c refusing the
# link's TLS (WHY): b in sync, c out of sync; writes through a are all on b, c's copy holds none
# of them (it never took a session), c counted failed handshakes and b none.
c_refuses_the_link() {
  settled() { [ "$(copies a)" = "a=in_sync b=in_sync c=out_of_sync" ]; }
  wait_for "b in sync over TLS, c ($1) out of sync" 20 settled
  bc_write a "$2" 1 2048 2000
  $PY "$BC" verify --uri "$(nbd_uri b)" --state "$T/bc.json" --min-durable 500 >"$T/v.log" ||
    { cat "$T/v.log"; fail "b lacks acknowledged writes"; }
  nbdinfo --map "$(nbd_uri c)" >"$T/map" || fail "no copy on c"
  ! grep -q "data" "$T/map" || fail "c ($1) holds data: $(cat "$T/map")"
  [ "$(metric c spd_replica_tls_handshake_failures_total)" -gt 0 ] ||
    fail "c ($1) counted no failed handshake"
  [ "$(metric b spd_replica_tls_handshake_failures_total)" -eq 0 ] ||
    fail "b failed a handshake with the cluster's credentials"
}
# bc_write NODE SEED EPOCH BLOCKS OPS: blockcheck's writes through NODE's export (the state in
# $T/bc.json, the log in $T/wSEED.log); fails unless every one of them completed.
bc_write() {
  $PY "$BC" write --uri "$(nbd_uri "$1")" --state "$T/bc.json" --seed "$2" --blocks "$4" \
    --qd 16 --ops "$5" --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "$3" \
    >"$T/w$2.log" || { cat "$T/w$2.log"; fail "writes (seed $2) through $1 failed"; }
}
