# Tenant intents against a real daemon and real clients (fio over NBD): spd2 --qos on on the sim
# backend's modelled device (5,000 IOPS over 4 units). A tenant's limit caps the SUM of its two
# volumes while a volume of another tenant takes the rest; `spdctl tenant put` without the limit
# lifts it at once, on the same connections; a tenant's reservation is admitted beside the
# volumes' (exit 9 naming tenant.intent.reservation), and a deleted tenant's is free again; a
# restart gives the scheduler every stored tenant's intent before any call. Shares and upper
# bounds are asserted, not rates: the modelled device, not the machine, is the bottleneck.
source "$(dirname "$0")/lib.sh"
export SPD_CONTROL_SOCKET="$T/data/control.sock"
start() {  # a new daemon on $T/data, its three volumes written (reads of holes never reach the device)
  SPD_NBD_LISTEN=off start_spd2 --backend sim --sim-iops 5000 --sim-units 4 --qos on --cores 1 \
    --volume t1:64M --volume t2:64M --volume o1:64M
  for v in t1 t2 o1; do
    fio --name=w --ioengine=nbd --uri="nbd+unix:///$v?socket=$SPD_SOCK" --rw=write --bs=1M \
      --size=16M --iodepth=4 --output=/dev/null
  done
}
# fio_log VOLUME SECONDS: 4 KiB random reads at QD16 on one connection, each completion logged
# (time in ms of the run, for rate). The system's clock: fio's own TSC clock, calibrated at its
# start, can be off by several percent on a busy machine.
fio_log() {
  fio --name=r --ioengine=nbd --uri="nbd+unix:///$1?socket=$SPD_SOCK" --rw=randread --bs=4k \
    --size=16M --iodepth=16 --time_based --runtime="$2" --write_iops_log="$T/$1" \
    --clocksource=clock_gettime --output=/dev/null
}
rate() {  # rate VOLUME FROM_MS TO_MS: IOPS of the reads completed in (FROM, TO] of its run
  $PY -c "
n = sum(1 for l in open('$T/$1_iops.1.log') if $2 < int(l.split(',')[0]) <= $3)
print(n * 1000 // ($3 - $2))"
}
# t_limited WHEN FROM_MS TO_MS: T's volumes' IOPS in (FROM, TO] (t1, t2, their sum) and o1's,
# checked: T's sum within its limit of 600, o1 (tenant O) taking the rest.
t_limited() {
  t1=$(rate t1 "$2" "$3")
  t2=$(rate t2 "$2" "$3")
  o1=$(rate o1 "$2" "$3")
  sum=$((t1 + t2))
  echo "$1, T limited to 600: t1 $t1 + t2 $t2 = $sum IOPS; o1 of tenant O beside them: $o1 IOPS"
  [ "$sum" -le 630 ] || fail "$1: T's volumes did $sum IOPS together (limit 600)"
  [ "$o1" -gt $((3 * sum)) ] || fail "$1: o1 got $o1 IOPS beside T's $sum"
}

start
grep -q "qos: on" "$T/spd2.log" || fail "no qos line in the log: $(cat "$T/spd2.log")"
expect 0 tenant put T --limit-iops 600
expect 0 tenant put O
expect 0 policy set t1 --tenant T
expect 0 policy set t2 --tenant T
expect 0 policy set o1 --tenant O
expect 0 tenant get T -o json
[ "$(json "(d['kind'], d['intent'])")" = "('Tenant', {'limit': {'iops': 600}})" ] ||
  fail "tenant get: $(cat "$T/out")"
# A tenant has no latency target (its volumes do): not even a flag for it.
expect 2 tenant put T --latency-target 99:2000

# The limit holds for the sum of T's volumes while o1 takes the rest; then T is put again
# without it, and the same connections speed up.
fio_log t1 8 &
f1=$!
fio_log t2 8 &
f2=$!
fio_log o1 8 &
f3=$!
sleep 4.5
expect 0 tenant put T
wait "$f1"
wait "$f2"
wait "$f3"
t_limited "first run" 1000 4000
[ $((3 * t1)) -gt "$sum" ] && [ $((3 * t2)) -gt "$sum" ] || fail "T's volumes do not share: $t1, $t2"
u1=$(rate t1 5500 7500)
u2=$(rate t2 5500 7500)
free=$((u1 + u2))
echo "tenant T without its limit, same connections: t1 $u1 + t2 $u2 = $free IOPS"
[ "$free" -gt 1000 ] && [ "$free" -gt $((3 * sum / 2)) ] ||
  fail "T's sum did not rise without its limit: $sum -> $free IOPS"

# Admission: 90% of the device is 4,500 IOPS of reservations, tenants' and volumes' together.
expect 9 tenant put O --reserve-iops 5000
grep -q "tenant.intent.reservation: .* are left to reserve" "$T/err" ||
  fail "admission error: $(cat "$T/err")"
expect 0 tenant put O --reserve-iops 3000
expect 9 policy set t1 --tenant T --reserve-iops 2000  # a volume's counts beside O's
grep -q "policy.intent.reservation: .* are left to reserve" "$T/err" ||
  fail "admission error: $(cat "$T/err")"
expect 9 tenant put T --reserve-iops 2000
expect 0 tenant put O --reserve-iops 3500  # its own does not count against its new one
# A deleted tenant's reservation is free again.
expect 0 tenant put O
expect 0 tenant put X --reserve-iops 4000
expect 9 tenant put O --reserve-iops 1000
expect 0 tenant delete X
expect 0 tenant put O --reserve-iops 1000
expect 0 tenant put O

# A restart: the stored intent of T holds from the start, before any call. (The sim keeps no
# data across it: a new pool with the same volumes; the state store keeps T and the policies.)
expect 0 tenant put T --limit-iops 600
stop_spd2
start
fio_log t1 4 &
f1=$!
fio_log t2 4 &
f2=$!
fio_log o1 4
wait "$f1"
wait "$f2"
t_limited "after a restart" 500 3500
expect 0 tenant list -o json
[ "$(json "[(t['name'], t['intent']) for t in d['items']]")" = \
  "[('O', {}), ('T', {'limit': {'iops': 600}})]" ] || fail "tenant list: $(cat "$T/out")"
stop_spd2
echo "test_qos_tenants: ok"
