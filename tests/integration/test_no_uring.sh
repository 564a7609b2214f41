# io_uring blocked by seccomp (as in containers): spd2 falls back to epoll + posix, says so once,
# and still serves I/O correctly. Then the same with the sysctl kernel.io_uring_disabled.
source "$(dirname "$0")/lib.sh"
cc -O2 -o "$T/no_uring_exec" "$(dirname "$0")/no_uring_exec.c"
real_spd2=$SPD2
SPD2="$T/spd2-wrapped"
printf '#!/bin/sh\nexec %s %s "$@"\n' "$T/no_uring_exec" "$real_spd2" >"$SPD2"
chmod +x "$SPD2"
start_spd2 --volume vol0:128M
grep -q "io_uring unavailable" "$T/spd2.log" || { cat "$T/spd2.log"; fail "no fallback message"; }
grep -q "posix backend" "$T/spd2.log" || { cat "$T/spd2.log"; fail "posix backend not used"; }
head -c 16M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "$(uri)"
rm -f "$T/out"; nbdcopy "$(uri)" "$T/out" && cmp -n $((16 << 20)) "$T/out" "$T/blob" || fail "data differs on the fallback path"
stop_spd2
# --backend posix selects the fallback on purpose.
SPD2=$real_spd2
start_spd2 --backend posix
rm -f "$T/out"; nbdcopy "$(uri)" "$T/out" && cmp -n $((16 << 20)) "$T/out" "$T/blob" || fail "data differs with --backend posix"
stop_spd2
