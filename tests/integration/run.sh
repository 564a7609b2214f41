#!/usr/bin/env bash
# Runs every test_* in this folder and in ../cluster against spd2 ($SPD2, default build/spd2) with real NBD
# clients. One line per test, then "N passed, N failed". Exit non-zero on any failure.
# SPD_IT_SKIP="test_a.sh test_b.py" leaves those out (each listed as SKIP).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export SPD2=${SPD2:-$here/../../build/spd2}
[ -x "$SPD2" ] || { echo "spd2 not found at $SPD2 (build first)"; exit 1; }
# spdctl from the same build as spd2 (build/ or build-asan/).
export SPDCTL=${SPDCTL:-$(dirname "$SPD2")/spdctl}
passed=0
failed=0
# tests/cluster holds the replication tests (and their tools), run the same way.
for t in "$here"/test_* "$here"/../cluster/test_*; do
  name=$(basename "$t")
  # SPD_IT_SKIP: names of tests not to run (scripts/test.sh's ASan pass leaves out those that
  # test the machine or the harness rather than the daemon).
  case " ${SPD_IT_SKIP:-} " in
    *" $name "*) echo "SKIP $name"; continue ;;
  esac
  start=$(date +%s.%N)
  log=$(mktemp)
  case "$t" in
    *.py) timeout 300 /usr/bin/python3 "$t" >"$log" 2>&1 ;;
    *) timeout 300 bash "$t" >"$log" 2>&1 ;;
  esac
  rc=$?
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "PASS $name (${secs}s)"
  else
    failed=$((failed + 1))
    echo "FAIL $name (${secs}s, exit $rc)"
    # The reason first (lib.sh's fail prints "FAIL: ..."): CI may keep only the start of a tail.
    grep -m1 '^FAIL: ' "$log" | sed 's/^FAIL: /    reason: /'
    [ "$rc" -ne 124 ] || echo "    reason: timed out after 300 s"
    sed 's/^/    /' "$log" | tail -n 40
  fi
  rm -f "$log"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
