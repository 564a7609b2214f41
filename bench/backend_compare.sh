#!/usr/bin/env bash
# Backend path benchmark: 4 KiB random read and write at QD1 and QD32 through spd2's uring
# backend (bench/backend_bench) beside fio's io_uring engine on the same 1 GiB file in /dev/shm,
# interleaved over --rounds rounds. Prints medians of IOPS and CPU us per I/O, and spd/fio.
#   bench/backend_compare.sh [--rounds 5] [--seconds 5] [--backend uring]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench=${BACKEND_BENCH:-$here/../build/bench/backend_bench}
rounds=5
seconds=5
backend=uring
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$bench" ] || { echo "build first: $bench missing" >&2; exit 1; }
file=$(mktemp /dev/shm/spd-bench.XXXXXX)
trap 'rm -f "$file"' EXIT
dd if=/dev/urandom of="$file" bs=1M count=1024 status=none

declare -A R
for r in $(seq "$rounds"); do
  for rw in randread randwrite; do
    for qd in 1 32; do
      out=$(fio --name=b --filename="$file" --ioengine=io_uring --direct=1 --rw=$rw --bs=4k \
        --iodepth=$qd --time_based --runtime="$seconds" --output-format=json 2>/dev/null)
      read -r fi fc < <(echo "$out" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
io = j["read"] if j["read"]["iops"] > 0 else j["write"]
ios = io["total_ios"] or 1
cpu = (j["usr_cpu"] + j["sys_cpu"]) / 100.0 * j["job_runtime"] / 1000.0
print(round(io["iops"]), round(cpu * 1e6 / ios, 2))')
      line=$("$bench" --backend "$backend" --path "$file" --rw $rw --qd $qd --seconds "$seconds")
      si=$(echo "$line" | sed -n 's/.*iops=\([0-9.]*\).*/\1/p')
      sc=$(echo "$line" | sed -n 's/.*cpu_us_per_io=\([0-9.]*\).*/\1/p')
      R[$rw.$qd.fio.iops]+=" $fi"; R[$rw.$qd.fio.cpu]+=" $fc"
      R[$rw.$qd.spd.iops]+=" $si"; R[$rw.$qd.spd.cpu]+=" $sc"
      echo "round $r $rw qd$qd: fio $fi IOPS ($fc us/io)  spd $si IOPS ($sc us/io)" >&2
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "\n%-10s %-4s %12s %12s %10s %12s %12s\n" workload qd "fio IOPS" "spd IOPS" "spd/fio" \
  "fio us/io" "spd us/io"
for rw in randread randwrite; do
  for qd in 1 32; do
    fi=$(echo "${R[$rw.$qd.fio.iops]}" | median); si=$(echo "${R[$rw.$qd.spd.iops]}" | median)
    fc=$(echo "${R[$rw.$qd.fio.cpu]}" | median); sc=$(echo "${R[$rw.$qd.spd.cpu]}" | median)
    printf "%-10s %-4s %12s %12s %10s %12s %12s\n" $rw $qd "$fi" "$si" \
      "$(awk -v a="$si" -v b="$fi" 'BEGIN {printf "%.2f", a / b}')" "$fc" "$sc"
  done
done
echo "(medians of $rounds interleaved rounds, ${seconds}s each, 1 GiB file in /dev/shm, backend=$backend)"
