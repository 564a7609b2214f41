# qemu-img: info over TCP, convert a random image in and back out, compare.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:128M
qemu-img info "nbd://127.0.0.1:$SPD_PORT/vol0" | grep -q "virtual size: 128 MiB" || fail "info"
head -c 64M /dev/urandom >"$T/in.raw"
qemu-img convert -n -f raw -O raw "$T/in.raw" "nbd+unix:///vol0?socket=$SPD_SOCK"
qemu-img convert -f raw -O raw "nbd+unix:///vol0?socket=$SPD_SOCK" "$T/out.raw"
head -c 64M "$T/out.raw" | cmp - "$T/in.raw" || fail "data differs"
# The rest of the volume was never written: zeros.
tail -c 64M "$T/out.raw" | cmp - <(head -c 64M /dev/zero) || fail "tail not zero"
qemu-img compare -f raw -F raw "$T/in.raw" "nbd+unix:///vol0?socket=$SPD_SOCK" 2>&1 |
  grep -q "differ\|size" || true
stop_spd2
