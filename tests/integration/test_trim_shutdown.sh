# SIGTERM right after a TRIM of a whole, written volume: thousands of freed chunks are still
# being zeroed (punched) when the signal comes. spd2 must wait for that I/O by its completion
# and exit 0 (not abort destroying the backend with I/O in flight), and the pool must reopen
# and check clean. Twice: with --qos off, and with --qos on, where the punches go through the
# scheduler's background class (its counter is read before the signal), where some may still be
# queued when the signal comes.
source "$(dirname "$0")/lib.sh"
[ -n "${TRACE:-}" ] && set -x
run_mode() {  # run_mode off|on: --qos
  SPD_POOL_SIZE=8G SPD_METRICS="127.0.0.1:$((SPD_PORT + 1))" start_spd2 --volume v:4G --qos "$1"
  # About 3 GiB of data, so that the whole-volume TRIM frees about 3,000 chunks.
  fio --name=fill --ioengine=nbd --uri="$(uri v)" --rw=write --bs=1M --iodepth=16 --size=3G \
    --output="$T/fio.log" >/dev/null 2>&1 || { cat "$T/fio.log"; fail "fio fill"; }
  $PY - "$SPD_SOCK" "$SPD_PID" "$((SPD_PORT + 1))" >"$T/bg" <<'PY'
import nbd, os, signal, sys, urllib.request
h = nbd.NBD()
h.connect_uri("nbd+unix:///v?socket=" + sys.argv[1])
# The whole volume (an NBD request carries at most 4 GiB - 1): two halves in flight at once.
half = h.get_size() // 2
h.aio_trim(half, 0)
h.aio_trim(half, half)
while h.aio_in_flight() > 0:
    h.poll(1000)
m = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[3]).read().decode()
print(sum(int(l.split()[1]) for l in m.splitlines()
          if l.startswith("spd_qos_background_released_total ")))
os.kill(int(sys.argv[2]), signal.SIGTERM)  # at once: the punches are still running
PY
  rc=0
  wait "$SPD_PID" || rc=$?
  SPD_PID=""
  if [ "$rc" -ne 0 ] || grep -q "assertion failed" "$T/spd2.log"; then
    cat "$T/spd2.log" >&2
    fail "spd2 exited $rc after SIGTERM during the punches of a TRIM"
  fi
  grep -q "shutdown drain timed out" "$T/spd2.log" && { cat "$T/spd2.log" >&2; fail "drain timed out"; }
  "$SPD2" check "$T/data/pool.img" >"$T/check" || { cat "$T/check" >&2; fail "check after shutdown"; }
  # Reopens, serves, and stops cleanly again.
  SPD_POOL_SIZE=8G start_spd2 --qos "$1"
  [ "$(nbdinfo --size "$(uri v)")" = $((4 << 30)) ] || fail "volume size after restart"
  stop_spd2
}

run_mode off
rm -rf "$T/data"
run_mode on
released=$(cat "$T/bg")
echo "background I/Os released by the scheduler before SIGTERM: $released"
[ "$released" -gt 0 ] || fail "no background I/O went through the scheduler with --qos on"
