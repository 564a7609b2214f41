# The replication fault matrix (issue 17; docs/replication.md "Fault matrix"), sourced by
# tests/cluster/test_faults.sh. Three spd2 nodes, each in a network namespace of its own, and a
# 3-member etcd (tests/cluster/netns.sh). Every round of every row: a fresh 3-way volume,
# self-describing writes through the primary's export (tests/cluster/blockcheck.py: QD32, FUA
# and FLUSH among them), a fault while they run, then the checks every row shares:
#   - a primary exists afterwards, its epoch above the one before the fault if it changed;
#   - blockcheck verify on the primary: every write acknowledged durable (FUA, or before a
#     completed FLUSH) is there and no block went back to an older version (a stale promotion
#     shows as exactly that);
#   - writes go on through the primary; once the fault is healed every copy comes back in sync
#     and every copy holds every acknowledged write (verified through that node's own export).
# Clients reach the nodes through their unix sockets (the file system is shared), so the client
# side is never partitioned: the faults are between the nodes and between the nodes and etcd.
#
# Rows (FAULT_ROWS, space-separated; default: all):
#   kill9_primary    kill -9 of the primary under QD32 writes with FLUSHes; it restarts later
#   isolate_primary  the primary reaches nobody (replicas, etcd) under writes; healed later
#   cut_primary_etcd the primary reaches its replicas but not etcd
#   isolate_replica  one replica of three reaches nobody; healed later
#   oneway           the primary's messages to one replica are dropped (its acks would pass)
#   sigstop_primary  SIGSTOP of the primary beyond its lease, then SIGCONT
#   rejoin_clean     a replica stopped cleanly while writes went on returns and the primary is
#                    killed at once (DRBD #145): the stale copy must not be promoted
#   kill_all         every node killed at once under writes, then restarted
#   promote_cycles   six manual promotes in a row, writes through each new primary
#   etcd_leader      the etcd leader killed under writes, restarted later
#   etcd_all_down    every etcd member down for longer than the lease under writes, then back
#   kill_resync_target  a replica that missed writes is killed mid-resync, then returns
#   kill_new_primary_mid_resync  the primary dies while one replica is away, the new one dies
#                    while copying the volume to it: that out-of-sync copy must not be promoted
#   recount_kill_primary  down to two copies and up to three again (set-replicas) under
#                    writes; the primary is killed while the new copy is copied whole: that
#                    out-of-sync copy must not be promoted
#   last_standing    the replicas go away one after the other, the primary (alone) dies, the
#                    replicas return: neither may take the volume until the primary returns
#   flap_resync      a replica's network is cut (beyond the ack timeout) and healed twice
#                    while it is resynced
#   enospc_replica   a replica's file system fills up under writes (its data directory is a
#                    tmpfs shrunk to what it holds + 4 MiB): it is marked out of sync, writes go
#                    on; the file system is grown again and the copy is resynced
#   enospc_primary   the primary's file system fills up likewise: a write fails, its pool turns
#                    read-only and it gives the volume up to an in-sync copy (which holds every
#                    acknowledged write); grown and restarted, it is resynced
#   io_errors_replica  a replica's device fails 0.5% of its data operations with EIO (--backend
#                    sim --sim-error-rate): it is marked out of sync whenever it fails one,
#                    writes go on; it is restarted on a sound device (empty: the sim device
#                    keeps nothing) and resynced whole
#   powercut_all, _replica, _primary: faults_power.sh; convert_kill_primary: faults_convert.sh;
#   enospc_*, io_errors_*: faults_storage.sh
#   rtt_R            every primary's messages carry an injected round trip of R us (0, 500,
#                    2000, 10000), 1% of them "lost" (200 ms late); then kill -9 of the primary
# FAULT_ROUNDS rounds of each (default 1), seeds FAULT_SEED, FAULT_SEED+1, ...
# shellcheck disable=SC2034
FAULT_TTL=3
BC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/blockcheck.py"
declare -A NPID
LOGMARK=()
NODE_ARGS=()
ROUND_LOG=""

# A failure shows the end of every node's log first (the test's output is all CI keeps).
fail() {
  local k
  for k in 1 2 3; do
    if [ -f "$T/n$k.log" ]; then
      echo "--- n$k.log (end)" >&2
      grep -v "open to other users" "$T/n$k.log" | tail -n 12 | cut -c12-220 >&2
    fi
  done
  echo "FAIL: $*" >&2
  exit 1
}

# The node named nK lives in namespace K, data in $T/nK, replication on its address, port 7000.
node_dir() { echo "$T/n$1"; }
sock() { echo "$(node_dir "$1")/control.sock"; }
nbd_uri() { echo "nbd+unix:///${FVOL:-rv}?socket=$(node_dir "$1")/nbd.sock"; }

start_node() {  # K
  local k=$1 d extra=()
  d=$(node_dir "$k")
  mkdir -p "$d"
  [ "$k" != 3 ] || read -ra extra <<<"$NODE3_ARGS"  # node 3's own (a row's fault)
  [ "$k" != 1 ] || read -ra extra <<<"$NODE1_ARGS"  # node 1's own
  rm -f "$d/control.sock"
  nsrun_bg "$k" "$T/n$k.log" "$SPD2" --data-dir "$d" --pool-size 256M --nbd-listen off \
    --metrics-listen off --quiet --cluster "$ETCD_ENDPOINTS" --node-name "n$k" \
    --cluster-lease-ttl $FAULT_TTL --replication-listen "$(node_ip "$k"):7000" \
    "${NODE_ARGS[@]}" "${extra[@]}"
  NPID[$k]=$NSRUN_PID
  for _ in $(seq 200); do
    [ -S "$d/control.sock" ] && return 0
    kill -0 "${NPID[$k]}" 2>/dev/null || { tail -20 "$T/n$k.log" >&2; fail "node n$k exited at start"; }
    sleep 0.05
  done
  fail "node n$k did not start"
}

stop_node() {  # K SIGNAL: signal, then wait for it to end (bounded)
  local k=$1 sig=$2 pid=${NPID[$1]}
  [ -n "$pid" ] || return 0
  if kill "-$sig" "$pid" 2>/dev/null; then
    for _ in $(seq 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid"
      sleep 0.2
    fi
  fi
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  NPID[$k]=""
}

# ctl K ARGS...: spdctl against node K, output in $T/out; fails unless it exits 0.
ctl() {
  local k=$1
  shift
  expect 0 --socket "$(sock "$k")" "$@"
}
# view K: "PRIMARY EPOCH COPIES" as node K sees volume rv, or FVOL (COPIES "n1=in_sync,...").
view() {
  local rc=0
  "$SPDCTL" --socket "$(sock "$1")" replica list "${FVOL:-rv}" -o json >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" -eq 0 ] || return 1
  json '(d["items"][0]["primary"] or "-") + " " + str(d["items"][0]["epoch"]) + " " + ",".join(sorted(c["node"] + "=" + c["state"] for c in d["items"][0]["copies"]))'
}
wait_until() {  # DESCRIPTION SECONDS COMMAND...
  local what=$1 secs=$2
  shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  fail "$what: not within ${secs} s"
}
# Sets P (the primary's K) and E (its epoch) from node K's view; true when there is a primary
# other than EXCEPT (a node number or "").
primary_is_known() {  # K [EXCEPT]
  local v p
  v=$(view "$1") || return 1
  read -r p E _ <<<"$v"
  [ "$p" != "-" ] || return 1
  P=${p#n}
  [ "$P" != "${2:-}" ]
}
# Every node names the same primary and epoch (a node that was cut off may still think it is
# the primary for a while: it acknowledges nothing meanwhile). Sets P and E.
primary_agreed() {
  local k v first=""
  for k in 1 2 3; do
    v=$(view "$k") || return 1
    v=${v%% *}" "$(echo "$v" | cut -d' ' -f2)
    [ -n "$first" ] || first=$v
    [ "$v" = "$first" ] || return 1
  done
  [ "${first%% *}" != "-" ] || return 1
  read -r P E <<<"$first"
  P=${P#n}
}
primary_agreed_above() {  # EPOCH: agreed, and elected after EPOCH
  primary_agreed && [ "$E" -gt "$1" ]
}
all_in_sync() {  # K: node K sees every copy in sync and a primary
  local v
  v=$(view "$1") || return 1
  [[ "$v" == *" n1=in_sync,n2=in_sync,n3=in_sync" ]] && [[ "$v" != "- "* ]]
}

bc_write() {  # K SEED OPS [more blockcheck write args]: through node K's export
  local k=$1 seed=$2 ops=$3
  shift 3
  $PY "$BC" write --uri "$(nbd_uri "$k")" --state "${BCSTATE:-$T/bc.json}" --seed "$seed" --qd 32 \
    --ops "$ops" --seconds 60 --flush-every 32 --fua-ratio 0.2 --epoch "${E:-0}" --stall 10 "$@"
}
# Every write acknowledged through the checker is on node K and none regressed. TRIES > 1: the
# node's device fails reads now and then, and a read it refuses (EIO) ends the verify without a
# verdict, so it runs again (at most TRIES times); lost or regressed blocks fail at once.
bc_verify() {  # K WHAT [TRIES]
  local i tries=${3:-1}
  for ((i = 1; i <= tries; i++)); do
    if $PY "$BC" verify --uri "$(nbd_uri "$1")" --state "${BCSTATE:-$T/bc.json}" >"$T/verify.log" 2>&1; then
      return 0
    fi
    grep -q "command failed: Input/output error" "$T/verify.log" || break
  done
  cat "$T/verify.log" >&2
  fail "$ROUND_LOG: $2 (node n$1) lacks acknowledged writes or regressed (verify runs allowed: $tries)"
}

# A round's start: nodes up, a fresh 3-way volume in sync, some writes verified everywhere.
round_setup() {
  local k
  for k in 1 2 3; do start_node "$k"; done
  registered() { ctl 1 node list -o json; [ "$(json 'len(d["items"])')" = 3 ]; }
  wait_until "$ROUND_LOG: three nodes registered" 20 registered
  ctl 1 volume create rv --size 64M --replicas 3
  wait_until "$ROUND_LOG: every copy in sync" 20 all_in_sync 1
  primary_is_known 1 || fail "$ROUND_LOG: no primary"
  rm -f "$T/bc.json"
  bc_write "$P" "$SEED" 500 --blocks "${SETUP_BLOCKS:-4096}" >"$T/w0.log" 2>&1 ||
    { cat "$T/w0.log" >&2; fail "$ROUND_LOG: first writes failed"; }
}

# A round's end: nodes stopped, the cluster's keys gone (the next round starts afresh).
round_teardown() {
  local k
  for k in 1 2 3; do stop_node "$k" KILL; done
  net_heal_all
  etcdctl_in 1 del --prefix /spd/ >/dev/null
  for k in 1 2 3; do
    ! mountpoint -q "$(node_dir "$k")" || umount "$(node_dir "$k")" ||
      fail "cannot unmount the tmpfs of n$k"
    rm -rf "$(node_dir "$k")"
  done
}

# After the fault was healed (every node running): a primary, writes through it, every copy
# back in sync and holding every acknowledged write.
round_converges() {  # OLD_EPOCH
  local old=$1 k
  wait_until "$ROUND_LOG: every node agrees on the primary" $((FAULT_TTL + 20)) primary_agreed
  [ "$E" -ge "$old" ] || fail "$ROUND_LOG: epoch went back from $old to $E"
  bc_verify "$P" "the primary after the fault"
  bc_write "$P" $((SEED + 1000)) 300 >"$T/w2.log" 2>&1 ||
    { cat "$T/w2.log" >&2; fail "$ROUND_LOG: writes through the primary n$P after the fault"; }
  wait_until "$ROUND_LOG: every copy back in sync" 60 all_in_sync "$P"
  for k in 1 2 3; do bc_verify "$k" "a copy after the resync"; done
}

# Writes in the background through node K while a fault happens, for FAULT_WRITE_SECONDS (20;
# test_faults.sh's CI selection: 12); sets BCPID.
bc_background() {  # K SEED
  bc_write "$1" "$2" 1000000 --seconds "${FAULT_WRITE_SECONDS:-20}" >"$T/w1.log" 2>&1 &
  BCPID=$!
}
# The background writes end (at most 40 s: 20 s of writes, a 10 s stall bound, the save).
bc_join() {
  local rc=0
  wait "$BCPID" || rc=$?
  case $rc in
    0 | 3 | 4) ;;  # done, connection lost, server stalled (state saved in each case)
    *) cat "$T/w1.log" >&2; fail "$ROUND_LOG: blockcheck write exited $rc" ;;
  esac
}

# log_mark: remembers where each node's log ends now; whole_copies_since_mark: how many
# whole-volume resyncs the nodes started since (docs/replication.md, "Persisted state": after a
# crash or restart only the writes in flight, or what a replica missed, are copied).
log_mark() {
  local k
  for k in 1 2 3; do LOGMARK[$k]=$(wc -l <"$T/n$k.log"); done
}
whole_copies_since_mark() {
  local k n=0 c
  for k in 1 2 3; do
    c=$(awk -v from="${LOGMARK[$k]}" \
      'NR > from && /resyncing replica .*: the whole volume/ { c++ } END { print c + 0 }' \
      "$T/n$k.log")
    n=$((n + c))
  done
  echo "$n"
}
expect_no_whole_copy() {  # WHAT
  local n
  n=$(whole_copies_since_mark)
  [ "$n" = 0 ] || {
    grep -h 'resyncing replica' "$T"/n?.log >&2
    fail "$ROUND_LOG: $n whole-volume resyncs after $1 (the persisted records bound them)"
  }
}

# --- rows: each runs one round (round_setup done; P and E set) ---

# Every record and map node K keeps says it was closed in order (the tag at byte 56 is 0:
# MappedFile::Claim), as a clean stop leaves them; a reboot trusts only those (and a killed
# process's: same boot).
state_closed() {  # K
  local f tag n=0
  for f in "$(node_dir "$1")"/replication/*.activity "$(node_dir "$1")"/replication/*.dirty.*; do
    [ -f "$f" ] || continue
    tag=$(od -An -tx8 -j56 -N8 "$f" | tr -d ' ')
    [ "$tag" = 0000000000000000 ] || fail "$ROUND_LOG: $f left open by a clean stop (tag $tag)"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || fail "$ROUND_LOG: node n$1 keeps no record to check"
}

# kill_under_writes K SEED AFTER LOG: writes through node K that SIGKILL it after AFTER writes
# (output in LOG); the kill must cut them; the node is reaped.
# away_and_write R SIGNAL MIN SPREAD: node R (a replica) stopped with SIGNAL, then MIN + RANDOM %
# SPREAD writes through the primary (P) while it is away.
away_and_write() {
  stop_node "$1" "$2"
  bc_write "$P" "$SEED" $(($3 + RANDOM % $4)) >"$T/w1.log" 2>&1 ||
    { cat "$T/w1.log" >&2; fail "$ROUND_LOG: writes with a replica away"; }
}

kill_under_writes() {
  local k=$1 rc=0
  bc_write "$k" "$2" 1000000 --kill-pid "${NPID[$k]}" --kill-after-ops "$3" >"$4" 2>&1 || rc=$?
  [ "$rc" -eq 3 ] || { cat "$4" >&2; fail "$ROUND_LOG: the kill did not cut the writes ($rc)"; }
  stop_node "$k" KILL
}

row_kill9_primary() {
  local old=$E p=$P
  log_mark
  kill_under_writes "$p" "$SEED" $((300 + RANDOM % 1500)) "$T/w1.log"
  local other=1
  [ "$p" = 1 ] && other=2
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known "$other" "$p"
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  bc_verify "$P" "the new primary"
  start_node "$p"
  round_converges "$old"
  expect_no_whole_copy "the primary's kill -9"
}

# The primary is cut off by FAULT (a function taking its number) under writes; another copy
# takes over with a higher epoch and holds every acknowledged write; then the cut is healed.
primary_cut_off() {  # FAULT
  local old=$E p=$P
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  "$1" "$p"
  local other=1
  [ "$p" = 1 ] && other=2
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known "$other" "$p"
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  bc_join
  bc_verify "$P" "the new primary"
  node_heal "$p"
  round_converges "$old"
}
row_isolate_primary() { primary_cut_off node_isolate; }
row_cut_primary_etcd() { primary_cut_off node_cut_etcd; }

row_isolate_replica() {
  local old=$E p=$P r
  r=$(((p % 3) + 1))
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  node_isolate "$r"
  bc_join
  primary_is_known "$p" || fail "$ROUND_LOG: no primary while a replica was away"
  [ "$P" = "$p" ] || fail "$ROUND_LOG: the primary moved (n$p -> n$P) when a replica went away"
  bc_verify "$p" "the primary"
  node_heal "$r"
  round_converges "$old"
}

row_oneway() {
  local old=$E p=$P r
  r=$(((p % 3) + 1))
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  node_cut_oneway "$p" "$r"
  bc_join
  bc_verify "$P" "the primary"
  node_heal "$p"
  round_converges "$old"
}

row_sigstop_primary() {
  local old=$E p=$P
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  kill -STOP "${NPID[$p]}"
  local other=1
  [ "$p" = 1 ] && other=2
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known "$other" "$p"
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  sleep 1
  kill -CONT "${NPID[$p]}"
  bc_join
  bc_verify "$P" "the new primary"
  round_converges "$old"
}

# DRBD #145's case: a replica shut down cleanly while the primary kept writing comes back;
# the primary is killed right then. The returning copy missed writes: it must not be promoted
# (the other replica must), and it must be resynced before it counts as in sync.
row_rejoin_clean() {
  local old=$E p=$P r o rc=0
  r=$(((p % 3) + 1))
  o=$(((r % 3) + 1))
  away_and_write "$r" TERM 200 800
  state_closed "$r"
  start_node "$r"
  sleep "0.$((RANDOM % 5))"
  stop_node "$p" KILL
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known "$o" "$p"
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  bc_verify "$P" "the new primary"
  start_node "$p"
  round_converges "$old"
}

# Every node killed at once under writes, then all restarted: a copy that held every
# acknowledged write becomes the primary.
row_kill_all() {
  local old=$E p=$P k
  log_mark
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  for k in 1 2 3; do kill -KILL "${NPID[$k]}"; done
  for k in 1 2 3; do stop_node "$k" KILL; done
  bc_join
  for k in 1 2 3; do start_node "$k"; done
  # Until the dead incarnations' leases expire etcd still names the old primary (which, back
  # under a new lease, does not act on it): a new election must follow.
  wait_until "$ROUND_LOG: a primary elected after the restart" $((FAULT_TTL + 20)) \
    primary_agreed_above "$old"
  round_converges "$old"
  expect_no_whole_copy "every node's kill -9"
}

# Fast promote cycles: each copy in turn is promoted and written through (the previous primary
# hands over), a few times.
row_promote_cycles() {
  local old=$E i k
  for i in 1 2 3 4 5 6; do
    k=$(((P % 3) + 1))
    ctl "$k" replica promote rv -o json
    wait_until "$ROUND_LOG: n$k the agreed primary" 20 primary_agreed
    [ "$P" = "$k" ] || fail "$ROUND_LOG: promoted n$k, the primary is n$P"
    bc_write "$P" $((SEED + i)) $((50 + RANDOM % 200)) >"$T/w1.log" 2>&1 ||
      { cat "$T/w1.log" >&2; fail "$ROUND_LOG: writes through the promoted n$k"; }
    bc_verify "$P" "the promoted copy"
  done
  round_converges "$old"
}

# The etcd leader stops under writes (a new one is elected); it comes back later.
row_etcd_leader() {
  local old=$E p=$P l
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  l=$(etcd_leader) || fail "$ROUND_LOG: no etcd leader"
  etcd_member_stop "$l" KILL
  bc_join
  etcd_member_start "$l"
  round_converges "$old"
}

# Every etcd member down under writes for longer than the lease, then back.
row_etcd_all_down() {
  local old=$E p=$P
  bc_background "$p" "$SEED"
  sleep "0.$((RANDOM % 9 + 1))"
  etcd_all_stop
  sleep $((FAULT_TTL + 2))
  etcd_all_start
  bc_join
  round_converges "$old"
}

# etcd loses its data (every member's directory wiped) under writes, while one replica is away
# and has missed writes (marked out of sync in the etcd that is lost). The nodes find the cluster
# gone, publish their volumes again from their disks and elect the freshest copy by what the
# copies hold; the stale one must not win. Odd seeds also kill every node at once after the
# wipe (their disks alone decide after the restart); even ones keep them running (the primary
# steps down and the election follows).
row_etcd_lost() {
  local old=$E p=$P r k
  log_mark
  r=$(((p % 3) + 1))
  away_and_write "$r" TERM 200 500
  bc_background "$p" $((SEED + 300))
  sleep "0.$((RANDOM % 9 + 1))"
  etcd_wipe || fail "$ROUND_LOG: cannot wipe etcd"
  if [ $((SEED % 2)) = 1 ]; then
    for k in 1 2 3; do [ -z "${NPID[$k]}" ] || kill -KILL "${NPID[$k]}"; done
    for k in 1 2 3; do stop_node "$k" KILL; done
    bc_join
    for k in 1 2 3; do start_node "$k"; done
  else
    bc_join
    start_node "$r"
  fi
  wait_until "$ROUND_LOG: a primary elected from the copies' disks" $((FAULT_TTL + 30)) \
    primary_agreed_above "$old"
  [ "$P" != "$r" ] || fail "$ROUND_LOG: n$r, which missed writes, took the volume (epoch $E)"
  grep -q 'etcd lost the cluster' "$T"/n?.log || fail "$ROUND_LOG: no node saw etcd's loss"
  round_converges "$old"
  # The nodes kept running: the in-sync replica applied the primary's last message, so its
  # rank says it held the term (its resync: the records' units); the stale one's map was kept
  # by the primary. (After a kill the in-sync one may have applied less: copied whole.)
  [ $((SEED % 2)) = 1 ] || expect_no_whole_copy "etcd's loss (the nodes kept running)"
}

# A replica that missed writes is killed while it is being resynced, then comes back.
row_kill_resync_target() {
  local old=$E p=$P r
  r=$(((p % 3) + 1))
  away_and_write "$r" TERM 500 1000
  start_node "$r"
  sleep "0.$((RANDOM % 4))"
  stop_node "$r" KILL
  bc_write "$p" $((SEED + 500)) 200 >"$T/w1b.log" 2>&1 ||
    { cat "$T/w1b.log" >&2; fail "$ROUND_LOG: writes after the resync target died"; }
  start_node "$r"
  round_converges "$old"
}

# The primary dies while one replica (o) is away (stopped cleanly: out of sync under it); the
# other (r) takes over, and once o is back starts copying the whole volume to it; r dies
# before that copy can end: o must not take the volume (no primary is right) until r
# returns. The primary's messages carry an injected 20 ms round trip (run_row), so that the
# copy (one region at a time) outlasts the kill. (A survivor that was in sync with the dead
# primary gets only the in-flight window, too fast to be killed mid-way.)
row_kill_new_primary_mid_resync() {
  local old=$E p=$P r o p2
  r=$(((p % 3) + 1))
  o=$(((r % 3) + 1))
  stop_node "$o" TERM
  kill_under_writes "$p" "$SEED" $((300 + RANDOM % 1500)) "$T/w1.log"
  start_node "$o"
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known "$r" "$p"
  p2=$P
  [ "$p2" = "$r" ] || fail "$ROUND_LOG: n$p2 took the volume, not the in-sync n$r"
  stop_node "$p2" KILL
  # For two lease times the survivor must not take the volume: its copy is out of sync.
  local v
  for _ in $(seq $((FAULT_TTL * 20))); do
    v=$(view "$o") || fail "$ROUND_LOG: node n$o does not answer"
    case "$v" in
      "n$o "*) fail "$ROUND_LOG: the out-of-sync survivor n$o was promoted ($v)" ;;
    esac
    sleep 0.1
  done
  start_node "$p2"
  start_node "$p"
  round_converges "$old"
}

# The number of copies changed while the primary dies (spdctl volume set-replicas): down to two
# (one replica, r, leaves and deletes its copy), writes, up to three again, asked of the other
# replica, o (r gets a new copy, copied whole; the messages carry an injected 20 ms round trip
# so that the copy lasts), and the primary is killed under writes while r is out of sync: r must
# not take the volume; o does, holds every acknowledged write, and copies r whole.
row_recount_kill_primary() {
  local old=$E p=$P r="" o k v
  ctl "$p" volume set-replicas rv 2
  v=$(view "$p") || fail "$ROUND_LOG: node n$p does not answer"
  for k in 1 2 3; do [[ "$v" == *"n$k="* ]] || r=$k; done
  [ -n "$r" ] && [ "$r" != "$p" ] || fail "$ROUND_LOG: after set-replicas 2: $v"
  o=$((6 - p - r))
  bc_write "$p" $((SEED + 500)) $((200 + RANDOM % 300)) >"$T/w0b.log" 2>&1 ||
    { cat "$T/w0b.log" >&2; fail "$ROUND_LOG: writes with two copies"; }
  ctl "$o" volume set-replicas rv 3
  v=$(view "$p") || fail "$ROUND_LOG: node n$p does not answer"
  [[ "$v" == *"n$r=out_of_sync"* ]] || fail "$ROUND_LOG: n$r placed again, not out of sync: $v"
  kill_under_writes "$p" "$SEED" $((300 + RANDOM % 1500)) "$T/w1.log"
  wait_until "$ROUND_LOG: a new primary" $((FAULT_TTL + 15)) primary_is_known "$o" "$p"
  # n$r may take it only if its copy was whole, and in sync, before the kill (the copy outran
  # the writes: it should not, the volume being filled over all of its 64 MiB).
  if [ "$P" != "$o" ] && ! round_log "$p" | grep -q "replica n$r resynced .*; in sync"; then
    fail "$ROUND_LOG: n$P took the volume, not the in-sync n$o"
  fi
  [ "$E" -gt "$old" ] || fail "$ROUND_LOG: new primary n$P with epoch $E, not above $old"
  bc_verify "$P" "the new primary"
  start_node "$p"
  round_converges "$old"
}

# The last replica standing fails and older ones return: one replica goes away (stopped
# cleanly), writes go on; the other goes away, writes go on (the primary alone); the primary is
# killed under writes. Both replicas return: neither may take the volume (each missed
# acknowledged writes; no primary is right) until the primary returns, takes it again and
# resyncs them.
row_last_standing() {
  local old=$E p=$P r1 r2 k v
  r1=$(((p % 3) + 1))
  r2=$(((r1 % 3) + 1))
  stop_node "$r1" TERM
  bc_write "$p" "$SEED" $((200 + RANDOM % 500)) >"$T/w1.log" 2>&1 ||
    { cat "$T/w1.log" >&2; fail "$ROUND_LOG: writes with one replica away"; }
  stop_node "$r2" TERM
  kill_under_writes "$p" $((SEED + 300)) $((200 + RANDOM % 500)) "$T/w1b.log"
  start_node "$r1"
  start_node "$r2"
  for _ in $(seq $((FAULT_TTL * 20))); do
    for k in "$r1" "$r2"; do
      v=$(view "$k") || fail "$ROUND_LOG: node n$k does not answer"
      case "$v" in
        "n$r1 "* | "n$r2 "*) fail "$ROUND_LOG: a copy that missed writes took the volume ($v)" ;;
      esac
    done
    sleep 0.1
  done
  start_node "$p"
  round_converges "$old"
}

# A link that flaps during a resync: a replica killed while writes go on comes back and is
# resynced (its whole volume: a killed copy's state is unknown) over links with an injected
# 20 ms round trip (run_row), so that the copy lasts; twice meanwhile its network is cut for
# longer than the 5 s ack timeout (the resync stops, keeping its progress) and healed (it
# resumes). It ends in sync with every acknowledged write.
row_flap_resync() {
  local old=$E p=$P r i
  r=$(((p % 3) + 1))
  away_and_write "$r" KILL 300 700
  start_node "$r"
  for i in 1 2; do
    # (Resumed after the first cut, the rest of the copy may be done before it is seen.)
    wait_until "$ROUND_LOG: n$r resyncing ($i)" 30 resyncing_or_done "$p" "$r"
    resyncing "$p" "$r" || break
    sleep "0.$((RANDOM % 5))"
    node_isolate "$r"
    sleep 6
    node_heal "$r"
  done
  round_converges "$old"
}
# Whether primary K is copying regions to replica R now (its link's detail).
resyncing_or_done() {  # K R: resyncing, or the copy is in sync again (in etcd)
  resyncing "$1" "$2" || json '" ".join(c["state"] for c in d["items"][0]["copies"] if c["node"] == "n'"$2"'")' | grep -qx in_sync
}
resyncing() {  # K R
  ctl "$1" replica list rv -o json
  json '" ".join(c.get("detail", "") for c in d["items"][0]["copies"] if c["node"] == "n'"$2"'")' |
    grep -q "^resyncing: at byte"
}

round_log() { tail -n "+$((ROUND_LINE[$1] + 1))" "$T/n$1.log"; }  # K: this round's part

row_rtt() {
  row_kill9_primary
}

# run_row NAME ROUND: one round of a row, with its own nodes.
run_row() {
  local row=$1 round=$2 fn=$1
  SEED=$((FAULT_SEED + round))
  RANDOM=$SEED
  ROUND_LOG="$row round $round (seed $SEED)"
  NODE_ARGS=()
  if [[ "$row" == rtt_* ]]; then
    NODE_ARGS=(--replication-inject-rtt-us "${row#rtt_}" --replication-inject-loss-ppm 10000
      --replication-inject-seed "$SEED")
    fn=rtt
  elif [ "$row" = kill_new_primary_mid_resync ] || [ "$row" = flap_resync ] ||
    [ "$row" = recount_kill_primary ] || [ "$row" = convert_kill_primary ]; then
    NODE_ARGS=(--replication-inject-rtt-us 20000)
  fi
  SETUP_BLOCKS=4096
  [ "$row" != recount_kill_primary ] || SETUP_BLOCKS=16384  # a whole copy that lasts
  NODE3_ARGS=""
  NODE1_ARGS=""
  # From its 20th data operation on: a failure in the node's start-up (its pool's first
  # commits) ends it before the round begins (seed 6002 did).
  [ "$row" != io_errors_replica ] ||
    NODE3_ARGS="--backend sim --sim-error-rate 0.005 --sim-error-after-ops 20 --sim-seed $SEED"
  [ "$row" != io_errors_primary ] ||
    NODE1_ARGS="--backend sim --sim-error-rate 0.005 --sim-error-after-ops 4000 --sim-seed $SEED"
  if [[ "$row" == enospc_* ]]; then
    # 64 KiB chunks: the first writes (over the whole volume) allocate a part of it, the
    # row's writes the rest. The node that fills up: n3 (a replica) or n1 (the primary).
    local full=3
    [ "$row" != enospc_primary ] || full=1
    NODE_ARGS=(--chunk-size 64K)
    SETUP_BLOCKS=16384
    mkdir -p "$(node_dir $full)"
    mount -t tmpfs -o size=1G tmpfs "$(node_dir $full)" || fail "$ROUND_LOG: cannot mount a tmpfs"
  fi
  [ "$row" != powercut_replica ] || powercut_fs_mount 3
  if [ "$row" = powercut_primary ]; then
    powercut_fs_mount 1
    # A window of 64 units where the writes touch 256 (16 MiB of blocks): units leave the log
    # (after flushes of the primary's copy) all along, not only join it.
    NODE_ARGS=(--replication-activity-window-mib 4)
  fi
  local t0=$SECONDS
  for k in 1 2 3; do  # where this round's part of each node's log starts (round_log)
    ROUND_LINE[k]=0
    [ ! -f "$T/n$k.log" ] || ROUND_LINE[k]=$(wc -l <"$T/n$k.log")
  done
  round_setup
  "row_$fn"
  round_teardown
  powercut_fs_umount
  echo "faults: $ROUND_LOG: OK ($((SECONDS - t0)) s, epoch $E, primary n$P; during the fault: $(grep -o 'acknowledged durable in this run: [^;]*' "$T/w1.log" | head -1))"
}
