# spd-it: alone (kills under load, timed)
# blockcheck.py's own test, against one real spd2 ($SPD2; no replication yet). It shows that the
# checker passes what it should and fails what it should:
#   1. a write run (32 requests in flight, FUA writes and FLUSHes), then verify: passes;
#   2. a write run that SIGKILLs spd2 in the middle, spd2 restarted on the same data: passes;
#   3. negative controls, each on a volume of its own, each after a verify that passed:
#      (a) a block acknowledged durable overwritten through NBD with its own older version:
#          verify must fail with exactly 1 regressed block; (b) garbage written into a block:
#          exactly 1 corrupt; and likewise a torn block (corrupt: bad checksum), another block's
#          content (corrupt: misplaced) and zeros (lost);
#      (c) spd2 acknowledging durability it did not make: PoolOptions::fault_skip_commit_flush is
#          not a daemon flag (only the crash harness sets it), so that one is skipped. What stands
#          in for it: spd2's --fault-noop-flush (the backends complete FLUSH without fdatasync
#          and drop FUA) with its pool on powercut_fs (tests/integration/powercut_fs.c, a file
#          system that loses what was never made durable): write, SIGKILL, power cut, restart,
#          and verify must report lost and regressed blocks; the same run without the fault must
#          pass. (A SIGKILL alone loses nothing that reached the kernel, fault or no fault.)
#   4. chained rounds on one state file: write (epoch 1), write with a SIGKILL (epoch 2),
#      restart, verify, write again (epoch 3), verify; versions never reused.
# Every blockcheck.py exit code is checked against the one expected.
source "$(dirname "$0")/../integration/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
FS=${POWERCUT_FS:-$(dirname "$SPD2")/tests/powercut_fs}
MNT="$T/mnt"
FS_PID=""
SPD_POOL_SIZE=512M
SPD_NBD_LISTEN=off  # spd2 restarts right after a SIGKILL: the unix socket only
NEG=(regress garbage torn misplace zero)
VOLUMES=(--volume basic:64M --volume chain:16M --volume prefix:8M)
for k in "${NEG[@]}"; do VOLUMES+=(--volume "neg-$k:4M"); done

teardown() {
  set +e  # tear everything down even when a step fails
  if [ -n "$SPD_PID" ] && kill -0 "$SPD_PID" 2>/dev/null; then
    kill -KILL "$SPD_PID"
    wait "$SPD_PID" 2>/dev/null
  fi
  SPD_PID=""
  for _ in $(seq 50); do  # a SIGKILLed spd2 can hold the pool open for a moment
    mountpoint -q "$MNT" 2>/dev/null || break
    fusermount3 -u "$MNT" 2>/dev/null || sleep 0.1
  done
  if [ -n "$FS_PID" ] && kill -0 "$FS_PID" 2>/dev/null; then
    kill -TERM "$FS_PID"
    wait "$FS_PID" 2>/dev/null
  fi
  cleanup
}
trap teardown EXIT
trap 'exit 143' TERM INT

# bc CODE ARGS...: runs blockcheck.py ARGS (its output shown indented and kept in $T/bc.out);
# fails unless it exits CODE.
bc() {
  local want=$1 rc=0
  shift
  "$PY" "$here/blockcheck.py" "$@" >"$T/bc.out" 2>&1 || rc=$?
  sed 's/^/    /' "$T/bc.out"
  [ "$rc" -eq "$want" ] || fail "blockcheck.py $1 exited $rc, wanted $want"
}
# has TEXT: the last blockcheck.py output contains TEXT.
has() { grep -qF -- "$1" "$T/bc.out" || fail "blockcheck.py did not say: $1"; }
# verify_counts OK LOST REGRESSED CORRUPT: the last verify's summary says exactly these counts.
verify_counts() { has ": ok $1, lost $2, regressed $3, corrupt $4"; }
# count KIND: that number in the last verify's summary.
count() { grep '^verify: .* blocks checked' "$T/bc.out" | sed -n "s/.*[:,] $1 \([0-9]*\).*/\1/p"; }

# reap_spd2: waits (10 s at most) until spd2 has exited, reaps it, sets SPD_RC to its status.
# Returns 1 if it still runs.
reap_spd2() {
  local state
  for _ in $(seq 200); do
    state=$(awk '{print $3}' "/proc/$SPD_PID/stat" 2>/dev/null) || state=""
    if [ -z "$state" ] || [ "$state" = Z ]; then
      SPD_RC=0
      wait "$SPD_PID" || SPD_RC=$?
      SPD_PID=""
      return 0
    fi
    sleep 0.05
  done
  return 1
}
# write_kill ARGS...: a write run that SIGKILLs spd2 after 3000 writes (of 20000 at most): it
# must exit 3 (connection lost), and spd2 must be gone by SIGKILL. The shell's stderr is off
# meanwhile (it would print a "Killed" line for the spd2 job), so nothing in there calls fail.
write_kill() {
  local rc=0 gone=0
  { "$PY" "$here/blockcheck.py" write --ops 20000 --kill-pid "$SPD_PID" --kill-after-ops 3000 \
      "$@" >"$T/bc.out" 2>&1 || rc=$?
    reap_spd2 || gone=1; } 2>/dev/null
  sed 's/^/    /' "$T/bc.out"
  [ "$rc" -eq 3 ] || fail "blockcheck.py write with --kill-pid exited $rc, wanted 3"
  [ "$gone" -eq 0 ] || fail "spd2 still runs 10 s after blockcheck.py's SIGKILL"
  [ "$SPD_RC" -eq 137 ] || fail "spd2 exited $SPD_RC, not by SIGKILL"
  has "sent SIGKILL to pid"
}

spd() { start_spd2 --cores 2 "${VOLUMES[@]}" "$@"; }
start=$(date +%s.%N)
spd

echo "== 1. write (QD 32, FUA and FLUSH), verify"
S1="$T/basic.json"
bc 0 write --uri "$(uri basic)" --state "$S1" --seed 1 --blocks 16384 --qd 32 --ops 4000 \
  --flush-every 16 --fua-ratio 0.25
has "write: completed; 4000 writes"
has "at most 32 requests in flight"
grep -Eq "acknowledged durable in this run: flush [1-9][0-9]*, fua [1-9]" "$T/bc.out" ||
  fail "no block acknowledged durable both by FLUSH and by FUA"
bc 0 verify --uri "$(uri basic)" --state "$S1"
verify_counts 16384 0 0 0
# Bounded by time as well: --seconds ends a run that --ops would not (run.sh's 300-s timeout
# stands behind it). Only liveness is checked, not speed: a loaded machine may be slow to start.
bc 0 write --uri "$(uri basic)" --state "$S1" --seed 1 --seconds 1 --ops 100000000
has "write: completed"
n=$(sed -n 's/^write: completed; \([0-9]*\) writes.*/\1/p' "$T/bc.out")
[ -n "$n" ] && [ "$n" -lt 100000000 ] || fail "a 1-second write run did not stop by time ($n writes)"
bc 0 verify --uri "$(uri basic)" --state "$S1"
verify_counts 16384 0 0 0

echo "== 1b. verify --prefix: a run that completed whole is its own last prefix; a block written"
echo "   once and completed before the last FLUSH, zeroed since, is no prefix"
SP="$T/prefix.json"
bc 0 write --uri "$(uri prefix)" --state "$SP" --seed 11 --blocks 2048 --ops 2000 --flush-every 16
bc 0 verify --uri "$(uri prefix)" --state "$SP" --prefix
flushes=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['runs'][-1]['flushes']))" "$SP")
has "verify --prefix: passed: a FLUSH-consistent prefix, FLUSH $flushes..$flushes of $flushes"
# A block written once in this run, completed before the last FLUSH was sent, not written before.
B=$("$PY" - "$SP" <<'EOF2'
import json, sys
s = json.load(open(sys.argv[1]))
run = s["runs"][-1]
print(next(b for b, v in run["issued"].items()
           if len(v) == 1 and 0 <= v[0][1] < run["flushes"][-1][1] and run["pre"][b][0] == 0))
EOF2
) || fail "no block written once and completed before the last FLUSH"
bc 0 damage --uri "$(uri prefix)" --state "$SP" --kind zero --block "$B"
bc 1 verify --uri "$(uri prefix)" --state "$SP" --prefix
has "verify --prefix: FAILED: no FLUSH-consistent prefix (a block needs FLUSH >= $flushes, another <= "

echo "== 2. write, SIGKILL of spd2 mid-run, restart, verify"
write_kill --uri "$(uri basic)" --state "$S1" --seed 2 --qd 32 --flush-every 8 --fua-ratio 0.2
spd
bc 0 verify --uri "$(uri basic)" --state "$S1"
verify_counts 16384 0 0 0

echo "== 4. chained rounds on one state: write, write + SIGKILL, verify, write, verify"
S4="$T/chain.json"
bc 0 write --uri "$(uri chain)" --state "$S4" --seed 4 --blocks 4096 --epoch 1 --ops 2000
write_kill --uri "$(uri chain)" --state "$S4" --seed 4 --epoch 2 --connections 2
spd
bc 0 verify --uri "$(uri chain)" --state "$S4"
verify_counts 4096 0 0 0
bc 0 write --uri "$(uri chain)" --state "$S4" --seed 4 --epoch 3 --ops 1000 --flush-every 4
bc 0 verify --uri "$(uri chain)" --state "$S4"
verify_counts 4096 0 0 0
# Three runs, epochs 1 2 3, each starting after the last version of the one before (the first
# version of run k+1 > the first of run k, and "next" past them all); the volume holds a mix:
# blocks durable at an epoch-3 version (some of them overwrote blocks made durable in rounds 1
# and 2) and blocks still at an epoch-1 or epoch-2 version.
"$PY" - "$S4" <<'EOF' || fail "the chained state file is not what three runs make"
import json, sys
s = json.load(open(sys.argv[1]))
runs = s["runs"]
assert [r["epoch"] for r in runs] == [1, 2, 3], runs
firsts = [r["first"] for r in runs] + [s["next"]]
assert all(a < b for a, b in zip(firsts, firsts[1:])), firsts
round3 = sum(1 for b in s["blocks"].values() if b[0] >= runs[2]["first"])
older = sum(1 for b in s["blocks"].values() if 0 < b[0] < runs[2]["first"])
assert round3 > 100 and older > 100, (round3, older)
print("    state: runs start at versions %s, next %d; blocks durable at an epoch-3 version %d, "
      "at an older one %d" % (firsts[:3], s["next"], round3, older))
EOF

echo "== 3. negative controls: verify must fail"
for k in "${NEG[@]}"; do
  S="$T/neg-$k.json"
  bc 0 write --uri "$(uri "neg-$k")" --state "$S" --seed 3 --blocks 1024 --ops 1500
  if [ "$k" = regress ]; then  # a second round, so that blocks have an older durable version
    cp "$S" "$T/neg-$k.old.json"
    bc 0 write --uri "$(uri "neg-$k")" --state "$S" --seed 3 --ops 1500
  fi
  bc 0 verify --uri "$(uri "neg-$k")" --state "$S"
  verify_counts 1024 0 0 0
  older=()
  [ "$k" != regress ] || older=(--older "$T/neg-$k.old.json")
  bc 0 damage --uri "$(uri "neg-$k")" --state "$S" --kind "$k" "${older[@]}"
  bc 1 verify --uri "$(uri "neg-$k")" --state "$S"
  has "verify: FAILED"
  case $k in
    regress) verify_counts 1023 0 1 0; has "REGRESSED: block" ;;
    garbage) verify_counts 1023 0 0 1; has "no block header (garbage)" ;;
    torn) verify_counts 1023 0 0 1; has "bad checksum (torn or mixed)" ;;
    misplace) verify_counts 1023 0 0 1; has "misplaced: holds block" ;;
    zero) verify_counts 1023 1 0 0; has "LOST: block" ;;
  esac
done
stop_spd2

echo "== 3c. skipped: fault_skip_commit_flush is no spd2 flag (PoolOptions, crash harness only)"
echo "== 3c'. power cut on powercut_fs: passes without a fault, fails with --fault-noop-flush"
[ -x "$FS" ] || fail "no powercut_fs at $FS: scripts/build.sh builds it beside spd2"
[ -c /dev/fuse ] || fail "no /dev/fuse: this test needs FUSE (package fuse3)"
powercut_case() {  # powercut_case [--fault-noop-flush]
  local fault=${1:-} S="$T/cut.json" rc
  mkdir -p "$MNT"
  "$FS" "$MNT" 2>>"$T/fs.log" &
  FS_PID=$!
  for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.05; done
  mountpoint -q "$MNT" || fail "powercut_fs did not mount $MNT"
  local pc=(--cores 2 --pool "$MNT/pool.img" --volume cut:16M)
  # A clean run formats the pool and writes a first round, SIGTERM makes it durable (so that the
  # run under test overwrites blocks as well as writing new ones); then the run under test.
  SPD_POOL_SIZE=256M start_spd2 "${pc[@]}"
  bc 0 write --uri "$(uri cut)" --state "$S" --seed 5 --blocks 4096 --ops 1000
  stop_spd2
  SPD_POOL_SIZE=256M start_spd2 "${pc[@]}" $fault
  # A FLUSH after every 200 writes, the SIGKILL right after write 3000, before the FLUSH that
  # would follow it: the plain writes completed since the last FLUSH are volatile at the cut, so
  # a recorder that took them for durable fails here.
  write_kill --uri "$(uri cut)" --state "$S" --seed 5 --qd 32 --flush-every 200 --fua-ratio 0.25
  echo cut >"$MNT/.powercut"
  SPD_POOL_SIZE=256M start_spd2 "${pc[@]}"
  if [ -z "$fault" ]; then
    bc 0 verify --uri "$(uri cut)" --state "$S"
    verify_counts 4096 0 0 0
  else
    bc 1 verify --uri "$(uri cut)" --state "$S"
    # Blocks first written in the run come back as zeros (lost), blocks overwritten in it come
    # back as their first-round version (regressed); none is torn or foreign.
    [ "$(count lost)" -gt 0 ] || fail "--fault-noop-flush: no block lost"
    [ "$(count regressed)" -gt 0 ] || fail "--fault-noop-flush: no block regressed"
    [ "$(count corrupt)" -eq 0 ] || fail "--fault-noop-flush: corrupt blocks"
    echo "    the missing flush was caught: $(count lost) blocks lost, $(count regressed) regressed"
  fi
  stop_spd2
  fusermount3 -u "$MNT" || fail "cannot unmount $MNT"
  rc=0
  wait "$FS_PID" || rc=$?
  FS_PID=""
  [ "$rc" -eq 0 ] || fail "powercut_fs exited $rc"
  rm -f "$S"
}
powercut_case
powercut_case --fault-noop-flush

echo "blockcheck: every case passed in" \
  "$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}') s"
