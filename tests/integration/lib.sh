# Shared helpers for the integration tests (sourced). Each test gets its own temp directory,
# its own spd2 (started and stopped by pid) and its own ports.
set -euo pipefail

SPD2=${SPD2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/spd2}
PY=/usr/bin/python3  # Debian's python3-libnbd lives here only
T=$(mktemp -d /tmp/spd-it.XXXXXX)
SPD_PID=""
SPD_SOCK="$T/data/nbd.sock"
# The test's ports: a block of 8 below the kernel's ephemeral range (32768-60999, so that no
# client socket can hold one), SPD_PORT the first. Tests that run at the same time (run.sh's
# shared and pair passes) must not draw the same block: each holds a lock on its block's file
# under /tmp/spd-it-ports for as long as the test's shell (or a daemon it started) lives (flock
# goes with the last process that has the file open, so a test killed -9 leaves no stale lock),
# and takes no block where something still listens (a daemon of a test that ended, whose port
# io_uring's teardown still holds). SPD_PORT+0..3 are for the test's daemons, +4 and +5 etcd's.
PORT_BLOCK_SIZE=8
take_port_block() {
  mkdir -p /tmp/spd-it-ports
  local blk base
  for _ in $(seq 200); do
    blk=$((RANDOM % (12000 / PORT_BLOCK_SIZE)))
    base=$((20000 + blk * PORT_BLOCK_SIZE))
    exec {PORT_LOCK_FD}>"/tmp/spd-it-ports/$base"
    if flock -n "$PORT_LOCK_FD" &&
      [ -z "$(ss -Htan "sport >= :$base and sport < :$((base + PORT_BLOCK_SIZE))")" ]; then
      SPD_PORT=$base
      return 0
    fi
    exec {PORT_LOCK_FD}>&-
  done
  echo "FAIL: no free block of $PORT_BLOCK_SIZE loopback ports in 200 draws" >&2
  exit 1
}
take_port_block

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# spdctl from the same build as spd2 (run.sh exports it).
SPDCTL=${SPDCTL:-$(dirname "$SPD2")/spdctl}
# expect CODE ARGS...: runs spdctl ARGS, fails unless it exits CODE; stdout in $T/out, stderr
# in $T/err.
expect() {
  local want=$1 rc=0
  shift
  "$SPDCTL" "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$T/out" "$T/err"; fail "spdctl $* exited $rc, wanted $want"; }
}
# start_cluster_node NAME ARGS...: spd2 with its data in $T/NAME (log $T/NAME.log, no NBD TCP
# listener, its health cache in $T/NAME.health: nodes killed with -9 leave nothing in /dev/shm,
# and nodes of one test do not share one cache) and ARGS, in the background; returns once its
# control socket is there (a new one). Sets NODE_PID (killed at exit with the others).
start_cluster_node() {
  local n=$1
  shift
  # A node killed with -9 left its socket file: waiting for that one would return at once.
  rm -f "$T/$n/control.sock"
  "$SPD2" --data-dir "$T/$n" --nbd-listen off --quiet --health-shm "$T/$n.health" "$@" \
    >>"$T/$n.log" 2>&1 &
  NODE_PID=$!
  EXTRA_PIDS+=("$NODE_PID")
  for _ in $(seq 200); do
    [ -S "$T/$n/control.sock" ] && return 0
    kill -0 "$NODE_PID" 2>/dev/null || { cat "$T/$n.log" >&2; fail "node $n exited at start"; }
    sleep 0.05
  done
  fail "node $n did not start"
}
# sanitizer_build: whether $SPD2 is the sanitizer build (scripts/build.sh asan: Debug with ASan
# and UBSan), by its build directory's CMake cache.
sanitizer_build() {
  grep -q '^CMAKE_BUILD_TYPE:STRING=Debug$' "$(dirname "$SPD2")/CMakeCache.txt" 2>/dev/null
}
# json EXPR: EXPR (Python) over the JSON document in $T/out, bound to d; prints the result.
json() { $PY -c "import json,sys; d=json.load(open('$T/out')); print($1)"; }

# Other processes a test started (by pid), killed at exit with spd2 and etcd.
EXTRA_PIDS=()
cleanup() {
  local status=$? p rc f
  # A failed test shows the end of each daemon's log (CI keeps only the test's output).
  if [ "$status" -ne 0 ] && [ "$status" -ne 77 ] && [ -z "${NO_LOG_TAILS:-}" ]; then
    for f in "$T"/*.log; do
      [ -f "$f" ] || continue
      echo "--- the end of $(basename "$f")" >&2
      tail -n 8 "$f" | cut -c1-200 >&2
    done
  fi
  for p in "$SPD_PID" "${ETCD_PID:-}" "${EXTRA_PIDS[@]}"; do
    # A process that already exited needs no kill; the status of the killed one is not news.
    if [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; then
      rc=0
      wait "$p" 2>/dev/null || rc=$?
    fi
  done
  # File systems a test mounted under $T (a tmpfs standing for a full disk) go first.
  for p in $(awk -v t="$T/" 'index($2, t) == 1 {print $2}' /proc/mounts); do umount -l "$p"; done
  [ -n "${KEEP_T:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

# start_spd2 [extra args...]: starts spd2 on $T/data, waits until the socket accepts.
# SPD_METRICS=ADDR turns the metrics endpoint on (default off); SPD_POOL_SIZE=off passes no
# --pool-size (a block device, whose pool is the whole device). SPD_NBD_LISTEN=off serves the
# unix socket only (after a SIGKILL the port can stay taken until io_uring's teardown ends).
start_spd2() {
  local size=()
  [ "${SPD_POOL_SIZE:-2G}" = off ] || size=(--pool-size "${SPD_POOL_SIZE:-2G}")
  "$SPD2" --data-dir "$T/data" "${size[@]}" \
    --nbd-listen "${SPD_NBD_LISTEN:-127.0.0.1:$SPD_PORT}" --metrics-listen "${SPD_METRICS:-off}" \
    --quiet "$@" \
    >>"$T/spd2.log" 2>&1 &
  SPD_PID=$!
  for _ in $(seq 200); do
    if [ -S "$SPD_SOCK" ] && nbdinfo --size "nbd+unix:///?socket=$SPD_SOCK" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$SPD_PID" 2>/dev/null || { cat "$T/spd2.log" >&2; fail "spd2 exited at start"; }
    sleep 0.05
  done
  cat "$T/spd2.log" >&2
  fail "spd2 did not become ready"
}

# stop_spd2: SIGTERM and wait; fails unless spd2 exits 0.
stop_spd2() {
  kill -TERM "$SPD_PID"
  local rc=0
  wait "$SPD_PID" || rc=$?
  SPD_PID=""
  [ "$rc" -eq 0 ] || { cat "$T/spd2.log" >&2; fail "spd2 exited $rc after SIGTERM"; }
}

uri() { echo "nbd+unix:///${1:-vol0}?socket=$SPD_SOCK"; }

# start_etcd: a one-member etcd of the test's own on free loopback ports, data under $T/etcd;
# sets ETCD_PID and ETCD_URL (http://127.0.0.1:PORT), waits until it answers. Stopped by pid
# with stop_etcd or at exit. Started again by start_etcd on the same data and ports.
ETCD_PID=""
ETCD_PORT=${ETCD_PORT:-$((SPD_PORT + 4))}
ETCD_PEER_PORT=$((ETCD_PORT + 1))
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
start_etcd() {
  command -v etcd >/dev/null || fail "etcd is not installed: run scripts/setup.sh"
  mkdir -p "$T/etcd"
  etcd --name t --data-dir "$T/etcd/data" --listen-client-urls "$ETCD_URL" \
    --advertise-client-urls "$ETCD_URL" --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "t=http://127.0.0.1:$ETCD_PEER_PORT" >>"$T/etcd/etcd.log" 2>&1 &
  ETCD_PID=$!
  for _ in $(seq 300); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=1s get x >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$ETCD_PID" 2>/dev/null || { tail -20 "$T/etcd/etcd.log" >&2; fail "etcd exited at start"; }
    sleep 0.1
  done
  tail -20 "$T/etcd/etcd.log" >&2
  fail "etcd did not answer within 30 s"
}
stop_etcd() {
  [ -n "$ETCD_PID" ] || return 0
  local rc=0
  kill -TERM "$ETCD_PID"
  wait "$ETCD_PID" 2>/dev/null || rc=$?
  ETCD_PID=""
}
