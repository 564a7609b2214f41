#!/usr/bin/env bash
# Group-commit benchmark: N writers, each doing 4 KiB random write + FLUSH in a loop (fio's nbd
# engine with fsync=1, one NBD connection per writer), against spd2 on a pool in /dev/shm.
# Prints flushed IOPS for each writer count (median of --rounds runs), the ratio to one writer,
# and write amplification (backend bytes written / client bytes written, from spd2's counters).
#
# On tmpfs a device flush costs nothing, so the ratio there only shows CPU parallelism; give the
# flush a real cost to see group commit, e.g. the sim backend with a SATA-SSD-like cache flush:
#   --spd2-args "--backend sim --sim-flush-us 500"
#
#   bench/flush_scaling.sh [--rounds N] [--runtime S] [--writers "1 8"] [--bs 4k]
#                          [--spd2-args "..."] [--dir /dev/shm]
# --dir puts the pool on another file system (a real disk's flush, e.g. --dir /var/tmp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spd2=${SPD2:-$here/../build/spd2}
rounds=3
runtime=5
writers="1 8"
bs=4k
spd2_args=""
base_dir=/dev/shm
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --writers) writers=$2; shift 2 ;;
    --bs) bs=$2; shift 2 ;;
    --spd2-args) spd2_args=$2; shift 2 ;;
    --dir) base_dir=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$spd2" ] || { echo "spd2 not built at $spd2" >&2; exit 1; }
dir=$(mktemp -d "$base_dir/spd-flush.XXXXXX")
pid=""
cleanup() {
  # A daemon that already exited needs no signal; its exit status is no news at cleanup.
  if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

metric() {  # metric NAME -> value from the metrics endpoint (summed over its series' labels)
  curl -s "http://127.0.0.1:$mport/metrics" |
    awk -v n="$1" 'index($1, n "{") == 1 || $1 == n {s += $2; c++} END {if (c) print s}'
}

mport=$((20000 + RANDOM % 12000))  # below the ephemeral port range
"$spd2" --data-dir "$dir" --pool-size 4G --volume vol0:1G --nbd-listen off \
  --metrics-listen "127.0.0.1:$mport" --quiet --log-level warn $spd2_args &  # split on purpose
pid=$!
for _ in $(seq 100); do [ -S "$dir/nbd.sock" ] && break; sleep 0.1; done
[ -S "$dir/nbd.sock" ] || { echo "spd2 did not start" >&2; exit 1; }
uri="nbd+unix:///vol0?socket=$dir/nbd.sock"

# Steady state, as a database sees it: the region is written once first, so that neither the
# pool (chunk allocation records) nor the file system under it (block allocation) does first-write
# work inside the measured rounds.
fio --name=prefill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=4 --size=256M \
  --end_fsync=1 >/dev/null 2>&1 || { echo "prefill failed" >&2; exit 1; }
c0=$(metric spd_pool_commits_total || echo 0)
o0=$(metric spd_pool_overlap_flushes_total || echo 0)
cb0=$(metric spd_volume_client_bytes_written_total || echo 0)
bb0=$(metric spd_io_bytes_written_total || echo 0)

declare -A results
for r in $(seq "$rounds"); do
  for n in $writers; do
    out=$(fio --name=flush --ioengine=nbd --uri="$uri" --rw=randwrite --bs="$bs" --fsync=1 \
      --iodepth=1 --numjobs="$n" --group_reporting --size=256M --time_based \
      --runtime="$runtime" --output-format=json 2>/dev/null)
    iops=$(echo "$out" | /usr/bin/python3 -c '
import json, sys
s = sys.stdin.read()
print(round(json.loads(s[s.index("{"):])["jobs"][0]["write"]["iops"]))')
    results[$n]="${results[$n]:-} $iops"
    echo "round $r writers $n: $iops flushed writes/s"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "spd2 ${spd2_args:-(uring backend)}, pool in $base_dir, bs $bs, $rounds round(s) of ${runtime} s"
printf "%-8s %-14s %s\n" writers "median IOPS" "ratio to 1 writer"
base=""
for n in $writers; do
  m=$(echo "${results[$n]}" | median)
  [ -z "$base" ] && base=$m
  printf "%-8s %-14s %s\n" "$n" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a / b}')"
done
cb=$(($(metric spd_volume_client_bytes_written_total || echo 0) - cb0))
bb=$(($(metric spd_io_bytes_written_total || echo 0) - bb0))
commits=$(($(metric spd_pool_commits_total || echo 0) - c0))
overlaps=$(($(metric spd_pool_overlap_flushes_total || echo 0) - o0))
if [ "$cb" -gt 0 ] && [ $((commits + overlaps)) -gt 0 ]; then
  bsb=$(numfmt --from=iec "${bs^^}")
  pairs=$((cb / bsb))
  echo "group commit: $commits commits + $overlaps overlapping flushes for $pairs write+flush" \
    "pairs ($(awk -v w="$pairs" -v c="$((commits + overlaps))" 'BEGIN {printf "%.2f", w / c}')" \
    "client FLUSHes per device flush)"
fi
if [ "$cb" -gt 0 ]; then
  echo "write amplification in the rounds (backend bytes / client bytes):" \
    "$(awk -v a="$bb" -v b="$cb" 'BEGIN {printf "%.3f", a / b}')"
else
  echo "write amplification: counters spd_volume_client_bytes_written_total / spd_io_bytes_written_total not exported"
fi
