# spd-it: alone (it measures the daemon's CPU when idle)
# Idle means idle: after traffic stops, spd2 (two reactors, adaptive polling with a long window,
# the QoS scheduler with its latency controller's tick, the trace exporter's thread) goes back
# to sleeping. A reactor that
# kept spinning would use a whole core: about 100 clock ticks per second.
source "$(dirname "$0")/lib.sh"
mport=$((SPD_PORT + 1))
SPD_METRICS="127.0.0.1:$mport" start_spd2 --volume vol0:64M --cores 2 --reactor-poll-us 1000 \
  --qos on --trace-endpoint http://127.0.0.1:9/v1/traces --trace-slow-ms 60000
head -c 8M /dev/urandom >"$T/blob"
for _ in 1 2 3; do
  nbdcopy "$T/blob" "$(uri)"
  nbdcopy "$(uri)" "$T/out"
done
cmp -n $((8 << 20)) "$T/blob" "$T/out" || fail "data"
# metric NAME: the sample NAME, or the sum of its series (spd_reactor_* have one per reactor).
metric() {
  curl -s "http://127.0.0.1:$mport/metrics" |
    awk -v m="$1" 'index($1, m "{") == 1 || $1 == m {s += $2; n++} END {if (n) print s}'
}
polls=$(metric spd_reactor_polls_total)
[ "${polls:-0}" -gt 0 ] || fail "the reactors never polled during traffic"
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$SPD_PID/stat"; }
t0=$(ticks)
sleep 3
t1=$(ticks)
echo "idle: $((t1 - t0)) clock ticks in 3 s; polls during traffic: $polls"
[ $((t1 - t0)) -le 6 ] || fail "spd2 used $((t1 - t0)) clock ticks in 3 idle seconds"
# The metrics scrape above is the only traffic since: no poll window stays open.
p2=$(metric spd_reactor_polls_total)
[ $((p2 - polls)) -le 10 ] || fail "reactors kept polling while idle ($polls -> $p2)"
# The scheduler saw the traffic (it was on the data path) and arms no timer once it is over.
[ "$(metric spd_qos_released_by_weight_total)" -gt 0 ] || fail "the QoS scheduler saw no request"
# With 100 volumes made through the control API: the control plane's threads (gRPC's) sleep
# too, and there are at most 12 of them. The issue's target is 0.1% of a core (1 tick in 10 s;
# 0 measured on a quiet machine); the assert allows 3 ticks: a loaded CI machine once charged
# 2 (tick granularity, the creates' last work). A thread that spins uses about 1,000.
for i in $(seq 100); do expect 0 volume create "idle$i" --size 16M --socket "$T/data/control.sock"; done
sleep 2
t0=$(ticks)
sleep 10
t1=$(ticks)
others=0
for task in /proc/"$SPD_PID"/task/*; do
  # spd2's own threads name themselves spd2 (the main one) or spd-*: the others are gRPC's.
  case "$(cat "$task/comm")" in spd2 | spd-* | iou-*) ;; *) others=$((others + 1)) ;; esac
done
echo "idle with 100 volumes: $((t1 - t0)) clock ticks in 10 s; $others control-plane threads"
[ $((t1 - t0)) -le 3 ] || fail "spd2 with 100 volumes used $((t1 - t0)) clock ticks in 10 idle seconds"
[ "$others" -gt 0 ] && [ "$others" -le 12 ] || fail "$others threads besides the reactors"
stop_spd2
