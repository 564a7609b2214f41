#!/usr/bin/env bash
# TLS on the replication link (--replication-tls-psk, docs/replication.md "TLS"): three spd2
# nodes and a real etcd. a and b share a key file, c has another. A 3-way volume created on a
# gets b in sync over TLS (blockcheck's writes through a are on b, verified through b's own
# export); c fails the handshake, is out of sync and holds nothing of them. The flag is refused
# where it cannot take effect.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"
VOL=tv

# Flags first: no file, and no --replication-listen.
expect_start_refused() {  # WHAT ARGS...: spd2 must exit 2 at once
  local what=$1 rc=0
  shift
  timeout 20 "$SPD2" --data-dir "$T/refused" --pool-size 64M --nbd-listen off \
    --metrics-listen off --control-socket off --quiet "$@" >"$T/refused.log" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$T/refused.log"; fail "$what: exit $rc, wanted 2"; }
}
expect_start_refused "a missing key file" --cluster http://127.0.0.1:1 --node-name x \
  --replication-listen 127.0.0.1:0 --replication-tls-psk "$T/nope.psk"
printf 'x:%s\n' "$(printf 'ab%.0s' $(seq 32))" >"$T/ok.psk"
chmod 600 "$T/ok.psk"
expect_start_refused "no --replication-listen" --cluster http://127.0.0.1:1 --node-name x \
  --replication-tls-psk "$T/ok.psk"
printf 'x:abcd\n' >"$T/short.psk"
expect_start_refused "a short key" --cluster http://127.0.0.1:1 --node-name x \
  --replication-listen 127.0.0.1:0 --replication-tls-psk "$T/short.psk"
grep -q "shorter than 16 bytes" "$T/refused.log" || fail "short key: $(cat "$T/refused.log")"
# Refused before the pool opens: none was made for it.
[ ! -e "$T/refused/pool.img" ] || fail "a refused key file left a pool behind"

start_etcd
printf 'cluster:%s\n' "$(printf '5a%.0s' $(seq 32))" >"$T/shared.psk"
printf 'cluster:%s\n' "$(printf 'c3%.0s' $(seq 32))" >"$T/other.psk"
chmod 600 "$T/shared.psk" "$T/other.psk"
declare -A PID DIR KEY=([a]=shared [b]=shared [c]=other)
declare -A MPORT=([a]=$((SPD_PORT + 1)) [b]=$((SPD_PORT + 2)) [c]=$((SPD_PORT + 3)))
start_node() {  # NAME
  local n=$1
  DIR[$n]="$T/$n"
  start_cluster_node "$n" --pool-size 256M --metrics-listen "127.0.0.1:${MPORT[$n]}" \
    --cluster "$ETCD_URL" --node-name "$n" --cluster-lease-ttl 3 \
    --replication-listen 127.0.0.1:0 --replication-tls-psk "$T/${KEY[$n]}.psk"
  PID[$n]=$NODE_PID
}
for n in a b c; do start_node $n; done
wait_registered
ctl a volume create tv --size 32M --replicas 3
c_refuses_the_link "another key" 3
echo "replication tls: OK (b in sync over TLS; c refused $(metric c spd_replica_tls_handshake_failures_total) handshakes)"
