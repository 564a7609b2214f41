# One process per pool: a second spd2 on the same data directory, or `spd2 check` while a daemon
# serves the pool, is refused with a clear message and harms nothing; the first keeps serving.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:64M
head -c 1M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "$(uri)"
rc=0
timeout 20 "$SPD2" --data-dir "$T/data" --nbd-listen off --metrics-listen off --quiet \
  >"$T/second.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a second spd2 on the same pool started"
[ "$rc" -ne 124 ] || fail "a second spd2 on the same pool hung"
grep -q "in use by another process (pid $SPD_PID)" "$T/second.log" ||
  { cat "$T/second.log"; fail "no clear message for the second daemon"; }
rc=0
"$SPD2" check "$T/data/pool.img" >"$T/check.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "check ran on a pool in use"
grep -q "in use by another process" "$T/check.log" || { cat "$T/check.log"; fail "check message"; }
# The first daemon is untouched: same socket, same data.
[ -S "$SPD_SOCK" ] || fail "the second daemon removed the first one's socket"
rm -f "$T/out"
nbdcopy "$(uri)" "$T/out" && cmp -n $((1 << 20)) "$T/out" "$T/blob" || fail "first daemon harmed"
stop_spd2
"$SPD2" check "$T/data/pool.img" >"$T/check2.log" || { cat "$T/check2.log"; fail "check after stop"; }
