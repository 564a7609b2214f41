#!/usr/bin/env bash
# bench/health: what reading host health costs, spd2's way beside the usual ways, in one run.
# 96 temperature sensors on a fake sysfs tree, spd2 polling them at 1 Hz with Redfish on:
#   - one cached read via libspdr (ns, p99; system calls per read from strace -c)
#     vs open + read + close of one sysfs file
#   - all 96 via an libspdr snapshot vs `sensors -u` on the same tree (time, system calls)
#   - all 96 via Redfish (96 Sensor GETs on one HTTPS keep-alive connection; p99 of rounds),
#     ThermalMetrics (one GET with all 96), the Sensors collection with $expand=. (one GET with
#     every Sensor in line), one Sensor GET (p99)
#   - spd2's CPU while polling 96 sensors at 1 Hz (ticks over 30 s)
#   - hardware reads per second with 1 and with 64 libspdr readers (spd_health_reads_total)
# Prints a table with the issue's targets. Needs root for `sensors` (a private mount namespace
# puts the fake tree over /sys/class) and strace.
#   bench/health/run.sh [BUILD_DIR]       (default build/; targets spd2 health_bench)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${1:-$repo/build}
SPD2=$B/spd2
HB=$B/bench/health_bench
[ -x "$SPD2" ] && [ -x "$HB" ] || { echo "build spd2 and health_bench first" >&2; exit 1; }
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)" >&2; exit 1; }
source "$repo/tests/integration/fake_sysfs.sh"
T=$(mktemp -d /tmp/spd-bench-health.XXXXXX)
PID=""
cleanup() {
  local rc=0
  if [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; then
    wait "$PID" 2>/dev/null || rc=$?
    [ "$rc" = 0 ] || echo "spd2 exited $rc at its stop" >&2
  fi
  rm -rf "$T"
}
trap cleanup EXIT
N=96
fake_sysfs_many "$T/sys" $N
cache=$T/health.cache
port=$((20000 + RANDOM % 12000))
mport=$((port + 1))
salt=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
hash=$(python3 -c "import hashlib,sys; print(hashlib.pbkdf2_hmac('sha256', b'bench-pass', bytes.fromhex('$salt'), 10000).hex())")
echo "bench:Administrator:pbkdf2-sha256\$10000\$$salt\$$hash" >"$T/users"
chmod 600 "$T/users"
"$SPD2" --data-dir "$T/data" --pool-size 1G --nbd-listen off --quiet --metrics-listen "127.0.0.1:$mport" \
  --sysfs-root "$T/sys" --health-shm "$cache" --health-period-ms 1000 \
  --redfish-listen "127.0.0.1:$port" --redfish-users "$T/users" >"$T/spd2.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -sk -o /dev/null "https://127.0.0.1:$port/redfish/v1" && break
  sleep 0.1
done
metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
sleep 2

# syscalls NAME ARGS...: system calls of health_bench ARGS (strace -c -f total).
syscalls() { strace -c -f -o "$T/strace.$1" "$HB" "${@:2}" >/dev/null; awk '/ total$/ {print $4}' "$T/strace.$1"; }

name=hwmon/bench0/temp1
c=$("$HB" cached "$cache" $name 200000)
s0=$(syscalls c0 cached "$cache" $name 1)
s1=$(syscalls c1 cached "$cache" $name 100000)  # 6.4 M reads
cached_sys="$((s1 - s0)) syscalls in 6.4 M reads"
sysfs_file=/sys/class/net/lo/mtu
f=$("$HB" sysfs $sysfs_file 20000)
f_sys=$(awk -v a="$(syscalls f0 sysfs $sysfs_file 1)" -v b="$(syscalls f1 sysfs $sysfs_file 1001)" \
  'BEGIN {printf "%.1f", (b - a) / 1000}')
snap=$("$HB" snapshot "$cache" 100000)
snap_sys="$(($(syscalls s1 snapshot "$cache" 100001) - $(syscalls s0 snapshot "$cache" 1))) syscalls in 100 k"

# lm-sensors on the same tree: a private mount namespace with the fake class/ over /sys/class.
sensors_line="n/a (needs root and lm-sensors)"
if [ "$(id -u)" = 0 ] && command -v sensors >/dev/null; then
  cat >"$T/sensors.sh" <<EOF
mount --bind "$T/sys/class" /sys/class
for i in \$(seq 50); do
  s=\$(date +%s%N); sensors -u >/dev/null 2>&1; e=\$(date +%s%N); echo \$(( (e - s) / 1000 ))
done >"$T/sensors.us"
strace -c -f -o "$T/strace.sensors" sensors -u >"$T/sensors.out" 2>&1
EOF
  unshare -m bash "$T/sensors.sh"
  sensors_p50=$(sort -n "$T/sensors.us" | awk '{a[NR] = $1} END {print a[int(NR / 2) + 1]}')
  sensors_p99=$(sort -n "$T/sensors.us" | tail -1)
  sensors_sys=$(awk '/ total$/ {print $4}' "$T/strace.sensors")
  sensors_n=$(awk '/_input:/ {n++} END {print n + 0}' "$T/sensors.out")
  sensors_line="p50 ${sensors_p50} us, max of 50 ${sensors_p99} us, ${sensors_sys} syscalls ($sensors_n inputs)"
fi

rf=$("$HB" redfish "https://127.0.0.1:$port" bench bench-pass 200)

# CPU of spd2 polling 96 sensors at 1 Hz (Redfish and metrics idle) over 30 s: clock ticks
# (utime + stime, sampled) and the scheduler's exact run time of every thread (schedstat, ns).
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
runtime_ns() { cat /proc/"$PID"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }  # mawk: %d stops at 2^31
sleep 1
t0=$(ticks)
n0=$(runtime_ns)
sleep 30
t1=$(ticks)
n1=$(runtime_ns)
cpu=$(awk -v n=$((n1 - n0)) 'BEGIN {printf "%.4f", 100 * n / 30e9}')
cpu_ticks=$(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN {printf "%.3f", 100 * t / hz / 30}')

# Hardware reads with 1 and 64 readers (10 s each): per poll round, and rounds per second.
rate() {
  local r0 r1 p0 p1
  r0=$(metric spd_health_reads_total)
  p0=$(metric spd_health_polls_total)
  "$HB" readers "$cache" "$1" 10 >"$T/readers.$1"
  r1=$(metric spd_health_reads_total)
  p1=$(metric spd_health_polls_total)
  echo "$(awk -v a="$r0" -v b="$r1" -v p=$((p1 - p0)) 'BEGIN {printf "%.1f", (b - a) / p}') $((p1 - p0)) $(kv cached_reads_per_s "$(cat "$T/readers.$1")")"
}
read -r hw1 rounds1 cr1 <<<"$(rate 1)"
read -r hw64 rounds64 cr64 <<<"$(rate 64)"

ok() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "yes" : "NO"}'; }
echo
echo "bench/health: $N sensors, spd2 $(git -C "$repo" rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%Y-%m-%d)"
printf '%-50s %-46s %-10s %s\n' "measure" "spd2" "target" "met"
printf '%-50s %-46s %-10s %s\n' "one cached read, libspdr (p99 of 64-read batches)" \
  "$(kv p99_ns "$c") ns (p50 $(kv p50_ns "$c")), $cached_sys" "<= 50 ns" "$(ok "$(kv p99_ns "$c")" 50)"
printf '%-50s %-46s\n' "  vs open+read+close of $sysfs_file" "p99 $(kv p99_ns "$f") ns (p50 $(kv p50_ns "$f")), $f_sys syscalls each"
printf '%-50s %-46s %-10s %s\n' "all $N, libspdr snapshot (p99)" \
  "$(kv p99_ns "$snap") ns (p50 $(kv p50_ns "$snap")), $snap_sys" "<= 1000 ns" "$(ok "$(kv p99_ns "$snap")" 1000)"
printf '%-50s %-46s\n' "  vs sensors -u on the same tree" "$sensors_line"
printf '%-50s %-46s %-10s %s\n' "all $N via Redfish, $N GETs keep-alive (p99)" \
  "$(kv all_p99_ms "$rf") ms (p50 $(kv all_p50_ms "$rf"))" "<= 5 ms" "$(ok "$(kv all_p99_ms "$rf")" 5)"
printf '%-50s %-46s\n' "  all $N in one GET of ThermalMetrics (p99)" "$(kv thermal_p99_ms "$rf") ms (p50 $(kv thermal_p50_ms "$rf"))"
printf '%-50s %-46s %-10s %s\n' "all $N in one GET of Sensors?\$expand=. (p99)" \
  "$(kv expand_p99_ms "$rf") ms (p50 $(kv expand_p50_ms "$rf"))" "<= 5 ms" "$(ok "$(kv expand_p99_ms "$rf")" 5)"
printf '%-50s %-46s %-10s %s\n' "one Sensor GET via Redfish (p99)" \
  "$(kv one_p99_ms "$rf") ms (p50 $(kv one_p50_ms "$rf"))" "<= 1 ms" "$(ok "$(kv one_p99_ms "$rf")" 1)"
printf '%-50s %-46s %-10s %s\n' "spd2 CPU, $N sensors at 1 Hz (30 s, schedstat)" \
  "$cpu % of a core (ticks: $cpu_ticks %, $((t1 - t0)))" \
  "<= 0.1 %" "$(ok "$cpu" 0.1)"
printf '%-50s %-46s\n' "hardware reads per round, 1 libspdr reader" "$hw1 ($rounds1 rounds in 10 s; reader: $cr1 reads/s)"
printf '%-50s %-46s\n' "hardware reads per round, 64 libspdr readers" "$hw64 ($rounds64 rounds in 10 s; readers: $cr64 reads/s)"
