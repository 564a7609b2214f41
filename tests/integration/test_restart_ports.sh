# A restart binds the same TCP ports again at once (systemctl restart, a supervisor): the NBD
# and metrics listeners are shut down, not only closed, at exit. io_uring tears a ring down
# asynchronously after the process exits, and a listening socket whose poll it still holds kept
# its port: before the fix, 15 of 30 immediate restarts failed with "Address already in use".
source "$(dirname "$0")/lib.sh"
mport=$((SPD_PORT + 1))
for i in 1 2 3 4 5 6; do
  SPD_METRICS="127.0.0.1:$mport" start_spd2 --volume vol0:64M
  curl -sf "http://127.0.0.1:$mport/metrics" >/dev/null || fail "scrape $i"
  nbdinfo --size "nbd://127.0.0.1:$SPD_PORT/vol0" >/dev/null || fail "nbd over tcp $i"
  stop_spd2
done
echo "6 immediate restarts on the same ports"
