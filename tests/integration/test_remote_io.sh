# Connections on reactor 1 read and write allocated space through their own channel
# (--remote-io, Volume::SubmitRemote) while those on reactor 0 go through the pool directly:
# fio with crc32c verification over four connections (two per reactor), then a read-back pass,
# both checked by fio; the counters show which path the requests took.
source "$(dirname "$0")/lib.sh"
mport=$((SPD_PORT + 1))
metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
job=(--ioengine=nbd --rw=randwrite --bs=4k --iodepth=16 --size=8M --offset_increment=8M
  --numjobs=4 --verify=crc32c --verify_fatal=1 --group_reporting)
for remote in true false; do
  SPD_METRICS="127.0.0.1:$mport" start_spd2 --volume vol0:64M --cores 2 --remote-io "$remote"
  cd "$T"
  # The first write to a 1 MiB chunk allocates it (reactor 0); later writes to it and the
  # verification reads take either path. The second pass reads everything back again.
  fio --name=w "${job[@]}" --uri="$(uri)" --output="$T/fio1" ||
    { cat "$T/fio1"; fail "write+verify, remote-io $remote"; }
  fio --name=w "${job[@]}" --uri="$(uri)" --verify_only=1 --output="$T/fio2" ||
    { cat "$T/fio2"; fail "verify pass, remote-io $remote"; }
  n=$(metric spd_volume_remote_requests_total)
  echo "remote-io $remote: $n remote requests"
  if [ "$remote" = true ]; then
    [ "${n:-0}" -gt 1000 ] || fail "connections on reactor 1 did not use their channel ($n)"
  else
    [ "${n:-0}" -eq 0 ] || fail "--remote-io false still took the remote path ($n)"
  fi
  stop_spd2
done
