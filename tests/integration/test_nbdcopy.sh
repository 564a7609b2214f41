# nbdcopy round trips with several connections and requests in flight.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:96M
head -c 96M /dev/urandom >"$T/in"
nbdcopy --connections=4 --requests=16 "$T/in" "$(uri)"
nbdcopy --connections=2 "$(uri)" "$T/out"
cmp "$T/in" "$T/out" || fail "round trip differs"
stop_spd2
# Restart: the data survived a clean stop.
start_spd2
nbdcopy "$(uri)" "$T/out2"
cmp "$T/in" "$T/out2" || fail "data lost across restart"
stop_spd2
