# fio's nbd engine: random writes with crc32c verification, two connections, then a read pass.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:256M
cd "$T"  # fio writes its verify state files into the working directory
fio --name=w --ioengine=nbd --uri="$(uri)" --rw=randwrite --bs=4k --iodepth=16 --size=64M \
  --verify=crc32c --verify_fatal=1 --numjobs=1 --output="$T/fio1" || { cat "$T/fio1"; fail "write+verify"; }
# The same job description with verify_only: reads everything back and checks it.
fio --name=w --ioengine=nbd --uri="$(uri)" --rw=randwrite --bs=4k --iodepth=16 --size=64M \
  --verify=crc32c --verify_only=1 --verify_fatal=1 --output="$T/fio2" || { cat "$T/fio2"; fail "verify pass"; }
fio --name=a --ioengine=nbd --uri="$(uri)" --rw=randrw --bs=16k --iodepth=32 \
  --offset=128M --offset_increment=16M --size=16M --numjobs=2 --verify=crc32c --verify_fatal=1 --output="$T/fio3" ||
  { cat "$T/fio3"; fail "two connections"; }
stop_spd2
