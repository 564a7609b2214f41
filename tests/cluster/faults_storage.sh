# Storage faults for the replication fault matrix (sourced by tests/cluster/test_faults.sh after
# faults.sh, whose helpers they use): enospc_replica, enospc_primary, io_errors_replica and
# io_errors_primary (their descriptions: faults.sh's header; run_row sets up their tmpfs or sim
# devices).

# shrink_tmpfs K: node K's data directory (a tmpfs run_row mounted) shrinks to what it holds
# + 4 MiB, so that writes into new regions fill it.
shrink_tmpfs() {  # K [BYTES]: node K's tmpfs left with BYTES (4 MiB) free
  local d used
  d=$(node_dir "$1")
  used=$(df -B1 --output=used "$d" | tail -1)
  mount -o remount,size=$((used + ${2:-4194304})) "$d" || fail "$ROUND_LOG: cannot shrink the tmpfs"
}

row_enospc_replica() {
  local old=$E p=$P
  [ "$p" != 3 ] || fail "$ROUND_LOG: n3, the node that fills up, is the primary"
  log_mark
  shrink_tmpfs 3
  bc_write "$p" "$SEED" 3000 >"$T/w1.log" 2>&1 ||
    { cat "$T/w1.log" >&2; fail "$ROUND_LOG: writes through the primary while n3 is full"; }
  out_of_sync_3() { view "$p" | grep -q "n3=out_of_sync"; }
  wait_until "$ROUND_LOG: the full replica n3 out of sync" 30 out_of_sync_3
  primary_is_known "$p" && [ "$P" = "$p" ] || fail "$ROUND_LOG: the primary moved (n$p -> n$P)"
  bc_verify "$p" "the primary"
  mount -o remount,size=1G "$(node_dir 3)" || fail "$ROUND_LOG: cannot grow the tmpfs"
  # A commit that failed for want of space turned n3's pool read-only for good (by design: a
  # failed flush may have lost data); such a node must be restarted (its pool re-opens from its
  # last durable state). Only a data write that failed leaves it able to resync as it is.
  if awk -v from="${LOGMARK[3]}" 'NR > from && /the pool is read-only from now on/ { f = 1 }
      END { exit !f }' "$T/n3.log"; then
    echo "faults: $ROUND_LOG: n3's pool turned read-only (a commit failed): restarted"
    stop_node 3 TERM
    start_node 3
  fi
  round_converges "$old"
}

# The primary's file system fills up under writes: a write fails (blockcheck stops on it), the
# pool turns read-only (a failed commit), and the primary gives the volume up: an in-sync copy
# takes it with a higher epoch and holds every acknowledged write. The file system is grown and
# the node restarted (its pool recovers); it is resynced.
# The writes of w1.log (blockcheck's exit RC) stopped on a failure of the primary WHO: a data
# write fails first, or a write of the pool's log commit does (a flush then fails, ENOSPC or EIO;
# the pool is read-only from then on and the primary steps down: seeds 9102 and 9302 saw that).
# n1 gave the volume up, its copy marked out of sync (it lacks, or restarted will, what they hold)
n1_gave_up_marked() {
  round_log 1 | grep -c "giving up the volume (its copy marked out of sync)" >/dev/null ||
    fail "$ROUND_LOG: n1 did not give the volume up with its copy marked out of sync"
}
primary_io_failed() {  # RC WHO
  [ "$1" -eq 3 ] && grep -qE "the server failed a (write|flush)" "$T/w1.log" ||
    { cat "$T/w1.log" >&2; fail "$ROUND_LOG: no write failed on $2 (exit $1)"; }
  ! grep -q "the server failed a flush" "$T/w1.log" ||
    echo "faults: $ROUND_LOG: a commit failed before any data write (the pool read-only)"
}

row_enospc_primary() {
  local old=$E p=$P rc=0
  [ "$p" = 1 ] || fail "$ROUND_LOG: n1, the node that fills up, is not the primary (n$p)"
  # Odd seeds leave no space at all (the first writes fail; a store into a hole of a mapped
  # file was a SIGBUS once), even ones 4 MiB (writes acknowledged before the first failure).
  shrink_tmpfs 1 $((SEED % 2 ? 0 : 4 << 20))
  bc_write "$p" "$SEED" 20000 >"$T/w1.log" 2>&1 || rc=$?
  primary_io_failed "$rc" "the full primary"
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known 2 1
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  n1_gave_up_marked
  bc_verify "$P" "the new primary"
  mount -o remount,size=1G "$(node_dir 1)" || fail "$ROUND_LOG: cannot grow the tmpfs"
  stop_node 1 TERM
  start_node 1
  round_converges "$old"
}

# Node 3 runs on a sim device that fails 0.5% of its data operations (run_row sets NODE3_ARGS).
row_io_errors_replica() {
  local old=$E p=$P
  [ "$p" != 3 ] || fail "$ROUND_LOG: n3, the node whose device fails, is the primary"
  bc_write "$p" "$SEED" 3000 >"$T/w1.log" 2>&1 ||
    { cat "$T/w1.log" >&2; fail "$ROUND_LOG: writes through the primary while n3's device fails"; }
  grep -q "replica n3 .*out-of-sync: the replica failed message" "$T/n$p.log" ||
    fail "$ROUND_LOG: the primary never saw n3 fail a message"
  primary_is_known "$p" && [ "$P" = "$p" ] || fail "$ROUND_LOG: the primary moved (n$p -> n$P)"
  bc_verify "$p" "the primary"
  # Resynced by what it missed (its failures too, now and then): once in sync again, its copy
  # holds every acknowledged write (a replica that hid a failure would not). Unless a failure
  # hit one of its pool's commits: the pool is then read-only for good (by design: after a
  # failed commit or flush nothing more is written), and no resync can take; it waits for the
  # restart below (seed 6007 did).
  n3_read_only() { round_log 3 | grep -c "read-only from now on" >/dev/null; }
  n3_settled() { all_in_sync "$p" || n3_read_only; }
  wait_until "$ROUND_LOG: n3 back in sync (or its pool read-only), its device still failing" 60 \
    n3_settled
  if n3_read_only; then
    echo "faults: $ROUND_LOG: n3's pool turned read-only (a commit failed): not resynced until its restart"
  else
    bc_verify 3 "the copy on the failing n3 once in sync" 5
  fi
  stop_node 3 KILL
  NODE3_ARGS=""
  start_node 3
  round_converges "$old"
}

# Node 1, the primary, runs on a sim device that fails 0.5% of its reads and writes once the
# round's first writes are in (run_row sets NODE1_ARGS): a write fails on its copy, which the
# replicas applied; it gives the volume up to one of them and, restarted on a sound device,
# gets it back whole.
row_io_errors_primary() {
  local old=$E p=$P rc=0
  [ "$p" = 1 ] || fail "$ROUND_LOG: n1, the node whose device fails, is not the primary (n$p)"
  bc_write 1 "$SEED" 20000 >"$T/w1.log" 2>&1 || rc=$?
  primary_io_failed "$rc" "the failing primary"
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known 2 1
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  n1_gave_up_marked
  bc_verify "$P" "the new primary"
  stop_node 1 KILL
  NODE1_ARGS=""
  start_node 1
  round_converges "$old"
}

# rtt_R: a round with injected round trip R us and 1% loss, then kill -9 of the primary.
