# qemu-img: info over TCP (exact size), convert a random image in and back out over the unix
# socket, compare byte for byte; qemu-img compare agrees and sees a one-byte change.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:128M
info=$(qemu-img info --output=json "nbd://127.0.0.1:$SPD_PORT/vol0")
$PY - "$info" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
assert d["virtual-size"] == 128 << 20, d
assert d["format"] == "raw", d
PY
head -c 64M /dev/urandom >"$T/in.raw"
qemu-img convert -n -f raw -O raw "$T/in.raw" "nbd+unix:///vol0?socket=$SPD_SOCK"
qemu-img convert -f raw -O raw "nbd+unix:///vol0?socket=$SPD_SOCK" "$T/out.raw"
[ "$(stat -c %s "$T/out.raw")" -eq $((128 << 20)) ] || fail "out.raw is $(stat -c %s "$T/out.raw") bytes"
head -c 64M "$T/out.raw" | cmp - "$T/in.raw" || fail "data differs"
# The rest of the volume was never written: zeros.
tail -c 64M "$T/out.raw" | cmp - <(head -c 64M /dev/zero) || fail "tail not zero"
# qemu-img compare reads the volume itself: identical (the 64 MiB beyond in.raw read as zeros),
# exit 0; strict mode refuses the size difference, exit 1.
rc=0; qemu-img compare -f raw -F raw "$T/in.raw" "nbd+unix:///vol0?socket=$SPD_SOCK" >"$T/cmp" 2>&1 || rc=$?
[ "$rc" -eq 0 ] && grep -q "Images are identical" "$T/cmp" || { cat "$T/cmp"; fail "compare: exit $rc"; }
rc=0; qemu-img compare -s -f raw -F raw "$T/in.raw" "nbd+unix:///vol0?socket=$SPD_SOCK" >"$T/cmp" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$T/cmp"; fail "strict compare of 64M with 128M: exit $rc, want 1"; }
# One byte changed at 5 MiB + 12345 (to its complement, so it differs for sure): exit 1, and the
# mismatch reported at 5 MiB + 12288, the start of the sector that holds it.
off=$(((5 << 20) + 12345))
cp "$T/in.raw" "$T/changed.raw"
$PY - "$T/changed.raw" "$off" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))
PY
rc=0; qemu-img compare -f raw -F raw "$T/changed.raw" "nbd+unix:///vol0?socket=$SPD_SOCK" >"$T/cmp" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "Content mismatch at offset $(((5 << 20) + 12288))!" "$T/cmp" ||
  { cat "$T/cmp"; fail "compare with a changed byte: exit $rc"; }
stop_spd2
