#!/usr/bin/env bash
# spd-it: alone (network namespaces and their timing)
# Self-test of the namespace cluster harness (tests/cluster/netns.sh); no spd2. Three nodes and a
# 3-member etcd, a netprobe.py listener in each of the six namespaces. After every partition
# primitive, every ordered pair of the six is probed: TCP (connect + echo, needs both
# directions) and UDP (a datagram the receiver logs, one direction), and each result is compared
# with what that state must give. Then etcd: writable with one member stopped, a new leader after
# the leader stops, a put failing in bounded time without quorum and with every member stopped,
# the data back after a restart. Then the cleanup: no namespace of ours, no process of ours, no
# temp dir left. Every check counts as an assertion; exit 1 if any failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/netns.sh"
PY=/usr/bin/python3
NP=$NETNS_PROBE
PORT=7000
TMO=${PROBE_TIMEOUT:-1}  # TCP check timeout, seconds
IDS=(1 2 3 e1 e2 e3)
ASSERTS=0
FAILS=0
ROUND=0
T0=$(_netns_ms)

elapsed() {
  local ms=$(($(_netns_ms) - T0))
  printf '%d.%01d' $((ms / 1000)) $((ms % 1000 / 100))
}
summary() {
  echo "selftest: $ASSERTS assertions, $FAILS failed, $(elapsed) s"
}
# Set before cluster_net_up: netns.sh chains its cleanup in front of it.
trap summary EXIT

ok() {  # DESCRIPTION: one assertion that held
  ASSERTS=$((ASSERTS + 1))
}
bad() {  # DESCRIPTION: one assertion that failed
  ASSERTS=$((ASSERTS + 1))
  FAILS=$((FAILS + 1))
  echo "FAIL: $*" >&2
}
assert() {  # DESCRIPTION CMD...: CMD succeeds
  local what=$1
  shift
  if "$@"; then ok; else bad "$what"; fi
}
assert_not() {  # DESCRIPTION CMD...: CMD fails
  local what=$1
  shift
  if "$@"; then bad "$what"; else ok; fi
}
assert_eq() {  # DESCRIPTION WANT GOT
  if [ "$2" = "$3" ]; then ok; else bad "$1: want '$2', got '$3'"; fi
}
step() {
  echo "== $(elapsed) s: $*"
}

# around ID: every directed pair between ID and the five others ("A>B" = packets A to B dropped).
around() {
  local t
  for t in "${IDS[@]}"; do
    if [ "$t" != "$1" ]; then echo "$1>$t $t>$1"; fi
  done
}

# probe_all TIMEOUT TOKEN OUTPREFIX: from every ID, the probe of every other ID, all at once;
# "HOST:PORT ok|fail" lines in OUTPREFIX-SRC.out. Only the pairs in the array "only" (SRC>DST)
# when it is not empty.
probe_all() {
  local tmo=$1 tok=$2 out=$3 s t p rc
  local -a pids=() targets
  for s in "${IDS[@]}"; do
    targets=()
    for t in "${IDS[@]}"; do
      [ "$s" != "$t" ] || continue
      if [ ${#only[@]} -gt 0 ] && [ -z "${only[$s>$t]:-}" ]; then continue; fi
      targets+=("$(node_ip "$t"):$PORT")
    done
    [ ${#targets[@]} -gt 0 ] || continue
    nsrun "$s" timeout 20 "$PY" "$NP" probe "$tmo" "$tok" "${targets[@]}" >"$out-$s.out" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    rc=0
    wait "$p" || rc=$?
    assert_eq "probe process $p" 0 "$rc"
  done
}
tcp_result() {  # OUTPREFIX SRC DST: ok, fail or "" (not probed)
  if [ -f "$1-$2.out" ]; then
    awk -v k="$(node_ip "$3"):$PORT" '$1 == k {print $2}' "$1-$2.out"
  fi
}

# expect_net LABEL BLOCKED...: probes all 30 ordered pairs; BLOCKED are the pairs "A>B" whose
# packets must be dropped, all others must pass. TCP from A to B must work iff neither A>B nor
# B>A is blocked; a UDP datagram from A must reach B iff A>B is not blocked. The TCP checks that
# should pass but failed are retried once, all together, with 3 s (a loaded machine); those that
# should fail are not. The retry sends its own datagrams: a pair's UDP passes on either round's.
expect_net() {
  local label=$1 p s t tok got want deadline
  shift
  local -A blk=() only=() retried=()
  for p in "$@"; do blk[$p]=1; done
  ROUND=$((ROUND + 1))
  tok="r$ROUND"
  probe_all "$TMO" "$tok" "$W/$tok"
  for s in "${IDS[@]}"; do
    for t in "${IDS[@]}"; do
      [ "$s" != "$t" ] || continue
      if [ -z "${blk[$s>$t]:-}" ] && [ -z "${blk[$t>$s]:-}" ] && [ "$(tcp_result "$W/$tok" "$s" "$t")" = fail ]; then
        only[$s>$t]=1
      fi
    done
  done
  if [ ${#only[@]} -gt 0 ]; then
    echo "note: $label: retrying tcp ${!only[*]}" >&2
    probe_all 3 "$tok-retry" "$W/$tok-retry"
  fi
  for s in "${IDS[@]}"; do
    for t in "${IDS[@]}"; do
      [ "$s" != "$t" ] || continue
      want=ok
      if [ -n "${blk[$s>$t]:-}" ] || [ -n "${blk[$t>$s]:-}" ]; then want=fail; fi
      got=$(tcp_result "$W/$tok" "$s" "$t")
      if [ -n "${only[$s>$t]:-}" ]; then got=$(tcp_result "$W/$tok-retry" "$s" "$t"); fi
      assert_eq "$label: tcp $s->$t" "$want" "$got"
    done
  done
  # UDP: the probes are done, so any datagram not dropped has been sent at least $TMO s ago when
  # some TCP check had to time out; a delivery that is due gets 3 s more (in all).
  deadline=$(($(_netns_ms) + 3000))
  for s in "${IDS[@]}"; do
    for t in "${IDS[@]}"; do
      [ "$s" != "$t" ] || continue
      want=delivered
      if [ -n "${blk[$s>$t]:-}" ]; then want=dropped; fi
      while :; do
        got=dropped
        if grep -qx "udp $tok $(node_ip "$s")" "$W/listen-$t.log"; then got=delivered; fi
        # The retry's datagrams count too (a link just brought up can drop the first ones), and
        # must be dropped as well where the pair is blocked.
        if [ ${#only[@]} -gt 0 ] && grep -qx "udp $tok-retry $(node_ip "$s")" "$W/listen-$t.log"; then
          got=delivered
        fi
        if [ "$got" = "$want" ] || [ "$want" = dropped ] || [ "$(_netns_ms)" -ge "$deadline" ]; then break; fi
        sleep 0.05
      done
      assert_eq "$label: udp $s->$t" "$want" "$got"
    done
  done
  if [ "$FAILS" -gt 0 ]; then net_rules >&2; fi
}

# put_fails_within SECONDS ID KEY: a put from ID fails, in less than SECONDS.
put_fails_within() {
  local secs=$1 id=$2 key=$3 t rc=0
  t=$(_netns_ms)
  ETCD_COMMAND_TIMEOUT=2s etcdctl_in "$id" put "$key" x >/dev/null 2>&1 || rc=$?
  t=$(($(_netns_ms) - t))
  assert_not "put $key from $id must fail" [ "$rc" -eq 0 ]
  assert "put $key from $id must fail within $secs s (took $t ms)" [ "$t" -lt $((secs * 1000)) ]
}
is_member() {
  [[ $1 =~ ^[123]$ ]]
}
# strays DIR: the processes whose command line names DIR (read without forking: a grep would
# find itself).
strays() {
  local f args=()
  for f in /proc/[0-9]*/cmdline; do
    if ! mapfile -d '' args <"$f" 2>/dev/null; then continue; fi
    if [[ "${args[*]}" == *"$1"* ]]; then echo "${f//[^0-9]/}"; fi
  done
}
get_value() {  # ID KEY: the value, from ID's namespace
  etcdctl_in "$1" get "$2" --print-value-only
}
# eventually SECONDS CMD...: CMD succeeds within SECONDS.
eventually() {
  local deadline=$(($(_netns_ms) + $1 * 1000))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(_netns_ms)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

step "network: 3 nodes, hub $NETNS_PREFIX-hub, 10.$NETNS_SUBNET.0.0/24"
cluster_net_up 3
W="$CLUSTER_DIR/selftest"
mkdir "$W"
step "etcd: 3 members"
etcd_cluster_up
X=$NETNS_SUBNET
assert_eq "ETCD_ENDPOINTS" "http://10.$X.0.201:2379,http://10.$X.0.202:2379,http://10.$X.0.203:2379" "$ETCD_ENDPOINTS"
assert_eq "node_ip 2" "10.$X.0.2" "$(node_ip 2)"
assert_eq "node_ip e3" "10.$X.0.203" "$(node_ip e3)"
assert_not "node_ip 4 (no such node)" node_ip 4 2>/dev/null
assert_not "nsrun e4 (no such member)" nsrun e4 true 2>/dev/null
for id in "${IDS[@]}"; do
  assert_eq "address of $id in its own namespace" "$(node_ip "$id")/24" \
    "$(nsrun "$id" ip -4 -o addr show dev eth0 | awk '{print $4}')"
done

for id in "${IDS[@]}"; do
  nsrun_bg "$id" "$W/listen-$id.log" "$PY" "$NP" listen 0.0.0.0 "$PORT"
done
deadline=$(($(_netns_ms) + 10000))
for id in "${IDS[@]}"; do
  until grep -q '^listening' "$W/listen-$id.log"; do
    if [ "$(_netns_ms)" -ge "$deadline" ]; then
      cat "$W/listen-$id.log" >&2
      bad "probe listener in $id did not start within 10 s"
      exit 1
    fi
    sleep 0.05
  done
done

step "baseline: all pairs reach each other"
expect_net baseline

step "node_isolate 2"
node_isolate 2
expect_net "isolate 2" $(around 2)
step "node_heal 2"
node_heal 2
expect_net "heal 2"

step "node_cut 1 3"
node_cut 1 3
expect_net "cut 1 3" "1>3" "3>1"
step "node_heal 3 (removes the cut)"
node_heal 3
expect_net "heal 3"

step "node_cut_oneway 1 2"
node_cut_oneway 1 2
expect_net "oneway 1 2" "1>2"
step "node_heal 1, node_cut_oneway 2 1"
node_heal 1
node_cut_oneway 2 1
expect_net "oneway 2 1" "2>1"
step "node_uncut 1 2"
node_uncut 1 2
expect_net "uncut 1 2"

step "node_cut_etcd 3"
node_cut_etcd 3
expect_net "cut_etcd 3" 3\>e{1,2,3} e{1,2,3}\>3
put_fails_within 6 3 cutkey
assert "put from node 1 while node 3 is cut from etcd" etcdctl_in 1 put cutkey during-cut >/dev/null
step "node_heal 3"
node_heal 3
expect_net "heal etcd 3"
assert_eq "node 3 reads what node 1 wrote during its cut" during-cut "$(get_value 3 cutkey)"

step "link_down 1"
link_down 1
expect_net "link_down 1" $(around 1)
step "link_up 1"
link_up 1
expect_net "link_up 1"

step "combined: isolate e1, cut 2 3, oneway 3 1, link_down 2"
node_isolate e1
node_cut 2 3
node_cut_oneway 3 1
link_down 2
expect_net "combined" $(around e1) "2>3" "3>2" "3>1" $(around 2)
assert "etcd writable from node 1 with e1 isolated" eventually 15 etcdctl_in 1 put isokey v
step "net_heal_all"
net_heal_all
expect_net "heal_all"
step "etcd healthy again (e1 rejoined)"
etcd_wait_healthy
assert_eq "e1 caught up (serializable read on e1 itself)" v \
  "$(nsrun e1 etcdctl --endpoints "http://$(node_ip e1):2379" get isokey --consistency=s --print-value-only)"

step "etcd: stop the leader"
assert "put k1 from node 1" etcdctl_in 1 put k1 v1 >/dev/null
L=$(etcd_leader)
assert "leader is 1..3 (got '$L')" is_member "$L"
etcd_member_stop "$L"
L2=$(etcd_leader)
assert "a new leader after stopping leader $L (got '$L2')" [ "$L2" != "$L" ]
assert "put k2 from node 2 with member $L stopped" etcdctl_in 2 put k2 v2 >/dev/null
assert_eq "get k2 from node 3 with member $L stopped" v2 "$(get_value 3 k2)"

step "etcd: stop a second member ($L2): no quorum"
etcd_member_stop "$L2"
put_fails_within 8 3 k3
step "etcd: all members stopped"
etcd_all_stop
put_fails_within 8 1 k4
assert_not "etcd_member_stop of a stopped member fails" etcd_member_stop 1 2>/dev/null

step "etcd: restart all, data back"
etcd_all_start
assert_eq "get k1 after restart" v1 "$(get_value 3 k1)"
assert_eq "get k2 after restart" v2 "$(get_value 1 k2)"
assert_eq "member $L (stopped at the write of k2) has k2 itself" v2 \
  "$(nsrun "e$L" etcdctl --endpoints "http://$(node_ip "e$L"):2379" get k2 --consistency=s --print-value-only)"
# k3's put timed out, which is no failure in raft: the member left may have logged it and commit
# it once a quorum is back. k4's never reached any member.
assert_eq "k4 was never written" "" "$(get_value 2 k4)"
L3=$(etcd_leader)
assert "a leader after the restart (got '$L3')" is_member "$L3"

step "cleanup"
dir=$CLUSTER_DIR
mapfile -t procs < <(awk '{print $1}' "$dir/pids")
assert "pids were tracked (${#procs[@]}: 6 listeners, 3 etcd + restarts)" [ "${#procs[@]}" -ge 9 ]
assert "cluster_net_down" cluster_net_down
assert_eq "namespaces with prefix $NETNS_PREFIX" "" "$(ip netns list | awk -v p="$NETNS_PREFIX-" 'index($1, p) == 1')"
for e in "${procs[@]}"; do
  assert_not "process ${e%%:*} still running" _netns_pid_live "${e%%:*}" "${e#*:}"
done
assert_eq "processes naming $dir" "" "$(strays "$dir")"
assert_not "temp dir $dir left" [ -e "$dir" ]
assert "cluster_net_down again is a no-op" cluster_net_down

[ "$FAILS" -eq 0 ]
