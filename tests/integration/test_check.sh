# spd2 check: a clean pool is consistent; a corrupt superblock copy is reported (exit 1),
# repaired only with --repair, and the pool still opens with its data.
SPD_POOL_SIZE=256M  # the test checksums the whole pool file several times
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:64M
head -c 8M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "$(uri)"
stop_spd2
pool="$T/data/pool.img"
"$SPD2" check "$pool" >"$T/c1" || { cat "$T/c1"; fail "clean pool not consistent"; }
grep -q "1 volume(s)" "$T/c1" || { cat "$T/c1"; fail "volume count"; }
grep -Eq "log ends at (LSN [0-9]+ at log offset [0-9]+: (bad magic|wrong lsn|bad checksum)|the end)" \
  "$T/c1" || { cat "$T/c1"; fail "where the log ends"; }
before=$(md5sum <"$pool")
# Corrupt superblock copy B (bytes 4096..): detected, not touched without --repair.
printf 'garbage' | dd of="$pool" bs=1 seek=4200 conv=notrunc status=none
rc=0; "$SPD2" check "$pool" >"$T/c2" || rc=$?
[ "$rc" -eq 1 ] || { cat "$T/c2"; fail "corruption not reported (rc $rc)"; }
grep -q "superblock copy B is corrupt" "$T/c2" || { cat "$T/c2"; fail "wrong report"; }
after_check=$(md5sum <"$pool")
[ "$before" != "$after_check" ] || fail "corruption did not land"
rc=0; "$SPD2" check "$pool" >/dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "a second check without --repair exited $rc (still corrupt: 1)"
[ "$(md5sum <"$pool")" = "$after_check" ] || fail "check without --repair wrote to the pool"
"$SPD2" check "$pool" --repair >"$T/c3" || { cat "$T/c3"; fail "repair failed"; }
"$SPD2" check "$pool" >"$T/c4" || { cat "$T/c4"; fail "still inconsistent after repair"; }
start_spd2
rm -f "$T/out"; nbdcopy "$(uri)" "$T/out" && cmp -n $((8 << 20)) "$T/out" "$T/blob" || fail "data lost"
stop_spd2
# Not a pool at all: exit 1 with a clear line, nothing written.
head -c 1M /dev/urandom >"$T/notpool"
sum=$(md5sum <"$T/notpool")
rc=0; "$SPD2" check "$T/notpool" >"$T/c5" || rc=$?
[ "$rc" -eq 1 ] && grep -q "no valid superblock" "$T/c5" || { cat "$T/c5"; fail "non-pool"; }
[ "$(md5sum <"$T/notpool")" = "$sum" ] || fail "check wrote to a non-pool"
