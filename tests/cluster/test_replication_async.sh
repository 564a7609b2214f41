#!/usr/bin/env bash
# spd-it: pair (etcd, lease timing: not beside a measurement)
# Asynchronous replication end to end (docs/replication.md, "Asynchronous volumes"): three spd2
# nodes on loopback and a real etcd; every primary's messages carry an injected 20 ms round
# trip, and the lag bound is 1 MiB. A volume created with --replicas 3 --durability async:
#   - its writes complete before the replicas have them (counted by the primary), the lag is
#     reported by `spdctl replica list` and stays within the bound;
#   - once the writes stop and the lag drained, every copy holds every acknowledged write;
#   - kill -9 of the primary under QD32 writes with FLUSHes: a copy takes over; what it lacks of
#     the acknowledged writes is within the lag bound (1 MiB: 256 blocks of 4 KiB), nothing is
#     corrupt, it is a FLUSH-consistent prefix of the writes (blockcheck verify --prefix), and
#     once the old primary returns every copy is resynced to the new primary's;
#   - with no primary the freshest in-sync copy (highest durable generation) takes the volume:
#     another copy waits for it.
# Refusals: async without --replicas (exit 8).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"

repl_cluster_init
start_node() {  # NAME: a 20 ms injected round trip, a 1 MiB lag bound
  start_repl_node "$1" --replication-inject-rtt-us 20000 --replication-async-lag-bytes 1M \
    --replication-async-lag-ms 2000
}
view() {  # NODE: "PRIMARY EPOCH COPIES LAGBYTES DURABILITY" as NODE sees volume rv
  ctl "$1" replica list rv -o json
  json '(d["items"][0]["primary"] or "-") + " " + str(d["items"][0]["epoch"]) + " " + ",".join(c["node"] + "=" + c["state"] for c in d["items"][0]["copies"]) + " " + str(d["items"][0]["lagBytes"]) + " " + d["items"][0]["durability"]'
}
all_in_sync() { [ "$(view "$1" | cut -d' ' -f3)" = "a=in_sync,b=in_sync,c=in_sync" ]; }

# The lag flags need --replication-listen.
rc=0
"$SPD2" --data-dir "$T/x" --nbd-listen off --replication-async-lag-ms 10 >"$T/x.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "--replication-async-lag-ms without --replication-listen: exit $rc"
grep -q "need --replication-listen" "$T/x.log" || fail "refusal: $(cat "$T/x.log")"

for n in a b c; do start_node $n; done
wait_registered
expect 8 --socket "${DIR[a]}/control.sock" volume create lone --size 16M --durability async
grep -q "async is for replicated volumes" "$T/err" || fail "refusal: $(cat "$T/err")"
ctl a volume create rv --size 64M --replicas 3 --durability async
wait_for "every copy in sync" 15 all_in_sync a
read -r P1 E1 _ _ D <<<"$(view a)"
[ "$P1" = a ] && [ "$D" = async ] || fail "primary '$P1', durability '$D'"
ctl b volume get rv -o json
[ "$(json 'd["durability"]')" = flush ] || fail "a copy's durability: $(cat "$T/out")"

# --- Writes complete ahead of the replicas, within the lag bound; the lag is reported.
before=$(metric a spd_replication_async_shadowed_total)
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 7 --blocks 4096 --qd 32 \
  --ops 30000 --seconds 4 --flush-every 32 --fua-ratio 0.2 --epoch "$E1" >"$T/w1.log" &
W=$!
peak=0
for _ in $(seq 30); do
  read -r _ _ _ lag _ <<<"$(view a)"
  [ "$lag" -le $((1 << 20)) ] || fail "a lag of $lag bytes, above the 1 MiB bound"
  [ "$lag" -le "$peak" ] || peak=$lag
  sleep 0.1
done
ctl a replica list
grep -q "^rv *a *primary *async .* B / [0-9]* ms" "$T/out" || fail "table: $(cat "$T/out")"
wait "$W" || { cat "$T/w1.log"; fail "writes through the primary failed"; }
after=$(metric a spd_replication_async_shadowed_total)
[ "$after" != missing ] && [ $((after - before)) -gt 100 ] ||
  fail "only $((after - before)) requests completed ahead of the replicas"
[ "$peak" -gt 0 ] || fail "no lag seen while writing (peak $peak)"
echo "async: $((after - before)) requests completed ahead of the replicas; lag peak $peak bytes"
drained() { read -r _ _ _ lag _ <<<"$(view a)"; [ "$lag" -eq 0 ]; }
wait_for "the lag drained" 20 drained
for n in a b c; do
  $PY "$BC" verify --uri "$(nbd_uri $n)" --state "$T/bc.json" >"$T/v.log" ||
    { cat "$T/v.log"; fail "copy on $n lacks acknowledged writes after the lag drained"; }
done

# --- kill -9 of the primary under QD32 writes: a copy takes over, lacking at most what the
# lag bound allows of the acknowledged writes; nothing is corrupt.
rc=0
$PY "$BC" write --uri "$(nbd_uri a)" --state "$T/bc.json" --seed 8 --qd 32 --ops 40000 \
  --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "$E1" --kill-pid "${PID[a]}" \
  --kill-after-ops 3000 >"$T/w2.log" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || { cat "$T/w2.log"; fail "the write run did not end with the lost connection ($rc)"; }
wait "${PID[a]}" 2>/dev/null || rc=$?
new_primary() { read -r P2 E2 _ <<<"$(view b)"; [ "$P2" != - ] && [ "$P2" != a ]; }
wait_for "a new primary" $((TTL + 12)) new_primary
[ "$E2" -gt "$E1" ] || fail "the new epoch $E2 is not above $E1"
rc=0
$PY "$BC" verify --uri "$(nbd_uri "$P2")" --state "$T/bc.json" >"$T/v2.log" || rc=$?
[ "$rc" -le 1 ] || { cat "$T/v2.log"; fail "verify on the new primary exited $rc"; }
summary=$(grep '^verify: .* blocks checked' "$T/v2.log")
lost=$(echo "$summary" | sed -n 's/.*lost \([0-9]*\).*/\1/p')
regressed=$(echo "$summary" | sed -n 's/.*regressed \([0-9]*\).*/\1/p')
corrupt=$(echo "$summary" | sed -n 's/.*corrupt \([0-9]*\).*/\1/p')
[ -n "$lost" ] && [ -n "$regressed" ] && [ -n "$corrupt" ] || fail "no verify summary: $summary"
[ "$corrupt" -eq 0 ] || { cat "$T/v2.log"; fail "corrupt blocks on the new primary"; }
[ $((lost + regressed)) -le 256 ] ||
  { cat "$T/v2.log"; fail "the new primary lacks $((lost + regressed)) acknowledged blocks (bound 256)"; }
# What it holds is a FLUSH-consistent prefix of the writes (the replicas pause at each barrier).
$PY "$BC" verify --uri "$(nbd_uri "$P2")" --state "$T/bc.json" --prefix >"$T/v3.log" ||
  { cat "$T/v3.log"; fail "the new primary $P2 is no FLUSH-consistent prefix of the writes"; }
prefix=$(grep -o "FLUSH [0-9]*\.\.[0-9]* of [0-9]*" "$T/v3.log")
echo "async failover: the new primary $P2 lacks $lost + $regressed acknowledged blocks (bound 256); a prefix: $prefix"

# --- The old primary returns: every copy is resynced to the new primary's data, byte for byte.
start_node a
all_in_sync_p2() { all_in_sync "$P2"; }
wait_for "every copy back in sync" 60 all_in_sync_p2
for n in a b c; do
  $PY -c "
import hashlib, nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
d = hashlib.sha256()
for off in range(0, h.get_size(), 1 << 20):
    d.update(h.pread(1 << 20, off))
print(d.hexdigest())" "$(nbd_uri $n)" >"$T/sum.$n" || fail "cannot read the copy on $n"
done
cmp -s "$T/sum.a" "$T/sum.$P2" && cmp -s "$T/sum.b" "$T/sum.$P2" && cmp -s "$T/sum.c" "$T/sum.$P2" ||
  fail "the copies differ after the resync: $(cat "$T"/sum.a "$T"/sum.b "$T"/sum.c)"

# --- The freshest copy takes an asynchronous volume: with no primary, each in-sync copy stands
# with its durable generation for 1.5 s and leaves the volume to a fresher one. Y (stopped)
# is made to look fresher by its candidacy key (a generation no copy has); X must wait for it
# (no primary while Y is away, X counts its yields), and Y takes the volume once back.
X=a
Y=b
[ "$P2" != b ] || Y=c
[ "$P2" != a ] || X=c
kill -STOP "${PID[$Y]}"
kill -KILL "${PID[$P2]}"
wait "${PID[$P2]}" 2>/dev/null || rc=$?
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" put "/spd/v1/volumes/rv/candidates/$Y" \
  '{"epoch": 999999999, "seq": 1}' >/dev/null || fail "cannot put $Y's candidacy"
sleep $((TTL + 4))  # the lease of the dead primary, the candidacy window, and some
read -r P3 _ <<<"$(view $X)"
[ "$P3" = - ] || fail "$P3 took the volume while a fresher candidate ($Y) was away"
yields=$(metric $X spd_replication_candidacies_yielded_total)
[ "$yields" != missing ] && [ "$yields" -gt 0 ] || fail "$X did not yield to $Y ($yields)"
kill -CONT "${PID[$Y]}"
y_primary() { read -r P3 E3 _ <<<"$(view $X)"; [ "$P3" = "$Y" ]; }
wait_for "$Y the primary" 20 y_primary
[ "$E3" -gt "$E2" ] || fail "epoch $E3 not above $E2"
echo "freshest: $X yielded $yields times to the fresher $Y, which took the volume (epoch $E3)"
echo "replication async: OK (epochs $E1 -> $E2 -> $E3, primary a -> $P2 -> $Y)"
