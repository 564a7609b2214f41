# Power cuts for the replication fault matrix (sourced by tests/cluster/test_faults.sh after
# faults.sh, whose helpers they use):
#   powercut_all     every node loses power at once under writes (its replication records and
#                    maps cut; the pools on tmpfs keep their data), then all restart
#   powercut_replica one replica's pool lives on powercut_fs (tests/integration/powercut_fs.c: a
#                    FUSE file system that drops every write not made durable at a "power
#                    cut"); it loses power under writes, the primary stays, and it returns
#                    without what it had acknowledged since its last barrier
#   powercut_primary the primary's pool lives on powercut_fs; it loses power under writes, a
#                    replica takes over; back, the old primary is given only the units of its
#                    activity log and the new primary's record, not the whole volume
PCFS_PID=""
PCFS_MNT=""
DROPPED=""

# powercut_fs_mount K: node K's pool on a fresh powercut_fs (NODE1_ARGS or NODE3_ARGS; run_row).
powercut_fs_mount() {
  local fs=${POWERCUT_FS:-$(dirname "$SPD2")/tests/powercut_fs}
  [ -x "$fs" ] || fail "no powercut_fs at $fs (scripts/build.sh builds it beside spd2; or POWERCUT_FS)"
  [ "$1" = 1 ] || [ "$1" = 3 ] || fail "powercut_fs_mount: node 1 or 3 only"
  PCFS_MNT="$T/pcfs$1"
  mkdir -p "$PCFS_MNT"
  "$fs" "$PCFS_MNT" 2>>"$T/pcfs.log" &
  PCFS_PID=$!
  EXTRA_PIDS+=("$PCFS_PID")
  for _ in $(seq 100); do
    if mountpoint -q "$PCFS_MNT"; then
      printf -v "NODE$1_ARGS" '%s' "--pool $PCFS_MNT/pool.img"
      return 0
    fi
    kill -0 "$PCFS_PID" 2>/dev/null || fail "powercut_fs exited at mount: $(cat "$T/pcfs.log")"
    sleep 0.05
  done
  fail "powercut_fs did not mount $PCFS_MNT"
}

powercut_fs_umount() {  # after round_teardown (the node stopped); nothing when none is mounted
  [ -n "$PCFS_PID" ] || return 0
  fusermount3 -u "$PCFS_MNT" || fail "cannot unmount $PCFS_MNT"
  for _ in $(seq 200); do kill -0 "$PCFS_PID" 2>/dev/null || break; sleep 0.05; done
  wait "$PCFS_PID" || fail "powercut_fs exited $?: $(cat "$T/pcfs.log")"
  PCFS_PID=""
}

# Node K (stopped) as a power cut and a reboot leave its files: each record and map still
# claimed by a boot that ended (a tag no boot has), and nothing past its 128-byte header written
# back (the kernel writes pages back in no order; the header's power-loss count is written back
# whenever it changes). Without powercut_fs the pool's own data is on tmpfs and keeps every
# write: only the replication state is cut.
power_cut() {  # K
  local f size n=0
  for f in "$(node_dir "$1")"/replication/*.activity "$(node_dir "$1")"/replication/*.dirty.*; do
    [ -f "$f" ] || continue
    size=$(stat -c %s "$f")
    truncate -s 128 "$f" && truncate -s "$size" "$f" || fail "$ROUND_LOG: cannot cut $f"
    printf '\x00\x00\x00\x00\x00\xad\xde\x00' | dd of="$f" bs=1 seek=56 conv=notrunc status=none ||
      fail "$ROUND_LOG: cannot tag $f"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || fail "$ROUND_LOG: node n$1 keeps no record to cut"
}

# Node K, its pool on powercut_fs, killed and its power cut: the pool's volatile writes dropped,
# its records cut (power_cut). Sets DROPPED: how many blocks the cut dropped.
cut_pool_power() {  # K
  stop_node "$1" KILL
  echo cut >"$PCFS_MNT/.powercut" || fail "$ROUND_LOG: cannot cut n$1's power"
  DROPPED=$(awk '$1 == "dropped_blocks" {print $2}' "$PCFS_MNT/.powercut")
  power_cut "$1"
}

# Every copy holds the same bytes (after round_converges: all in sync, nothing writing). What
# blockcheck verifies is the acknowledged-durable writes; a copy that kept or lost a write no
# client saw made durable differs only here.
copies_equal() {
  local k
  for k in 1 2 3; do
    nbdcopy "$(nbd_uri "$k")" "$T/copy$k.img" || fail "$ROUND_LOG: cannot read n$k's copy"
  done
  for k in 2 3; do
    cmp -s "$T/copy1.img" "$T/copy$k.img" ||
      fail "$ROUND_LOG: n1's and n$k's copies differ after the resync: $(cmp "$T/copy1.img" "$T/copy$k.img" | head -c 200)"
  done
  rm -f "$T"/copy?.img
}

# Every node loses power at once under writes (kill -9, then power_cut on each), then all
# restart: no record or map vouches for anything, a copy is elected by its durable generation
# alone (docs/replication.md, "Persisted state"), and the other two are copied in whole.
row_powercut_all() {
  local old=$E p=$P k n
  log_mark
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  for k in 1 2 3; do kill -KILL "${NPID[$k]}"; done
  for k in 1 2 3; do
    stop_node "$k" KILL
    power_cut "$k"
  done
  bc_join
  for k in 1 2 3; do start_node "$k"; done
  wait_until "$ROUND_LOG: a primary elected after the power cut" $((FAULT_TTL + 20)) \
    primary_agreed_above "$old"
  round_converges "$old"
  n=$(whole_copies_since_mark)
  [ "$n" -ge 2 ] || fail "$ROUND_LOG: $n whole-volume resyncs after a power cut (want 2: no record left open by the boot before may bound one)"
}

# Replica n3 loses power under writes (kill -9, then its pool's volatile writes dropped and its
# records cut): the primary stays and keeps writing; n3, back, must be given every write it had
# acknowledged and lost, not only what it missed while away (docs/replication.md, "Power loss on
# a replica": it counts the loss at its hello; the primary resyncs what it missed and what it
# had acknowledged since its last barrier, not the whole volume). round_converges then reads
# every acknowledged block back from n3's own copy, and every copy must hold the same bytes.
row_powercut_replica() {
  local old=$E p=$P n
  [ "$p" != 3 ] || fail "$ROUND_LOG: n3, the node that loses power, is the primary"
  log_mark
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  cut_pool_power 3
  sleep "0.$((RANDOM % 9 + 1))"
  start_node 3
  bc_join
  primary_is_known "$p" && [ "$P" = "$p" ] || fail "$ROUND_LOG: the primary moved (n$p -> n$P)"
  bc_verify "$p" "the primary"
  round_converges "$old"
  # The same primary process all along (its term unchanged) kept what n3 lost.
  if [ "$E" = "$old" ]; then
    expect_no_whole_copy "a replica's power loss (the primary kept what it had not made durable)"
  else
    echo "faults: $ROUND_LOG: the term moved ($old -> $E): a whole copy may be due"
  fi
  copies_equal
  echo "faults: $ROUND_LOG: the cut dropped ${DROPPED:-?} volatile blocks of n3's pool;" \
    "$(awk -v from="${LOGMARK[$p]}" 'NR > from && /resyncing replica n3/' "$T/n$p.log" |
      sed 's/.*resyncing replica/resyncing replica/' | tr '\n' ';')"
}

# The primary n1 loses power under writes (kill -9, then its pool's volatile writes dropped and
# its record and maps cut; its activity log, written with FUA, stays as the disk has it): a
# replica takes over with a higher epoch and holds every acknowledged write. n1, back, lacks
# what its pool had not made durable and may hold writes no other copy has; its activity log
# names every unit where that can be (docs/replication.md, "The primary's activity log"), so
# the new primary copies it those units and its own record's, not the whole volume, and
# round_converges reads every acknowledged block back from n1's own copy.
row_powercut_primary() {
  local old=$E p=$P
  [ "$p" = 1 ] || fail "$ROUND_LOG: n1, the node that loses power, is not the primary (n$p)"
  log_mark
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  cut_pool_power 1
  bc_join
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known 2 1
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  bc_verify "$P" "the new primary"
  start_node 1
  # Nothing wrote since n1 fell: its resync is its log's units and the new primary's record
  # alone, and then every copy must hold the same bytes (round_converges writes more first).
  wait_until "$ROUND_LOG: n1 back in sync" 60 all_in_sync "$P"
  copies_equal
  round_converges "$old"
  local units
  units=$(round_log "$P" | sed -n 's/.*replica n1 was in sync in epoch .*; only the \([0-9]*\) units.*its share from its activity log.*/\1/p' | tail -n 1)
  [ -n "$units" ] || fail "$ROUND_LOG: the new primary n$P did not take n1's activity log"
  expect_no_whole_copy "the primary's power loss (its activity log bounds the resync)"
  echo "faults: $ROUND_LOG: the cut dropped ${DROPPED:-?} volatile blocks of n1's pool; n1 got $units units of 64 KiB back"
}
