# Volumes spread over reactors (--spread-volumes, the default): with two reactors vol1 is owned
# by reactor 1, which serves its requests and asks reactor 0 (the pool's) by message only for
# chunks and commits. fio with crc32c verification over four connections (two per reactor) on
# both volumes at once, a copy of each, a restart with every volume on reactor 0
# (--spread-volumes 0) that must show the same bytes, and the counters that say which path ran.
source "$(dirname "$0")/lib.sh"
mport=$((SPD_PORT + 1))
metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
job=(--ioengine=nbd --rw=randwrite --bs=4k --iodepth=16 --size=4M --offset_increment=8M
  --numjobs=4 --verify=crc32c --verify_fatal=1 --group_reporting)
cd "$T"
SPD_METRICS="127.0.0.1:$mport" start_spd2 --volume vol0:64M --volume vol1:64M --cores 2
# Both volumes at once: the owners work in parallel.
fio --name=a "${job[@]}" --uri="$(uri vol0)" --output="$T/fio0" &
f0=$!
fio --name=b "${job[@]}" --uri="$(uri vol1)" --output="$T/fio1" ||
  { cat "$T/fio1"; fail "write+verify on vol1 (reactor 1's)"; }
wait "$f0" || { cat "$T/fio0"; fail "write+verify on vol0 (reactor 0's)"; }
# A trim of one whole chunk of vol1 and a write-zeroes inside another, by the owner.
/usr/bin/python3 - "$SPD_SOCK" <<'PY' || fail "trim/zero on vol1"
import sys, nbd
h = nbd.NBD(); h.connect_uri(f"nbd+unix:///vol1?socket={sys.argv[1]}")
h.trim(1 << 20, 0)                   # the first chunk (1 MiB): unmapped
h.zero(8192, (8 << 20) + 4096)       # inside the chunk at 8 MiB: zeroed in place
assert h.pread(1 << 20, 0) == bytes(1 << 20), "trimmed chunk does not read as zeros"
assert h.pread(8192, (8 << 20) + 4096) == bytes(8192), "zeroed range does not read as zeros"
h.flush(); h.shutdown()
PY
msgs=$(metric spd_volume_owner_pool_messages_total)
hops=$(metric spd_dispatch_pool_hops_total)
echo "spread: $msgs owner messages to the pool, $hops requests passed on whole"
[ "${msgs:-0}" -gt 4 ] || fail "vol1's owner asked the pool for no chunk ($msgs)"
[ "${hops:-0}" -eq 0 ] || fail "aligned requests went on to reactor 0 whole ($hops)"
nbdcopy "$(uri vol0)" "$T/vol0.a" && nbdcopy "$(uri vol1)" "$T/vol1.a"
stop_spd2

SPD_METRICS="127.0.0.1:$mport" start_spd2 --cores 2 --spread-volumes 0
nbdcopy "$(uri vol0)" "$T/vol0.b" && nbdcopy "$(uri vol1)" "$T/vol1.b"
cmp "$T/vol0.a" "$T/vol0.b" || fail "vol0 changed across the restart"
cmp "$T/vol1.a" "$T/vol1.b" || fail "vol1 changed across the restart"
# vol0 was neither trimmed nor zeroed: fio's own verification of it holds after the restart.
fio --name=a "${job[@]}" --uri="$(uri vol0)" --verify_only=1 --output="$T/fio2" ||
  { cat "$T/fio2"; fail "verify pass of vol0 after the restart"; }
msgs=$(metric spd_volume_owner_pool_messages_total)
[ "${msgs:-0}" -eq 0 ] || fail "--spread-volumes 0 still used an owner's path ($msgs)"
stop_spd2
