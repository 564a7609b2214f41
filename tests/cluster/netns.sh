# Cluster test harness on one machine (sourced): every node a Linux network namespace on a bridge,
# a 3-member etcd with each member in a namespace of its own, and network faults injected with
# nftables. See tests/cluster/README.md. Needs root, iproute2, nftables, etcd-server/etcd-client.
#
# Identifiers (ID): a node is its number K (1..N, namespace PREFIX-nK, address 10.X.0.K); an etcd
# member is eK (e1..e3, namespace PREFIX-eK, address 10.X.0.(200+K)). Every partition primitive
# takes either kind.
#
#   cluster_net_up N           hub namespace PREFIX-hub (bridge br0, nftables table) and N nodes;
#                              sets the EXIT trap (chained with the one already set)
#   cluster_net_down           stops every process of ours (by pid), deletes our namespaces and
#                              the temp dir; idempotent
#   nsrun ID CMD...            runs CMD in ID's namespace (foreground)
#   nsrun_bg ID LOG CMD...     starts CMD in ID's namespace in the background, output appended to
#                              LOG; tracked by pid (stopped by cluster_net_down); pid in NSRUN_PID
#   node_ip ID                 prints ID's address
#   etcd_cluster_up            3 members e1..e3, waits until healthy; exports ETCD_ENDPOINTS
#   etcd_member_stop K [SIG]   stops member K (SIGTERM by default, KILL after a bounded wait)
#   etcd_member_start K [nowait]  starts member K on its data dir (it rejoins); waits for it to be
#                              healthy unless "nowait"
#   etcd_all_stop / etcd_all_start   every member (start waits for the whole cluster)
#   etcd_wait_healthy [K...]   until each running member (or each K) answers a quorum read
#   etcd_leader                prints K of the leader a majority of running members agrees on
#   etcdctl_in ID ARGS...      etcdctl from ID's namespace against ETCD_ENDPOINTS (bounded)
#   node_isolate ID / node_heal ID       ID reaches nobody / every block involving ID removed
#   node_cut A B / node_uncut A B        A and B cannot talk (both directions) / can again
#   node_cut_oneway A B        packets from A to B dropped; B to A pass
#   node_cut_etcd ID           ID cannot reach any etcd member (other nodes still can)
#   link_down ID / link_up ID  the hub side of ID's veth down / up (the node sees no carrier)
#   net_heal_all               every block removed and every link up
#   net_rules                  prints the hub's nftables rules (for logs)
#
# Partitions are IPv4 drop rules in an nftables *bridge* family table in the hub namespace
# (hook forward: frames bridged between two ports), matched on source and destination address.
# No br_netfilter, no conntrack: stateless, so a heal takes effect on the next packet. ARP is
# never dropped (a cut node still resolves its peers; the IP packets are what is dropped).
# IPv6 is disabled in every namespace, so IPv4 is the only traffic.
#
# Settings (environment, read when sourced): NETNS_PREFIX (default spn<pid of the shell>, at most
# 10 characters [a-z0-9]), NETNS_SUBNET (X in 10.X.0.0/24, default 213: every namespace set is a
# network of its own, so two runs with the same X do not clash either), NETNS_KEEP=1 keeps the
# temp dir (logs, etcd data) at cluster_net_down, ETCD_HEARTBEAT_MS (100), ETCD_ELECTION_MS
# (1000), ETCD_WAIT_S (30: bound of every etcd wait), NETNS_STOP_S (10: TERM to KILL).
# NETNS_PROBE is the path of netprobe.py (a TCP/UDP probe to run in the namespaces).
#
# Every function returns non-zero with a message on stderr when it fails; every wait is bounded.
# A stale run (killed with SIGKILL) is cleaned by: NETNS_PREFIX=its-prefix; source netns.sh;
# cluster_net_down.

NETNS_PREFIX=${NETNS_PREFIX:-spn$$}
NETNS_SUBNET=${NETNS_SUBNET:-213}
NETNS_STOP_S=${NETNS_STOP_S:-10}
ETCD_HEARTBEAT_MS=${ETCD_HEARTBEAT_MS:-100}
ETCD_ELECTION_MS=${ETCD_ELECTION_MS:-1000}
ETCD_WAIT_S=${ETCD_WAIT_S:-30}
ETCD_N=3
ETCD_ENDPOINTS=${ETCD_ENDPOINTS:-}
NETNS_PROBE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/netprobe.py"
CLUSTER_N=0
CLUSTER_DIR=""
NSRUN_PID=""
_NETNS_HUB="$NETNS_PREFIX-hub"
_NETNS_TABLE="bridge spnet"
_NETNS_TRAP_SET=""
_NETNS_PREV_EXIT=""
_NETNS_EXITING=""

_netns_err() {
  echo "netns: $*" >&2
}

if ! [[ $NETNS_PREFIX =~ ^[a-z][a-z0-9]{0,9}$ ]]; then
  _netns_err "NETNS_PREFIX '$NETNS_PREFIX': want 1-10 characters [a-z0-9], a letter first"
  return 1
fi
if ! [[ $NETNS_SUBNET =~ ^[0-9]+$ ]] || [ "$NETNS_SUBNET" -lt 1 ] || [ "$NETNS_SUBNET" -gt 254 ]; then
  _netns_err "NETNS_SUBNET '$NETNS_SUBNET': want 1..254 (10.X.0.0/24)"
  return 1
fi

# Milliseconds since the epoch (for deadlines: a loop counted in sleeps runs long under load).
_netns_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

# _netns_id_ok ID: ID is a node of the cluster (1..N) or an etcd member (e1..e3).
_netns_id_ok() {
  local id=$1
  if [[ $id =~ ^[1-9][0-9]*$ ]] && [ "$id" -le "$CLUSTER_N" ]; then
    return 0
  fi
  if [[ $id =~ ^e([1-9])$ ]] && [ "${BASH_REMATCH[1]}" -le "$ETCD_N" ]; then
    return 0
  fi
  _netns_err "'$id' is no node (1..$CLUSTER_N) and no etcd member (e1..e$ETCD_N)"
  return 1
}

# _netns_ns ID: the namespace of ID. _netns_port ID: ID's veth in the hub namespace.
_netns_ns() {
  if [[ $1 =~ ^e ]]; then echo "$NETNS_PREFIX-$1"; else echo "$NETNS_PREFIX-n$1"; fi
}
_netns_port() {
  if [[ $1 =~ ^e ]]; then echo "$1"; else echo "n$1"; fi
}

node_ip() {
  _netns_id_ok "$1" || return 1
  if [[ $1 =~ ^e([1-9])$ ]]; then
    echo "10.$NETNS_SUBNET.0.$((200 + BASH_REMATCH[1]))"
  else
    echo "10.$NETNS_SUBNET.0.$1"
  fi
}

# _netns_ids: every ID whose namespace exists (nodes, then etcd members).
_netns_ids() {
  local k
  for ((k = 1; k <= CLUSTER_N; k++)); do echo "$k"; done
  for ((k = 1; k <= ETCD_N; k++)); do
    if [ -e "/run/netns/$NETNS_PREFIX-e$k" ]; then echo "e$k"; fi
  done
}

# _netns_list: our namespaces (the hub last).
_netns_list() {
  local n
  for n in $(ip netns list | awk '{print $1}'); do
    if [[ $n =~ ^$NETNS_PREFIX-(n[0-9]+|e[0-9]+)$ ]]; then echo "$n"; fi
  done
  if [ -e "/run/netns/$_NETNS_HUB" ]; then echo "$_NETNS_HUB"; fi
}

nsrun() {
  _netns_id_ok "$1" || return 1
  local ns
  ns=$(_netns_ns "$1")
  shift
  ip netns exec "$ns" "$@"
}

# --- processes, by pid and start time (a pid alone could be reused by someone else's process) ---

# _netns_pid_start PID: the process's start time (field 22 of /proc/PID/stat).
_netns_pid_start() {
  local stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  set -- $rest
  echo "${20}"
}

# _netns_pid_gone PID: no such process, or a zombie.
_netns_pid_gone() {
  local stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  rest=${stat##*) }
  set -- $rest
  [ "$1" = Z ]
}

# _netns_pid_live PID START: that very process exists and is no zombie.
_netns_pid_live() {
  local want=$2 stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  rest=${stat##*) }
  set -- $rest
  [ "${20}" = "$want" ] && [ "$1" != Z ]
}

nsrun_bg() {
  if [ $# -lt 3 ]; then
    _netns_err "usage: nsrun_bg ID LOG CMD..."
    return 1
  fi
  _netns_id_ok "$1" || return 1
  if [ -z "$CLUSTER_DIR" ]; then
    _netns_err "nsrun_bg: the cluster network is not up"
    return 1
  fi
  local id=$1 log=$2 ns start
  shift 2
  ns=$(_netns_ns "$id")
  # ip netns exec execs the command: $! is the command's own pid.
  ip netns exec "$ns" "$@" >>"$log" 2>&1 &
  NSRUN_PID=$!
  if start=$(_netns_pid_start "$NSRUN_PID"); then
    echo "$NSRUN_PID:$start $id" >>"$CLUSTER_DIR/pids"
  fi
}

# _netns_stop SECONDS PID:START...: SIGTERM (or $NETNS_SIG), then SIGKILL to whatever is left
# after SECONDS; fails if anything survives the KILL by 5 s.
_netns_stop() {
  local secs=$1 sig=${NETNS_SIG:-TERM} e pid start st deadline left
  shift
  for e in "$@"; do
    pid=${e%%:*} start=${e#*:}
    if _netns_pid_live "$pid" "$start"; then
      if ! kill "-$sig" "$pid" 2>/dev/null; then
        continue  # exited meanwhile
      fi
    fi
  done
  for sig in KILL none; do
    deadline=$(($(_netns_ms) + secs * 1000))
    while :; do
      left=()
      for e in "$@"; do
        pid=${e%%:*} start=${e#*:}
        if _netns_pid_live "$pid" "$start"; then left+=("$e"); fi
      done
      [ ${#left[@]} -gt 0 ] || break
      [ "$(_netns_ms)" -lt "$deadline" ] || break
      sleep 0.05
    done
    # Reap the ended ones that were children of this shell (wait answers 127 at once for the
    # others; a pid that runs again, someone else's now, is left alone); the status of a stopped
    # process is no news.
    for e in "$@"; do
      pid=${e%%:*}
      if ! _netns_pid_gone "$pid"; then continue; fi
      st=0
      wait "$pid" 2>/dev/null || st=$?
    done
    [ ${#left[@]} -gt 0 ] || return 0
    if [ "$sig" = none ]; then
      _netns_err "processes survived SIGKILL: ${left[*]%%:*}"
      return 1
    fi
    _netns_err "sending SIGKILL to ${left[*]%%:*} (still running ${secs} s after the signal)"
    for e in "${left[@]}"; do
      pid=${e%%:*}
      if ! kill -KILL "$pid" 2>/dev/null; then
        continue
      fi
    done
    secs=5
  done
}

# --- the network -------------------------------------------------------------------------------

# _netns_attach ID: ID's namespace, its veth into the hub's bridge, its address, loopback up.
_netns_attach() {
  local id=$1 ns port ip
  ns=$(_netns_ns "$id") port=$(_netns_port "$id") ip=$(node_ip "$id") || return 1
  ip netns add "$ns" || { _netns_err "cannot create namespace $ns"; return 1; }
  ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1 >/dev/null || { _netns_err "$ns: cannot disable IPv6"; return 1; }
  ip -n "$_NETNS_HUB" link add "$port" type veth peer name eth0 netns "$ns" &&
    ip -n "$_NETNS_HUB" link set "$port" master br0 up &&
    ip -n "$ns" addr add "$ip/24" dev eth0 &&
    ip -n "$ns" link set eth0 up &&
    ip -n "$ns" link set lo up || { _netns_err "cannot wire $ns to the hub"; return 1; }
}

_netns_install_trap() {
  [ -z "$_NETNS_TRAP_SET" ] || return 0
  local prev sig
  prev=$(trap -p EXIT)
  if [ -n "$prev" ]; then
    eval "set -- $prev"
    _NETNS_PREV_EXIT=$3
  fi
  trap _netns_on_exit EXIT
  # A signal ends the shell through exit, so that the EXIT trap runs (unless the caller handles
  # that signal already). Once exiting, further signals are ignored: timeout(1) sends its
  # SIGTERM twice (to the child, then to the group), and the second must not cut the cleanup.
  for sig in INT:130 TERM:143 HUP:129; do
    if [ -z "$(trap -p "${sig%%:*}")" ]; then
      trap "_netns_on_signal ${sig#*:}" "${sig%%:*}"
    fi
  done
  _NETNS_TRAP_SET=1
}

_netns_on_signal() {
  if [ -z "$_NETNS_EXITING" ]; then exit "$1"; fi
}

# The EXIT trap: cluster_net_down, then the EXIT trap there was before; a failed cleanup makes a
# passing run fail.
_netns_on_exit() {
  local rc=$?
  _NETNS_EXITING=1
  if [ -n "$CLUSTER_DIR" ] || [ -n "$(_netns_list)" ]; then
    if ! cluster_net_down; then
      _netns_err "cleanup at exit failed"
      [ "$rc" -ne 0 ] || rc=1
    fi
  fi
  if [ -n "$_NETNS_PREV_EXIT" ]; then
    eval "$_NETNS_PREV_EXIT"
  fi
  exit "$rc"
}

cluster_net_up() {
  local n=${1:-} k
  if ! [[ $n =~ ^[1-9][0-9]?$ ]]; then
    _netns_err "usage: cluster_net_up N (1..99 nodes)"
    return 1
  fi
  if [ -n "$CLUSTER_DIR" ]; then
    _netns_err "cluster network $NETNS_PREFIX is up already"
    return 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _netns_err "network namespaces need root"
    return 1
  fi
  for k in ip nft sysctl /usr/bin/python3; do
    command -v "$k" >/dev/null || { _netns_err "$k not found (scripts/setup.sh installs it)"; return 1; }
  done
  if [ -n "$(_netns_list)" ]; then
    _netns_err "namespaces of prefix $NETNS_PREFIX exist already: $(_netns_list | tr '\n' ' ')"
    return 1
  fi
  _netns_install_trap
  CLUSTER_DIR=$(mktemp -d "/tmp/netns-$NETNS_PREFIX.XXXXXX") || { _netns_err "mktemp failed"; return 1; }
  : >"$CLUSTER_DIR/pids"
  : >"$CLUSTER_DIR/blocks"
  if ! ip netns add "$_NETNS_HUB" ||
    ! ip netns exec "$_NETNS_HUB" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 \
      net.ipv6.conf.default.disable_ipv6=1 >/dev/null ||
    ! ip -n "$_NETNS_HUB" link add br0 type bridge ||
    ! ip -n "$_NETNS_HUB" link set br0 up; then
    _netns_err "cannot create the hub namespace $_NETNS_HUB and its bridge"
    cluster_net_down
    return 1
  fi
  if ! ip netns exec "$_NETNS_HUB" nft -f - <<EOF; then
table $_NETNS_TABLE {
  chain partition {
    type filter hook forward priority 0; policy accept;
  }
}
EOF
    _netns_err "cannot create the nftables bridge table in $_NETNS_HUB"
    cluster_net_down
    return 1
  fi
  CLUSTER_N=$n
  for ((k = 1; k <= n; k++)); do
    if ! _netns_attach "$k"; then
      cluster_net_down
      return 1
    fi
  done
}

cluster_net_down() {
  local rc=0 ns ino p start entries=() nss
  if [ -n "$CLUSTER_DIR" ] && [ -d "$CLUSTER_DIR/etcd" ] && ! etcd_all_stop; then
    rc=1
  fi
  nss=$(_netns_list)
  if [ -n "$CLUSTER_DIR" ] && [ -f "$CLUSTER_DIR/pids" ]; then
    while read -r p _; do entries+=("$p"); done <"$CLUSTER_DIR/pids"
  fi
  # And whatever else runs in our namespaces (children of ours, commands run with nsrun ... &).
  for ns in $nss; do
    ino=$(stat -L -c %i "/run/netns/$ns") || continue
    for p in $(ip netns pids "$ns"); do
      if [ "$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null)" = "$ino" ] && start=$(_netns_pid_start "$p"); then
        entries+=("$p:$start")
      fi
    done
  done
  if [ ${#entries[@]} -gt 0 ] && ! _netns_stop "$NETNS_STOP_S" "${entries[@]}"; then
    rc=1
  fi
  for ns in $nss; do
    if ! ip netns del "$ns"; then
      _netns_err "cannot delete namespace $ns"
      rc=1
    fi
  done
  if [ -n "$(_netns_list)" ]; then
    _netns_err "namespaces left: $(_netns_list | tr '\n' ' ')"
    rc=1
  fi
  if [ -n "$CLUSTER_DIR" ]; then
    if [ -n "${NETNS_KEEP:-}" ]; then
      echo "netns: kept $CLUSTER_DIR" >&2
    elif ! rm -rf "$CLUSTER_DIR"; then
      _netns_err "cannot remove $CLUSTER_DIR"
      rc=1
    fi
  fi
  CLUSTER_DIR=""
  CLUSTER_N=0
  ETCD_ENDPOINTS=""
  return $rc
}

# --- partitions --------------------------------------------------------------------------------
# $CLUSTER_DIR/blocks holds the directed drops, "SRC DST" per line ("*" for any address); every
# change rewrites the hub's chain from it in one nft transaction.

_netns_apply() {
  local s d rule script
  script="flush chain $_NETNS_TABLE partition"$'\n'
  while read -r s d; do
    rule="add rule $_NETNS_TABLE partition"
    if [ "$s" != '*' ]; then rule+=" ip saddr $(node_ip "$s")"; fi
    if [ "$d" != '*' ]; then rule+=" ip daddr $(node_ip "$d")"; fi
    script+="$rule counter drop"$'\n'
  done <"$CLUSTER_DIR/blocks"
  if ! ip netns exec "$_NETNS_HUB" nft -f - <<<"$script"; then
    _netns_err "nft failed on: $script"
    return 1
  fi
}

_netns_need_up() {
  if [ -z "$CLUSTER_DIR" ]; then
    _netns_err "the cluster network is not up"
    return 1
  fi
}

# _netns_block SRC DST...: adds the directed drops (pairs of arguments), then applies.
_netns_block() {
  while [ $# -ge 2 ]; do
    if ! grep -qxF "$1 $2" "$CLUSTER_DIR/blocks"; then
      echo "$1 $2" >>"$CLUSTER_DIR/blocks"
    fi
    shift 2
  done
  _netns_apply
}

# _netns_unblock AWK-CONDITION A B: removes the lines the condition selects, then applies.
_netns_unblock() {
  awk -v a="$2" -v b="$3" "!($1)" "$CLUSTER_DIR/blocks" >"$CLUSTER_DIR/blocks.new" &&
    mv "$CLUSTER_DIR/blocks.new" "$CLUSTER_DIR/blocks" || { _netns_err "cannot rewrite the blocks"; return 1; }
  _netns_apply
}

node_isolate() {
  _netns_need_up && _netns_id_ok "${1:-}" || return 1
  _netns_block "$1" '*' '*' "$1"
}

# node_heal ID: every block involving ID goes (isolation, cuts, one-way cuts, etcd cut); links
# stay as they are.
node_heal() {
  _netns_need_up && _netns_id_ok "${1:-}" || return 1
  _netns_unblock '$1 == a || $2 == a' "$1" ""
}

node_cut() {
  _netns_need_up && _netns_id_ok "${1:-}" && _netns_id_ok "${2:-}" || return 1
  if [ "$1" = "$2" ]; then _netns_err "node_cut: $1 twice"; return 1; fi
  _netns_block "$1" "$2" "$2" "$1"
}

# node_uncut A B: the blocks between A and B go, either direction.
node_uncut() {
  _netns_need_up && _netns_id_ok "${1:-}" && _netns_id_ok "${2:-}" || return 1
  _netns_unblock '($1 == a && $2 == b) || ($1 == b && $2 == a)' "$1" "$2"
}

node_cut_oneway() {
  _netns_need_up && _netns_id_ok "${1:-}" && _netns_id_ok "${2:-}" || return 1
  if [ "$1" = "$2" ]; then _netns_err "node_cut_oneway: $1 twice"; return 1; fi
  _netns_block "$1" "$2"
}

node_cut_etcd() {
  _netns_need_up && _netns_id_ok "${1:-}" || return 1
  local k pairs=()
  for ((k = 1; k <= ETCD_N; k++)); do
    if [ "$1" != "e$k" ]; then pairs+=("$1" "e$k" "e$k" "$1"); fi
  done
  _netns_block "${pairs[@]}"
}

link_down() {
  _netns_need_up && _netns_id_ok "${1:-}" || return 1
  ip -n "$_NETNS_HUB" link set "$(_netns_port "$1")" down || { _netns_err "link_down $1 failed"; return 1; }
}

# link_up ID: up, and waits (5 s at most) until ID's side has its carrier back.
link_up() {
  _netns_need_up && _netns_id_ok "${1:-}" || return 1
  local ns deadline
  ns=$(_netns_ns "$1")
  ip -n "$_NETNS_HUB" link set "$(_netns_port "$1")" up || { _netns_err "link_up $1 failed"; return 1; }
  deadline=$(($(_netns_ms) + 5000))
  until ip -n "$ns" -o link show eth0 | grep -q 'state UP'; do
    if [ "$(_netns_ms)" -ge "$deadline" ]; then
      _netns_err "link_up $1: eth0 in $ns has no carrier after 5 s"
      return 1
    fi
    sleep 0.02
  done
}

net_heal_all() {
  _netns_need_up || return 1
  local id
  : >"$CLUSTER_DIR/blocks"
  _netns_apply || return 1
  for id in $(_netns_ids); do
    link_up "$id" || return 1
  done
}

net_rules() {
  _netns_need_up || return 1
  ip netns exec "$_NETNS_HUB" nft list chain $_NETNS_TABLE partition
}

# --- etcd --------------------------------------------------------------------------------------

_etcd_k_ok() {
  if ! [[ ${1:-} =~ ^[1-9]$ ]] || [ "$1" -gt "$ETCD_N" ]; then
    _netns_err "etcd member '${1:-}': want 1..$ETCD_N"
    return 1
  fi
  if [ ! -d "$CLUSTER_DIR/etcd" ]; then
    _netns_err "etcd is not up (etcd_cluster_up)"
    return 1
  fi
}

_etcd_url() {
  echo "http://$(node_ip "e$1"):$2"
}

# _etcd_running K: member K's process runs (its "PID:START" in $CLUSTER_DIR/etcd/eK.pid).
_etcd_running() {
  local f="$CLUSTER_DIR/etcd/e$1.pid" e
  [ -f "$f" ] || return 1
  e=$(cat "$f")
  _netns_pid_live "${e%%:*}" "${e#*:}"
}

# etcdctl_in ID ARGS...: etcdctl in ID's namespace against ETCD_ENDPOINTS. ETCD_DIAL_TIMEOUT
# (default 1s) and ETCD_COMMAND_TIMEOUT (default 3s) bound it; a hard bound of 20 s on top.
etcdctl_in() {
  _netns_id_ok "${1:-}" || return 1
  local ns
  ns=$(_netns_ns "$1")
  shift
  ETCDCTL_API=3 timeout 20 ip netns exec "$ns" etcdctl --endpoints="$ETCD_ENDPOINTS" \
    --dial-timeout="${ETCD_DIAL_TIMEOUT:-1s}" --command-timeout="${ETCD_COMMAND_TIMEOUT:-3s}" "$@"
}

# _etcd_local K ARGS...: etcdctl in member K's own namespace against K alone (local traffic: no
# partition applies).
_etcd_local() {
  local k=$1
  shift
  ETCDCTL_API=3 timeout 10 ip netns exec "$NETNS_PREFIX-e$k" etcdctl --endpoints="$(_etcd_url "$k" 2379)" \
    --dial-timeout=1s --command-timeout=2s "$@"
}

etcd_member_start() {
  _etcd_k_ok "${1:-}" || return 1
  local k=$1 mode=${2:-wait} cluster="" j
  if _etcd_running "$k"; then
    _netns_err "etcd member $k runs already"
    return 1
  fi
  for ((j = 1; j <= ETCD_N; j++)); do
    cluster+="${cluster:+,}e$j=$(_etcd_url "$j" 2380)"
  done
  # --initial-cluster-state new only matters the first time: a restart reads the data dir.
  nsrun_bg "e$k" "$CLUSTER_DIR/etcd/e$k.log" etcd --name "e$k" --data-dir "$CLUSTER_DIR/etcd/e$k" \
    --listen-client-urls "$(_etcd_url "$k" 2379),http://127.0.0.1:2379" \
    --advertise-client-urls "$(_etcd_url "$k" 2379)" \
    --listen-peer-urls "$(_etcd_url "$k" 2380)" --initial-advertise-peer-urls "$(_etcd_url "$k" 2380)" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$NETNS_PREFIX" \
    --heartbeat-interval "$ETCD_HEARTBEAT_MS" --election-timeout "$ETCD_ELECTION_MS" \
    --logger zap --log-outputs stderr || return 1
  local start
  if ! start=$(_netns_pid_start "$NSRUN_PID"); then
    tail -20 "$CLUSTER_DIR/etcd/e$k.log" >&2
    _netns_err "etcd member $k exited at start"
    return 1
  fi
  echo "$NSRUN_PID:$start" >"$CLUSTER_DIR/etcd/e$k.pid"
  if [ "$mode" = nowait ]; then return 0; fi
  etcd_wait_healthy "$k"
}

# etcd_wait_healthy [K...]: each member K (default: each running member) answers
# "endpoint health" (a quorum read through K) from its own namespace, within ETCD_WAIT_S.
etcd_wait_healthy() {
  [ -d "$CLUSTER_DIR/etcd" ] || { _netns_err "etcd is not up"; return 1; }
  local ks=("$@") k deadline
  if [ ${#ks[@]} -eq 0 ]; then
    for ((k = 1; k <= ETCD_N; k++)); do
      if _etcd_running "$k"; then ks+=("$k"); fi
    done
  fi
  deadline=$(($(_netns_ms) + ETCD_WAIT_S * 1000))
  for k in "${ks[@]}"; do
    until _etcd_local "$k" endpoint health >/dev/null 2>&1; do
      if ! _etcd_running "$k"; then
        tail -20 "$CLUSTER_DIR/etcd/e$k.log" >&2
        _netns_err "etcd member $k is not running"
        return 1
      fi
      if [ "$(_netns_ms)" -ge "$deadline" ]; then
        tail -20 "$CLUSTER_DIR/etcd/e$k.log" >&2
        _netns_err "etcd member $k not healthy within $ETCD_WAIT_S s"
        return 1
      fi
      sleep 0.1
    done
  done
}

etcd_cluster_up() {
  _netns_need_up || return 1
  if [ -d "$CLUSTER_DIR/etcd" ]; then
    _netns_err "etcd is up already"
    return 1
  fi
  local k
  for k in etcd etcdctl; do
    command -v "$k" >/dev/null || { _netns_err "$k not found: apt-get install etcd-server etcd-client (scripts/setup.sh)"; return 1; }
  done
  mkdir "$CLUSTER_DIR/etcd" || return 1
  ETCD_ENDPOINTS=""
  for ((k = 1; k <= ETCD_N; k++)); do
    _netns_attach "e$k" || return 1
    ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}$(_etcd_url "$k" 2379)"
  done
  export ETCD_ENDPOINTS
  for ((k = 1; k <= ETCD_N; k++)); do
    etcd_member_start "$k" nowait || return 1
  done
  etcd_wait_healthy
}

# _etcd_stop K [SIGNAL]: stops member K if it runs (one that is gone already is no error).
_etcd_stop() {
  local f="$CLUSTER_DIR/etcd/e$1.pid"
  [ -f "$f" ] || return 0
  NETNS_SIG=${2:-TERM} _netns_stop "$NETNS_STOP_S" "$(cat "$f")" || return 1
  rm -f "$f"
}

etcd_member_stop() {
  _etcd_k_ok "${1:-}" || return 1
  if ! _etcd_running "$1"; then
    _netns_err "etcd member $1 is not running"
    return 1
  fi
  _etcd_stop "$1" "${2:-TERM}"
}

# etcd_all_stop: one member after the other. (SIGTERM to all at once costs 7 s: the leader tries
# to hand its leadership to a peer that is stopping too, for 5 s + 2 election timeouts. One by
# one, each leader hands over at once, and the last one has no peer left to try.)
etcd_all_stop() {
  [ -d "$CLUSTER_DIR/etcd" ] || { _netns_err "etcd is not up"; return 1; }
  local k
  for ((k = 1; k <= ETCD_N; k++)); do
    _etcd_stop "$k" || return 1
  done
}

etcd_all_start() {
  [ -d "$CLUSTER_DIR/etcd" ] || { _netns_err "etcd is not up"; return 1; }
  local k
  for ((k = 1; k <= ETCD_N; k++)); do
    if ! _etcd_running "$k"; then etcd_member_start "$k" nowait || return 1; fi
  done
  etcd_wait_healthy
}

# etcd_wipe: every member stopped, its data directory removed, and started again: a new, empty
# etcd (revisions from 1) in the old one's place, as after the loss of every member's disk.
etcd_wipe() {
  etcd_all_stop || return 1
  local k
  for ((k = 1; k <= ETCD_N; k++)); do
    rm -rf "${CLUSTER_DIR:?}/etcd/e$k" || return 1
  done
  etcd_all_start
}

# etcd_leader: K of the member that a majority of the cluster (running members asked in their own
# namespaces) reports as leader, and that says so itself; waits ETCD_WAIT_S for one.
etcd_leader() {
  [ -d "$CLUSTER_DIR/etcd" ] || { _netns_err "etcd is not up"; return 1; }
  local k j deadline out votes quorum=$((ETCD_N / 2 + 1))
  local -A id=() leader=()
  deadline=$(($(_netns_ms) + ETCD_WAIT_S * 1000))
  while :; do
    id=() leader=()
    for ((k = 1; k <= ETCD_N; k++)); do
      _etcd_running "$k" || continue
      if out=$(_etcd_local "$k" endpoint status -w json 2>/dev/null); then
        if [[ $out =~ \"member_id\":([0-9]+) ]]; then id[$k]=${BASH_REMATCH[1]}; fi
        if [[ $out =~ \"leader\":([0-9]+) ]]; then leader[$k]=${BASH_REMATCH[1]}; fi
      fi
    done
    for k in "${!id[@]}"; do
      [ "${leader[$k]:-}" = "${id[$k]}" ] || continue
      votes=0
      for j in "${!leader[@]}"; do
        if [ "${leader[$j]}" = "${id[$k]}" ]; then votes=$((votes + 1)); fi
      done
      if [ "$votes" -ge "$quorum" ]; then
        echo "$k"
        return 0
      fi
    done
    if [ "$(_netns_ms)" -ge "$deadline" ]; then
      _netns_err "no etcd leader agreed on by $quorum members within $ETCD_WAIT_S s"
      return 1
    fi
    sleep 0.1
  done
}
