# spd-it: alone (a FUSE file system and its timing)
# Power cut: do the file backends' FLUSH and FUA reach stable storage? The pool lives on
# powercut_fs (powercut_fs.c, built beside spd2 as tests/powercut_fs), a FUSE file system that
# keeps every write in a volatile layer until an fsync/fdatasync of the file (or a DSYNC write,
# for its own bytes) makes it durable, and drops the volatile layer at a "power cut". For each
# backend (uring, posix): a clean spd2 run formats the pool and allocates some chunks; a second
# run takes a mix of FUA writes, writes followed by FLUSH and writes never flushed, into fresh and
# allocated chunks, over two connections, and is killed with SIGKILL; the power is cut; the pool
# must pass `spd2 check` and every block acknowledged durable must read back (powercut_nbd.py).
# Each backend runs a second time with --fault-noop-flush (flushes and FUA make nothing
# durable), and then the test must find lost blocks: it shows on every run that it can fail.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
FS=${POWERCUT_FS:-$(dirname "$SPD2")/tests/powercut_fs}
[ -x "$FS" ] || fail "no powercut_fs at $FS: scripts/build.sh builds it beside spd2 (needs libfuse3-dev)"
[ -c /dev/fuse ] || fail "no /dev/fuse: this test needs FUSE (package fuse3)"
MNT="$T/mnt"
FS_PID=""
SEED=${SPD_POWERCUT_SEED:-1}
SPD_POOL_SIZE=256M  # the file system keeps the pool in memory
SPD_NBD_LISTEN=off  # spd2 restarts right after a SIGKILL: the unix socket only

fs_log() { sed 's/^/    fs: /' "$T/fs.log" >&2; }

mount_fs() {
  mkdir -p "$MNT"
  "$FS" "$MNT" 2>>"$T/fs.log" &
  FS_PID=$!
  for _ in $(seq 100); do
    mountpoint -q "$MNT" && return 0
    kill -0 "$FS_PID" 2>/dev/null || { fs_log; fail "powercut_fs exited at mount"; }
    sleep 0.05
  done
  fs_log
  fail "powercut_fs did not mount $MNT"
}

# wait_gone PID: waits (bounded) until PID, a child of this shell, has exited, then reaps it
# and sets WAIT_RC to its status. Returns 1 if it is still running after 30 s (a loaded 2-core
# machine running the ASan build took more than 10 s once).
wait_gone() {
  local state
  for _ in $(seq 600); do
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || state=""
    if [ -z "$state" ] || [ "$state" = Z ]; then
      WAIT_RC=0
      wait "$1" || WAIT_RC=$?
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# umount_fs: unmounts, retrying for up to 10 s: a process's io_uring lets go of its files in a
# kernel worker after the process has exited, so right after spd2 (uring backend) is reaped the
# mount can still be busy for a moment (CI saw "Device or resource busy" once).
umount_fs() {
  local i
  for i in $(seq 200); do
    fusermount3 -u "$MNT" 2>"$T/umount.err" && break
    [ "$i" -lt 200 ] || { cat "$T/umount.err" >&2; fail "cannot unmount $MNT (busy for 10 s)"; }
    sleep 0.05
  done
  wait_gone "$FS_PID" || fail "powercut_fs still runs after the unmount"
  FS_PID=""
  [ "$WAIT_RC" -eq 0 ] || { fs_log; fail "powercut_fs exited $WAIT_RC"; }
}

powercut_cleanup() {
  set +e  # tear everything down even when a step fails
  if [ -n "$SPD_PID" ] && kill -0 "$SPD_PID" 2>/dev/null; then
    kill -KILL "$SPD_PID" 2>/dev/null
    wait "$SPD_PID" 2>/dev/null
  fi
  SPD_PID=""
  if mountpoint -q "$MNT" 2>/dev/null; then
    fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
  fi
  if [ -n "$FS_PID" ] && kill -0 "$FS_PID" 2>/dev/null; then
    kill -TERM "$FS_PID" 2>/dev/null
    wait "$FS_PID" 2>/dev/null
  fi
  cleanup
}
trap powercut_cleanup EXIT
trap 'exit 143' TERM INT

# fs_stat NAME: one counter of powercut_fs.
fs_stat() { awk -v k="$1" '$1 == k {print $2}' "$MNT/.powercut"; }

spd() { start_spd2 --pool "$MNT/pool.img" --volume vol0:64M --cores 2 "$@"; }

# run_case BACKEND [--fault-noop-flush]
run_case() {
  local backend=$1 fault=${2:-}
  local state="$T/state.json"
  echo "== backend $backend ${fault:-(no fault)}"
  mount_fs
  # A clean run: format, allocate the "old" chunks, SIGTERM (which flushes).
  spd --backend "$backend"
  $PY "$here/powercut_nbd.py" prefill "$(uri)" "$state" || fail "prefill"
  stop_spd2
  # The run under test, ended by SIGKILL (sent by powercut_nbd.py right after its last write).
  spd --backend "$backend" $fault
  local fsyncs0 dsync0
  fsyncs0=$(fs_stat fsyncs)
  dsync0=$(fs_stat dsync_writes)
  # The shell's own stderr is off here: it would print a "Killed" line for the spd2 job.
  { $PY "$here/powercut_nbd.py" write "$(uri)" "$state" "$SEED" "$SPD_PID" 2>&3 || fail "write" 2>&3
    wait_gone "$SPD_PID" || fail "spd2 still runs after SIGKILL" 2>&3; } 3>&2 2>/dev/null
  SPD_PID=""
  [ "$WAIT_RC" -eq 137 ] || { cat "$T/spd2.log" >&2; fail "spd2 exited $WAIT_RC, not by SIGKILL"; }
  local fsyncs=$(($(fs_stat fsyncs) - fsyncs0)) dsync=$(($(fs_stat dsync_writes) - dsync0))
  echo "file system saw $fsyncs fsyncs and $dsync DSYNC writes in the run;" \
    "$(fs_stat volatile_blocks) blocks volatile at the cut"
  # Power cut: spd2 is already dead, now the volatile layer goes.
  echo cut >"$MNT/.powercut"
  "$SPD2" check "$MNT/pool.img" >"$T/check" 2>&1 || { cat "$T/check" >&2; fail "pool not consistent after the cut"; }
  grep -q '^consistent$' "$T/check" || { cat "$T/check" >&2; fail "spd2 check did not say consistent"; }
  spd --backend "$backend"
  $PY "$here/powercut_nbd.py" verify "$(uri)" "$state" ${fault:+--expect-loss} || fail "verify ($backend ${fault:-no fault})"
  stop_spd2
  # After the data check, whose message says more: what the file system saw of the run.
  if [ -n "$fault" ]; then
    [ "$fsyncs" -eq 0 ] && [ "$dsync" -eq 0 ] || fail "--fault-noop-flush still made data durable"
  else
    [ "$fsyncs" -gt 0 ] || fail "no fsync reached the file system"
    [ "$dsync" -gt 0 ] || fail "no FUA write reached the file system as a DSYNC write"
  fi
  umount_fs
  rm -f "$state"
}

for backend in uring posix; do
  run_case "$backend"
  run_case "$backend" --fault-noop-flush
done
echo "power cut: uring and posix keep every acknowledged-durable block; the no-op flush is caught"
