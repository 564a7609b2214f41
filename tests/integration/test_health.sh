# spd2's host-health collector (docs/health.md): on a fake sysfs tree, a libspdr reader
# (spd_health_dump --open) sees every sensor, a changed value at a later poll, thresholds
# as warning/critical and a failing file as failed, with the spd_health_* metrics; --health
# auto on this machine's own /sys (no sensors here) starts fine; --health on fails the start
# when the cache cannot be made, auto does not; off makes no cache.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fake_sysfs.sh"
DUMP=${SPD_HEALTH_DUMP:-$(dirname "$SPD2")/spd_health_dump}
[ -x "$DUMP" ] || fail "no spd_health_dump at $DUMP"
root=$T/sys
fake_sysfs "$root"
cache=$T/health.cache
period_ms=500
mport=$((SPD_PORT + 1))
SPD_METRICS="127.0.0.1:$mport" start_spd2 --volume vol0:64M --sysfs-root "$root" \
  --health-shm "$cache" --health-period-ms $period_ms --health-source-period thermal/=5000
metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# field NAME KEY: KEY of sensor NAME as the cache shows it now.
field() {
  "$DUMP" --open "$cache" --json |
    $PY -c "import json,sys; print(next(s['$2'] for s in json.load(sys.stdin) if s['name'] == '$1'))"
}
# wait_for NAME KEY WANT: until field is WANT; prints the seconds it took (fails after 10 s).
wait_for() {
  local start now
  start=$(date +%s.%N)
  for _ in $(seq 200); do
    if [ "$(field "$1" "$2")" = "$3" ]; then
      now=$(date +%s.%N)
      awk -v s="$start" -v e="$now" 'BEGIN {printf "%.2f", e - s}'
      return 0
    fi
    sleep 0.05
  done
  fail "$1 $2 never became $3 (is $(field "$1" "$2"))"
}
"$DUMP" --open "$cache" --json >"$T/dump.json" || fail "libspdr could not read the cache"
n=$($PY -c "import json; print(len(json.load(open('$T/dump.json'))))")
[ "$n" -eq 8 ] || { cat "$T/dump.json"; fail "$n sensors in the cache, want 8"; }
[ "$(metric spd_health_sensors)" = 8 ] || fail "spd_health_sensors $(metric spd_health_sensors)"
wait_for hwmon/spdcpu/Package_id_0 value 42.5 >/dev/null
# --health-source-period: the thermal zone at its own period, the chips at --health-period-ms.
[ "$(field thermal/x86_pkg_temp period_ms)" = 5000.0 ] || fail "thermal period $(field thermal/x86_pkg_temp period_ms)"
[ "$(field hwmon/spdcpu/Package_id_0 period_ms)" = 500.0 ] || fail "hwmon period"
[ "$(field hwmon/spdcpu/Package_id_0 status)" = ok ] || fail "status not ok at 42.5"
# A change reaches the cache (at the next poll; how soon is reported, not asserted: the suite
# has no timing asserts, and the collector's periods are checked in collector_test.cc).
fake_put "$root" class/hwmon/hwmon0/temp1_input 47000
took=$(wait_for hwmon/spdcpu/Package_id_0 value 47.0)
echo "value change seen through libspdr after ${took}s (period ${period_ms} ms)"
fake_put "$root" class/hwmon/hwmon0/temp1_input 85000
wait_for hwmon/spdcpu/Package_id_0 status warning >/dev/null
fake_put "$root" class/hwmon/hwmon0/temp1_input 100000
wait_for hwmon/spdcpu/Package_id_0 status critical >/dev/null
fake_put "$root" class/hwmon/hwmon2/temp1_input 71000
wait_for "hwmon/spdpsu/PSU_inlet" status critical >/dev/null
# A file that reads empty: failed, counted; back to ok once it reads again.
errors0=$(metric spd_health_read_errors_total)
: >"$root/class/hwmon/hwmon1/in0_input"
wait_for hwmon/spdboard/Vcore status failed >/dev/null
[ "$(metric spd_health_read_errors_total)" -gt "$errors0" ] || fail "read errors not counted"
fake_put "$root" class/hwmon/hwmon1/in0_input 1200
wait_for hwmon/spdboard/Vcore status ok >/dev/null
[ "$(metric spd_health_reads_total)" -gt 0 ] || fail "spd_health_reads_total"
[ "$(metric spd_health_polls_total)" -gt 2 ] || fail "spd_health_polls_total"
stop_spd2
[ ! -e "$cache" ] || fail "the cache file outlived spd2"

# This machine's own /sys: whatever it has (none here), spd2 starts and says how many.
start_spd2 --health-shm "$T/own.cache"
grep -q "health: [0-9]* sensor(s)" "$T/spd2.log" || fail "no health line in the log"
"$DUMP" --open "$T/own.cache" >/dev/null || fail "own cache unreadable"
shopt -s nullglob
own=(/sys/class/hwmon/hwmon* /sys/class/thermal/thermal_zone*)
shopt -u nullglob
[ "${#own[@]}" -gt 0 ] || grep -q "health: 0 sensor(s)" "$T/spd2.log" || fail "sensors on a host without"
# A second spd2 on the same cache name while the first lives: with --health on it refuses to
# start (exit 1) naming the first's pid; with auto it starts without health; either way the
# first's cache stays as it is, also once the second has stopped (before: the second replaced
# it, and at its exit unlinked it).
ino() { stat -c %i "$T/own.cache"; }
ino0=$(ino)
rc=0
timeout 20 "$SPD2" --data-dir "$T/second" --nbd-listen off --quiet --health on \
  --health-shm "$T/own.cache" >"$T/second-on.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$T/second-on.log"; fail "a second --health on exited $rc, want 1"; }
grep -q "written by another process (pid $SPD_PID)" "$T/second-on.log" ||
  { cat "$T/second-on.log"; fail "the refusal does not name the first spd2"; }
"$SPD2" --data-dir "$T/second" --nbd-listen off --quiet --health-shm "$T/own.cache" \
  >"$T/second.log" 2>&1 &
second=$!
for _ in $(seq 200); do
  grep -q "spd2 serving" "$T/second.log" && break
  kill -0 "$second" 2>/dev/null || { cat "$T/second.log"; fail "a second auto spd2 exited"; }
  sleep 0.05
done
grep -q "health: not collecting.*written by another process" "$T/second.log" ||
  { cat "$T/second.log"; fail "the second auto spd2 did not say why it has no health"; }
kill -TERM "$second"
wait "$second" || fail "the second spd2 did not stop cleanly"
[ "$(ino)" = "$ino0" ] || fail "the second spd2 replaced or removed the first's cache"
"$DUMP" --open "$T/own.cache" >/dev/null || fail "the first's cache unreadable after the second"
stop_spd2
[ ! -e "$T/own.cache" ] && [ ! -e "$T/own.cache.lock" ] || fail "the cache or its lock outlived spd2"
# A cache that cannot be made: auto goes on without health, on refuses to start (exit 1).
start_spd2 --health-shm /nonexistent-dir/x/health.cache
grep -q "health: not collecting" "$T/spd2.log" || fail "auto: no warning"
stop_spd2
rc=0
"$SPD2" --data-dir "$T/data" --nbd-listen off --quiet --health on \
  --health-shm /nonexistent-dir/x/health.cache >>"$T/on.log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$T/on.log"; fail "--health on with no cache exited $rc, want 1"; }
for bad in "--health-source-period thermal/" "--health-source-period =5" \
  "--health-source-period x=1" "--health-shm relative" "--health maybe"; do
  rc=0
  # shellcheck disable=SC2086
  "$SPD2" --data-dir "$T/data" --nbd-listen off --quiet $bad >>"$T/bad.log" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$T/bad.log"; fail "$bad exited $rc, want 2"; }
done
start_spd2 --health off --health-shm "$T/off.cache"
[ ! -e "$T/off.cache" ] || fail "--health off made a cache"
stop_spd2
echo "test_health: ok"
