# SIGTERM with writes in flight: exit 0, and after a restart every write that completed is there.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:256M
head -c 32M /dev/urandom >"$T/blob"
nbdcopy --requests=32 "$T/blob" "$(uri)" &
copy=$!
sleep 0.3
stop_spd2
wait "$copy" || true  # the copy may be cut off: only completed data is promised
start_spd2
# A full, flushed copy must survive a restart.
nbdcopy "$T/blob" "$(uri)"
stop_spd2
start_spd2
rm -f "$T/out"; nbdcopy "$(uri)" "$T/out" && cmp -n $((32 << 20)) "$T/out" "$T/blob" || fail "flushed data lost across restart"
stop_spd2
