#!/usr/bin/env bash
# Who may make the replication and cluster calls on a cluster node (docs/control.md, "Who may
# call"): two spd2 nodes and a real etcd; every role (viewer, tenant, operator, admin, a uid with
# none) as a real local user runs spdctl's node list, replica list (all, its own volume, another
# tenant's), replica promote and volume create --replicas 2 on node a. A tenant lists only its
# own tenant's replicated volumes (another's: NOT_FOUND), and a replicated volume it creates is
# its tenant's; only an admin promotes. (test_control_roles.py runs the same calls on a node
# without --cluster, where they are FAILED_PRECONDITION for whoever may make them.)
. "$(dirname "$0")/../integration/lib.sh"
chmod 0755 "$T"
start_etcd
declare -A PID DIR
start_node() {  # NAME [ARGS...]
  local n=$1
  shift
  DIR[$n]="$T/$n"
  start_cluster_node "$n" --pool-size 256M --metrics-listen off --cluster "$ETCD_URL" \
    --node-name "$n" --cluster-lease-ttl 3 --replication-listen 127.0.0.1:0 "$@"
  PID[$n]=$NODE_PID
}
start_node a --control-socket-mode 0666
start_node b
chmod 0711 "${DIR[a]}"
export SPD_CONTROL_SOCKET="${DIR[a]}/control.sock"
for _ in $(seq 150); do
  "$SPDCTL" node list -o json >"$T/out" 2>/dev/null && [ "$(json 'len(d["items"])')" = 2 ] && break
  sleep 0.1
done
[ "$(json 'len(d["items"])')" = 2 ] || fail "two nodes did not register: $(cat "$T/out")"

ORDER=(viewer tenant operator admin none)
declare -A UID_OF=([viewer]=2201 [tenant]=2202 [operator]=2203 [admin]=2204 [none]=2205)
expect 0 tenant put acme
expect 0 tenant put beta
for r in viewer tenant operator admin; do
  t=()
  [ "$r" = tenant ] && t=(--tenant acme)
  expect 0 access set "${UID_OF[$r]}" --role "$r" "${t[@]}"
done
# Another tenant's replicated volume (beta's), and the tenant's own (acme's), made by root.
expect 0 volume create rb --size 8M --replicas 2
expect 0 policy set rb --tenant beta
expect 0 volume create ra --size 8M --replicas 2
expect 0 policy set ra --tenant acme
primaries() {
  expect 0 replica list -o json
  [ "$(json '" ".join(sorted(v["name"] + "=" + v["primary"] for v in d["items"]))')" = "ra=a rb=a" ]
}
for _ in $(seq 150); do primaries && break; sleep 0.1; done
primaries || fail "a is not the primary of ra and rb: $(cat "$T/out")"

# as ROLE ARGS...: spdctl ARGS as ROLE's uid on node a; prints the exit code, output in $T/out.
as() {
  local uid=${UID_OF[$1]} rc=0
  shift
  setpriv --reuid="$uid" --regid="$uid" --clear-groups "$SPDCTL" "$@" >"$T/out" 2>"$T/err" || rc=$?
  echo "$rc"
}
# The matrix: a call, then the exit code each role gets (viewer tenant operator admin none):
# 0 success, 3 NOT_FOUND, 6 PERMISSION_DENIED.
MATRIX=(
  "node list|0 0 0 0 6"
  "replica list|0 0 0 0 6"
  "replica list ra|0 0 0 0 6"
  "replica list rb|0 3 0 0 6"
  "replica promote ra|6 6 6 0 6"
  "replica promote rb|6 6 6 0 6"
  "volume create new-ROLE --size 4M --replicas 2|6 0 0 0 6"
)
bad=()
cells=0
for line in "${MATRIX[@]}"; do
  cmd=${line%%|*}
  read -r -a want <<<"${line#*|}"
  for i in "${!ORDER[@]}"; do
    r=${ORDER[$i]}
    # shellcheck disable=SC2086
    got=$(as "$r" ${cmd//ROLE/$r})
    cells=$((cells + 1))
    [ "$got" = "${want[$i]}" ] || bad+=("'$cmd' as $r: exit $got, wanted ${want[$i]} ($(cat "$T/err"))")
  done
done
[ ${#bad[@]} -eq 0 ] || fail "replication role matrix: ${bad[*]}"
echo "ok - replication and cluster calls x roles on a cluster node: $cells cells"

# What each saw: the tenant its own tenant's replicated volumes only, the viewer all.
[ "$(as tenant replica list -o json)" = 0 ] || fail "tenant replica list"
[ "$(json '" ".join(sorted(v["name"] for v in d["items"]))')" = "new-tenant ra" ] ||
  fail "the tenant lists: $(cat "$T/out")"
[ "$(as viewer replica list -o json)" = 0 ] || fail "viewer replica list"
[ "$(json '" ".join(sorted(v["name"] for v in d["items"]))')" = "new-admin new-operator new-tenant ra rb" ] ||
  fail "the viewer lists: $(cat "$T/out")"
# The tenant's replicated volume is its tenant's: in the answer, and it can get and delete it.
[ "$(as tenant volume get new-tenant -o json)" = 0 ] || fail "the tenant cannot get its own: $(cat "$T/err")"
[ "$(json 'd["tenant"]')" = acme ] || fail "new-tenant: $(cat "$T/out")"
[ "$(as tenant volume get rb)" = 3 ] || fail "the tenant gets beta's volume"
echo "ok - a tenant's replicated volumes are its own"
