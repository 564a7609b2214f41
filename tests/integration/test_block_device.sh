# A pool on a block device (a loop device over a file this test makes): O_DIRECT with the
# device's logical block size, BLKGETSIZE64, BLKDISCARD/BLKZEROOUT, reopen. Skips (exit 77 with a
# SKIP line) when this machine cannot make loop devices.
source "$(dirname "$0")/lib.sh"
truncate -s 512M "$T/backing"
dev=$(losetup --find --show "$T/backing" 2>/dev/null) || { echo "SKIP: no loop devices here"; exit 77; }
trap 'losetup -d "$dev" 2>/dev/null; cleanup' EXIT
SPD_POOL_SIZE=off
# --pool-size cannot apply to a device: refused with one line, exit 2.
rc=0; "$SPD2" --data-dir "$T/data" --pool "$dev" --pool-size 1G --quiet >"$T/refused" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "cannot apply" "$T/refused" || { cat "$T/refused"; fail "--pool-size on a device: exit $rc"; }
start_spd2 --pool "$dev" --volume blk:256M --chunk-size 64K
grep -q "uring backend" "$T/spd2.log" || { cat "$T/spd2.log"; fail "not on uring"; }
head -c 32M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "nbd+unix:///blk?socket=$SPD_SOCK"
# Discard and zero ranges, then check through the device path.
$PY - "$SPD_SOCK" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri("nbd+unix:///blk?socket=" + sys.argv[1])
h.trim(1 << 20, 4 << 20)
h.zero(64 << 10, 8 << 20, nbd.CMD_FLAG_NO_HOLE)
h.flush()
assert h.pread(1 << 20, 4 << 20) == b"\0" * (1 << 20)
assert h.pread(64 << 10, 8 << 20) == b"\0" * (64 << 10)
h.shutdown()
PY
stop_spd2
start_spd2 --pool "$dev"
rm -f "$T/out"; nbdcopy "nbd+unix:///blk?socket=$SPD_SOCK" "$T/out"
cmp -n $((4 << 20)) "$T/out" "$T/blob" || fail "data before the trimmed range"
cmp -n $((3 << 20)) -i $((5 << 20)) "$T/out" "$T/blob" || fail "data after the trimmed range"
stop_spd2
"$SPD2" check "$dev" >"$T/check" || { cat "$T/check"; fail "check on the device"; }
# A re-open does not rewrite free space: free chunks known to hold zeros (format 2) are not
# zeroed again, only the few allocatable or freed since (in the background). Measured at the
# device: sectors written while spd2 opens, serves and stops (before: all free space, ~470 MiB).
loop=$(basename "$dev")
written() { echo $(($(awk '{print $7}' "/sys/block/$loop/stat") * 512)); }
before=$(written)
start_spd2 --pool "$dev"
sleep 1  # let the background zeroing finish
stop_spd2
reopen_bytes=$(($(written) - before))
echo "re-open wrote $reopen_bytes bytes"
[ "$reopen_bytes" -lt $((64 << 20)) ] || fail "re-open rewrote free space ($reopen_bytes bytes)"
# No chunk handed out shows another volume's old data: a new volume gets the chunks freed by
# the TRIM above (and others); everything it did not write reads as zeros.
start_spd2 --pool "$dev" --volume other:128M
$PY - "$SPD_SOCK" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri("nbd+unix:///other?socket=" + sys.argv[1])
chunk = 64 << 10
for i in range(1024):  # 64 MiB: more chunks than were ever freed
    h.pwrite(b"\xab" * 512, i * chunk)
h.flush()
for i in range(1024):
    got = h.pread(chunk, i * chunk)
    assert got[:512] == b"\xab" * 512, i
    assert got[512:] == b"\0" * (chunk - 512), "chunk %d shows old data" % i
h.shutdown()
PY
stop_spd2
