# spd-it: alone (bpftrace attaches to the daemon (slow beside a neighbour))
# USDT probes (docs/observability.md): readelf lists the six spd2 probes with their
# semaphores; bpftrace attached to the running daemon sees each probe exactly once per request
# of a known workload (36 requests of six kinds on each of two volumes owned by different
# reactors), in pipeline order, with --qos off and on;
# tools/spd-latency.bt draws a histogram for the volume and tools/spd-slowest.bt a stage
# breakdown; and once the tracer is gone every semaphore is back to 0 (the probes cost one
# branch again). Needs root and bpftrace; fails (does not skip) without them, unless spd2 was
# built with -DSPD_USDT=OFF.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
tools=$here/../../tools

cache=$(dirname "$SPD2")/CMakeCache.txt
if [ -f "$cache" ] && grep -q '^SPD_USDT:BOOL=OFF$' "$cache"; then
  echo "SKIP: $SPD2 was built with -DSPD_USDT=OFF (no probes to test)"
  exit 77  # skipped (tests/integration/run.sh)
fi
# Under ASan the release run covers the probes: bpftrace's attach and detach of the sanitized
# binary took minutes on a busy 2-core machine (a SIGINT not answered within 30 s in CI), and
# the probes are the same code.
if sanitizer_build; then
  echo "SKIP: $SPD2 is the sanitizer build; the release build's run tests the probes"
  exit 77  # skipped (tests/integration/run.sh)
fi
command -v bpftrace >/dev/null || fail "bpftrace is not installed (apt-get install bpftrace)"
[ "$(id -u)" -eq 0 ] || fail "bpftrace needs root to attach to spd2's USDT probes"

probes=(request__arrival sched__enqueue sched__dispatch backend__submit backend__complete
  request__reply)

# Every probe is in the binary, with a semaphore (built with systemtap-sdt-dev's sys/sdt.h).
readelf -n "$SPD2" >"$T/notes"
awk '/Provider: spd2/ {getline; print $2; getline; print $NF}' "$T/notes" >"$T/probes"
for p in "${probes[@]}"; do
  grep -qx "$p" "$T/probes" ||
    fail "readelf -n $SPD2 lists no spd2:$p (built without sys/sdt.h? see CMake's warning)"
done
if grep -qx "0x0*" "$T/probes"; then
  fail "an spd2 probe has no semaphore"
fi

# sems: "probe sites value" for each spd2 probe of the running daemon: its semaphore read from
# /proc/PID/mem. The kernel sets it to the number of the probe's sites (call sites in the code)
# with a tracer's breakpoint installed, so value == sites means that probe is fully attached,
# whoever attached it, and 0 that nothing is.
sems() {
  $PY - "$SPD_PID" "$SPD2" <<'PY'
import os, re, subprocess, sys
pid, exe = int(sys.argv[1]), os.path.realpath(sys.argv[2])
notes = subprocess.run(["readelf", "-n", exe], capture_output=True, text=True, check=True).stdout
sems = {}
for m in re.finditer(r"Provider: spd2\s+Name: (\S+)\s+Location: \S+, Base: \S+, "
                     r"Semaphore: (0x[0-9a-f]+)", notes):
    s = sems.setdefault(m.group(1), [int(m.group(2), 16), 0])
    s[1] += 1
base = None
for line in open(f"/proc/{pid}/maps"):
    f = line.split()
    if len(f) >= 6 and f[5] == exe and int(f[2], 16) == 0:
        base = int(f[0].split("-")[0], 16)
        break
assert base is not None, "spd2's image not in its maps"
with open(f"/proc/{pid}/mem", "rb") as mem:
    for name, (addr, sites) in sorted(sems.items()):
        mem.seek(base + addr)
        print(name, sites, int.from_bytes(mem.read(2), "little"))
PY
}

# wait_attached PROBE...: until each PROBE is attached at all its sites and every other probe
# at none (one tracer at a time). Bounded: bpftrace compiles its program first (seconds).
wait_attached() {
  local want=" $* "
  for _ in $(seq 600); do
    kill -0 "$BT_PID" 2>/dev/null || { cat "$T/bt.err" >&2; fail "bpftrace exited early"; }
    if sems | awk -v want="$want" '{on = index(want, " " $1 " ") > 0
        if ((on && $3 != $2) || (!on && $3 != 0)) bad = 1} END {exit bad}'; then
      return 0
    fi
    sleep 0.1
  done
  sems >&2
  fail "bpftrace did not attach to $* within 60 s"
}

# start_bt SCRIPT [ARGS...]: bpftrace on spd2, output in $T/bt.out; stop_bt ends it with SIGINT
# (it prints its maps) and waits for the semaphores to go back to 0.
start_bt() {
  # timeout: a last resort if the test dies before stop_bt; it forwards stop_bt's SIGINT.
  timeout -s INT 240 bpftrace -p "$SPD_PID" "$@" >"$T/bt.out" 2>"$T/bt.err" &
  BT_PID=$!
}
stop_bt() {
  kill -INT "$BT_PID"
  local rc=0
  for _ in $(seq 300); do
    kill -0 "$BT_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$BT_PID" 2>/dev/null && fail "bpftrace did not stop within 30 s of SIGINT"
  wait "$BT_PID" || rc=$?
  BT_PID=""
  [ "$rc" -eq 0 ] || { cat "$T/bt.out" "$T/bt.err" >&2; fail "bpftrace exited $rc"; }
  for _ in $(seq 100); do
    sems | awk '$3 != 0 {bad = 1} END {exit bad}' && return 0
    sleep 0.1
  done
  sems >&2
  fail "semaphores still set after bpftrace left"
}
BT_PID=""
stop_bt_on_exit() {
  if [ -n "$BT_PID" ] && kill -0 "$BT_PID" 2>/dev/null; then
    kill -INT "$BT_PID"
    wait "$BT_PID" 2>/dev/null || echo "bpftrace: exit $? at cleanup" >&2
  fi
  cleanup
}
trap stop_bt_on_exit EXIT

# The workload on volume $1, one libnbd connection, one NBD command per call (none is split; the
# handshake and NBD_CMD_DISC never reach the pipeline): 16 writes and 16 reads of 64 KiB, one
# flush, trim, write-zeroes and block status. 36 requests.
workload() {
  $PY - "$(uri "$1")" <<'PY'
import nbd, sys
K = 64 << 10
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
for i in range(16):
    h.pwrite(bytes([i + 1]) * K, i << 20)
h.flush()
for i in range(16):
    assert h.pread(K, i << 20) == bytes([i + 1]) * K, i
h.trim(1 << 20, 32 << 20)
h.zero(K, 40 << 20)
h.block_status(4 << 20, 0, lambda *a: 0)
h.shutdown()
PY
}
# RequestOp -> requests and bytes of the workload.
declare -A want_n=([0]=16 [1]=16 [2]=1 [3]=1 [4]=1 [5]=1)
declare -A want_bytes=([0]=$((16 << 16)) [1]=$((16 << 16)) [2]=0 [3]=$((1 << 20)) [4]=$((1 << 16))
  [5]=$((4 << 20)))

# Counts, per probe, volume and op, the events (@n_STAGE[volume, op]) and their bytes
# (@b_STAGE[...]); checks that each request passes the six probes in pipeline order (a bit per
# stage; @bad counts a probe that found its predecessors missing). One map per stage rather than
# a ["stage", ...] key: bpftrace 0.17 puts a short string literal in a key at a misaligned stack
# offset, which the verifier refuses.
cat >"$T/count.bt" <<'BT'
usdt:*:spd2:request__arrival {
  @n_arrival[str(arg0), arg2] = count(); @b_arrival[str(arg0), arg2] = sum(arg4); @m[arg1] = 1; }
usdt:*:spd2:sched__enqueue {
  @n_enqueue[str(arg0), arg2] = count(); @b_enqueue[str(arg0), arg2] = sum(arg4);
  if (@m[arg1] != 1) { @bad["enqueue"] = count(); } @m[arg1] = 3; }
usdt:*:spd2:sched__dispatch {
  @n_dispatch[str(arg0), arg2] = count(); @b_dispatch[str(arg0), arg2] = sum(arg4);
  if (@m[arg1] != 3) { @bad["dispatch"] = count(); } @m[arg1] = 7; }
usdt:*:spd2:backend__submit {
  @n_submit[str(arg0), arg2] = count(); @b_submit[str(arg0), arg2] = sum(arg4);
  if (@m[arg1] != 7) { @bad["submit"] = count(); } @m[arg1] = 15; }
usdt:*:spd2:backend__complete {
  @n_complete[str(arg0), arg2] = count(); @b_complete[str(arg0), arg2] = sum(arg4);
  if (@m[arg1] != 15) { @bad["complete"] = count(); } @m[arg1] = 31;
  if (arg5 != 0) { @bad["result"] = count(); } }
usdt:*:spd2:request__reply {
  @n_reply[str(arg0), arg2] = count(); @b_reply[str(arg0), arg2] = sum(arg4);
  if (@m[arg1] != 31) { @bad["reply"] = count(); } delete(@m[arg1]);
  if (arg5 == 0) { @bad["latency"] = count(); } }
END { clear(@m); }
BT

check_counts() {
  local mode=$1 vol stage op got
  if grep -q "@bad" "$T/bt.out"; then
    cat "$T/bt.out"
    fail "qos $mode: probes out of order or failed"
  fi
  for vol in vol0 vol1; do
    for stage in arrival enqueue dispatch submit complete reply; do
      for op in "${!want_n[@]}"; do
        got=$(sed -n "s/^@n_$stage\[$vol, $op\]: \([0-9]*\)$/\1/p" "$T/bt.out")
        [ "$got" = "${want_n[$op]}" ] || { cat "$T/bt.out"
          fail "qos $mode: $vol $stage op $op: ${got:-0} events, want ${want_n[$op]}"; }
        got=$(sed -n "s/^@b_$stage\[$vol, $op\]: \([0-9]*\)$/\1/p" "$T/bt.out")
        [ "$got" = "${want_bytes[$op]}" ] || { cat "$T/bt.out"
          fail "qos $mode: $vol $stage op $op: ${got:-0} bytes, want ${want_bytes[$op]}"; }
      done
    done
  done
  # Nothing else: 2 volumes x 6 ops x 6 stages of counts.
  got=$(grep -c '^@n_[a-z]*\[' "$T/bt.out")
  [ "$got" -eq 72 ] || { cat "$T/bt.out"; fail "qos $mode: $got counts, want 72"; }
}

# Two reactors, a volume owned by each (--spread-volumes, the default), so that the requests take
# every path to the volume, each with its own backend__submit and backend__complete sites: vol0
# on the pool's reactor (Volume::Submit, MapRange), vol1 on reactor 1 (the owner's path, and the
# fast path for the reads of a connection on reactor 0).
for mode in off on; do
  start_spd2 --cores 2 --volume vol0:256M --volume vol1:256M --qos "$mode"
  start_bt "$T/count.bt"
  wait_attached "${probes[@]}"
  workload vol0
  workload vol1
  stop_bt
  check_counts "$mode"
  stop_spd2
done

# The tools, one at a time (wait_attached tells one tracer's probes only), on the same workload.
start_spd2 --volume vol0:256M
start_bt "$tools/spd-latency.bt"
wait_attached request__arrival request__reply
workload vol0
stop_bt
grep -q '^@usecs\[vol0\]:' "$T/bt.out" ||
  { cat "$T/bt.out"; fail "spd-latency.bt: no vol0 histogram"; }
# Its buckets hold the 36 requests.
n=$(sed -n '/^@usecs\[vol0\]:/,/^$/p' "$T/bt.out" |
  sed -n 's/^\[[^]]*[])] *\([0-9][0-9]*\) .*/\1/p' | awk '{s += $1} END {print s + 0}')
[ "$n" -eq 36 ] || { cat "$T/bt.out"; fail "spd-latency.bt: $n requests in vol0's histogram"; }

start_bt "$tools/spd-slowest.bt"
wait_attached "${probes[@]}"
workload vol0
stop_bt
# The first request is slower than none before it: at least one line, with its stages.
grep -Eq '^vol0 +[0-5] +[0-9]+ +[0-9]+ +[0-9a-f]+( +[0-9]+){6}$' "$T/bt.out" ||
  { cat "$T/bt.out"; fail "spd-slowest.bt: no vol0 line"; }
grep -q '^@slowest_us\[vol0, ' "$T/bt.out" ||
  { cat "$T/bt.out"; fail "spd-slowest.bt: no top list"; }
stop_spd2
echo "usdt: 6 probes x 36 requests x 2 volumes, qos off and on; spd-latency.bt, spd-slowest.bt"
