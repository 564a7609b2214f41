# Power cuts for the replication fault matrix (sourced by tests/cluster/test_faults.sh after
# faults.sh, whose helpers they use):
#   powercut_all     every node loses power at once under writes (its replication records and
#                    maps cut; the pools on tmpfs keep their data), then all restart
#   powercut_replica one replica's pool lives on powercut_fs (tests/integration/powercut_fs.c: a
#                    FUSE file system that drops every write not made durable at a "power
#                    cut"); it loses power under writes, the primary stays, and it returns
#                    without what it had acknowledged since its last barrier
PCFS_PID=""
PCFS_MNT=""

# powercut_fs_mount K: node K's pool on a fresh powercut_fs (NODE3_ARGS for K=3; run_row).
powercut_fs_mount() {
  local fs=${POWERCUT_FS:-$(dirname "$SPD2")/tests/powercut_fs}
  [ -x "$fs" ] || fail "no powercut_fs at $fs (scripts/build.sh builds it beside spd2; or POWERCUT_FS)"
  [ "$1" = 3 ] || fail "powercut_fs_mount: node 3 only"
  PCFS_MNT="$T/pcfs$1"
  mkdir -p "$PCFS_MNT"
  "$fs" "$PCFS_MNT" 2>>"$T/pcfs.log" &
  PCFS_PID=$!
  EXTRA_PIDS+=("$PCFS_PID")
  for _ in $(seq 100); do
    if mountpoint -q "$PCFS_MNT"; then
      NODE3_ARGS="--pool $PCFS_MNT/pool.img"
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
# claimed by a boot that ended (a tag no boot has), and nothing past its header written back
# (the kernel writes pages back in no order). The pool's own data is on tmpfs here and keeps
# every write: only the replication state is cut.
power_cut() {  # K
  local f size n=0
  for f in "$(node_dir "$1")"/replication/*.activity "$(node_dir "$1")"/replication/*.dirty.*; do
    [ -f "$f" ] || continue
    size=$(stat -c %s "$f")
    truncate -s 64 "$f" && truncate -s "$size" "$f" || fail "$ROUND_LOG: cannot cut $f"
    printf '\x00\x00\x00\x00\x00\xad\xde\x00' | dd of="$f" bs=1 seek=56 conv=notrunc status=none ||
      fail "$ROUND_LOG: cannot tag $f"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || fail "$ROUND_LOG: node n$1 keeps no record to cut"
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
# a replica": it says so at its hello and is copied whole). round_converges then reads every
# acknowledged block back from n3's own copy.
row_powercut_replica() {
  local old=$E p=$P n dropped
  [ "$p" != 3 ] || fail "$ROUND_LOG: n3, the node that loses power, is the primary"
  log_mark
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  stop_node 3 KILL
  echo cut >"$PCFS_MNT/.powercut" || fail "$ROUND_LOG: cannot cut n3's power"
  dropped=$(awk '$1 == "dropped_blocks" {print $2}' "$PCFS_MNT/.powercut")
  power_cut 3
  sleep "0.$((RANDOM % 9 + 1))"
  start_node 3
  bc_join
  primary_is_known "$p" && [ "$P" = "$p" ] || fail "$ROUND_LOG: the primary moved (n$p -> n$P)"
  bc_verify "$p" "the primary"
  round_converges "$old"
  n=$(whole_copies_since_mark)
  [ "$n" -ge 1 ] || fail "$ROUND_LOG: no whole-volume resync of n3 after its power loss"
  echo "faults: $ROUND_LOG: the cut dropped ${dropped:-?} volatile blocks of n3's pool"
}
