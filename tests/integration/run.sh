#!/usr/bin/env bash
# Runs every test_* in this folder and in ../cluster against spd2 ($SPD2, default build/spd2) with real NBD
# clients. One line per test, then "N passed, N failed". Exit non-zero on any failure.
# SPD_IT_SKIP="test_a.sh test_b.py" leaves those out (each listed as SKIP).
# SPD_IT_JOBS=N (default 1) runs up to N tests at a time, except those that say
# "# spd-it: alone (why)" in their first lines, which run one by one with nothing else running:
# tests that measure the daemon's CPU, rates, latencies or lease timing, or start many
# processes (etcd members, network namespaces); a neighbour would skew what they measure. Those
# that say "# spd-it: pair (why)" (a cluster of three nodes and an etcd on loopback: they wait
# on leases but measure nothing) run after the others, two at a time with each other only.
# Results are printed in the tests' order either way.
# A test that exits 77 skipped itself (its "SKIP: why" line is shown); it counts as skipped.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export SPD2=${SPD2:-$here/../../build/spd2}
[ -x "$SPD2" ] || { echo "spd2 not found at $SPD2 (build first)"; exit 1; }
# spdctl from the same build as spd2 (build/ or build-asan/).
export SPDCTL=${SPDCTL:-$(dirname "$SPD2")/spdctl}
jobs=${SPD_IT_JOBS:-1}
[[ $jobs =~ ^[1-9][0-9]?$ ]] || { echo "SPD_IT_JOBS '$jobs': want 1..99"; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# run_one INDEX PATH: runs one test; leaves its exit status, seconds and log in $out/INDEX.*.
run_one() {
  local i=$1 t=$2 start rc
  start=$(date +%s.%N)
  case "$t" in
    *.py) timeout 300 /usr/bin/python3 "$t" >"$out/$i.log" 2>&1 ;;
    *) timeout 300 bash "$t" >"$out/$i.log" 2>&1 ;;
  esac
  rc=$?
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}' >"$out/$i.secs"
  echo "$rc" >"$out/$i.rc"
}

# report INDEX NAME: prints the test's line (and the end of its log if it failed).
passed=0
failed=0
skipped=0
report() {
  local i=$1 name=$2 rc secs
  rc=$(cat "$out/$i.rc")
  secs=$(cat "$out/$i.secs")
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "PASS $name (${secs}s)"
  elif [ "$rc" -eq 77 ]; then
    skipped=$((skipped + 1))
    echo "SKIP $name ($(grep -m1 '^SKIP: ' "$out/$i.log" | sed 's/^SKIP: //'))"
  else
    failed=$((failed + 1))
    echo "FAIL $name (${secs}s, exit $rc)"
    # The reason first (lib.sh's fail prints "FAIL: ..."): CI may keep only the start of a tail.
    grep -m1 '^FAIL: ' "$out/$i.log" | sed 's/^FAIL: /    reason: /'
    [ "$rc" -ne 124 ] || echo "    reason: timed out after 300 s"
    sed "s/^/    /" "$out/$i.log" | tail -n 80
  fi
}

# tests/cluster holds the replication tests (and their tools), run the same way.
tests=("$here"/test_* "$here"/../cluster/test_*)
# First the tests that may share the machine, up to $jobs at a time (reported when all are
# done); then the pairs, up to two at a time (likewise); then the others one by one, each
# reported as it ends. With SPD_IT_JOBS=1 every test runs in the last pass, in order.
for pass in shared pair alone; do
  ran=()
  for i in "${!tests[@]}"; do
    t=${tests[$i]}
    name=$(basename "$t")
    # SPD_IT_SKIP: names of tests not to run (scripts/test.sh's ASan pass leaves out those that
    # test the machine or the harness rather than the daemon).
    case " ${SPD_IT_SKIP:-} " in
      *" $name "*)
        [ "$pass" != alone ] || { echo "SKIP $name (SPD_IT_SKIP)"; skipped=$((skipped + 1)); }
        continue
        ;;
    esac
    class=shared
    head -n 3 "$t" | grep -q '^# spd-it: alone' && class=alone
    head -n 3 "$t" | grep -q '^# spd-it: pair' && class=pair
    if [ "$pass" != alone ] && [ "$class" = "$pass" ] && [ "$jobs" -gt 1 ]; then
      local_jobs=$jobs
      [ "$pass" = shared ] || local_jobs=2
      while [ "$(jobs -rp | wc -l)" -ge "$local_jobs" ]; do wait -n; done
      run_one "$i" "$t" &
      ran+=("$i")
    elif [ "$pass" = alone ] && { [ "$class" = alone ] || [ "$jobs" -eq 1 ]; }; then
      run_one "$i" "$t"
      report "$i" "$name"
    fi
  done
  wait
  for i in "${ran[@]}"; do report "$i" "$(basename "${tests[$i]}")"; done
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
