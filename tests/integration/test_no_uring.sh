# io_uring blocked by seccomp (as in containers): spd2 falls back to epoll + posix, says so once
# (in its log and as the control API's backend-fallback event), and still serves I/O correctly.
# --backend posix chosen on purpose is no fallback: no event.
source "$(dirname "$0")/lib.sh"
cc -O2 -o "$T/no_uring_exec" "$(dirname "$0")/no_uring_exec.c"
real_spd2=$SPD2
SPD2="$T/spd2-wrapped"
printf '#!/bin/sh\nexec %s %s "$@"\n' "$T/no_uring_exec" "$real_spd2" >"$SPD2"
chmod +x "$SPD2"
start_spd2 --volume vol0:128M
grep -q "io_uring unavailable" "$T/spd2.log" || { cat "$T/spd2.log"; fail "no fallback message"; }
grep -q "posix backend" "$T/spd2.log" || { cat "$T/spd2.log"; fail "posix backend not used"; }
# The event stream's first event says so (a watcher from the start sees it; at once: the
# stream waits for events without limit).
export SPD_CONTROL_SOCKET="$T/data/control.sock"
timeout 10 "$SPDCTL" events --since 1 --count 1 -o json >"$T/out" || fail "no event within 10 s"
$PY -c "import json; e = json.load(open('$T/out')); \
  assert (e['seq'], e['type'], e['volume']) == (1, 'backend-fallback', ''), e; \
  assert e['message'].startswith('io_uring unavailable (') and 'posix backend' in e['message'], e" ||
  fail "no backend-fallback event: $(cat "$T/out")"
expect 0 node info -o json
[ "$(json "d['engine']")" = epoll ] || fail "node info: $(cat "$T/out")"
head -c 16M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "$(uri)"
rm -f "$T/out"; nbdcopy "$(uri)" "$T/out" && cmp -n $((16 << 20)) "$T/out" "$T/blob" || fail "data differs on the fallback path"
stop_spd2
# --backend posix selects the fallback on purpose.
SPD2=$real_spd2
start_spd2 --backend posix
expect 0 volume create probe --size 1M
timeout 10 "$SPDCTL" events --since 1 --count 1 -o json >"$T/out" || fail "no event within 10 s"
[ "$(json "d['type'], d['volume']")" = "volume-created probe" ] ||
  fail "--backend posix: the first event is $(cat "$T/out")"
rm -f "$T/out"; nbdcopy "$(uri)" "$T/out" && cmp -n $((16 << 20)) "$T/out" "$T/blob" || fail "data differs with --backend posix"
stop_spd2
