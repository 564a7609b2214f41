# spdctl against a real daemon, beyond test_control.sh: `--help` of every command and
# subcommand (enumerated from spdctl's own help, so a new command is covered without a change
# here), `version`, `class get|list|delete` in each output form, the Deleted, TokenList and
# UidRoleList documents, exit code 9 (a limit: calls in flight, request size) and 10 (any other
# error: the audit log cannot be written, spdctl's own check of a missing directory),
# `apply --prune` deleting a volume, a class and a tenant end to end, and
# --control-socket-group: the socket's group, who of it may connect.
source "$(dirname "$0")/lib.sh"
export SPD_CONTROL_SOCKET="$T/data/control.sock"
chmod 0755 "$T"  # so that other uids can reach the socket (mode and group decide)
pyj() { $PY -c "import json,sys; d=json.load(open('$T/out')); $1" || fail "$2: $(cat "$T/out")"; }
pyy() { $PY -c "import yaml,sys; d=yaml.safe_load(open('$T/out')); $1" || fail "$2: $(cat "$T/out")"; }

# ---- --help of every command and subcommand, without a daemon ----
# The commands are what spdctl's top-level help lists under "Subcommands:", the verbs what each
# command's help lists there.
subcommands() { awk '/^Subcommands:$/ {s = 1; next} s && /^$/ {s = 0} s && /^  [a-z]/ {print $1}'; }
"$SPDCTL" --help >"$T/out" 2>&1 || fail "spdctl --help exited $?"
grep -q "^Usage: " "$T/out" || fail "no usage in spdctl --help: $(cat "$T/out")"
nouns=$(subcommands <"$T/out")
[ "$(echo "$nouns" | wc -w)" -ge 15 ] || fail "too few commands in spdctl --help: $nouns"
"$SPDCTL" completion bash >"$T/comp.bash"
helps=0
for n in $nouns; do
  expect 0 "$n" --help
  grep -q "^Usage: .*$n" "$T/out" || fail "spdctl $n --help printed no usage: $(cat "$T/out")"
  helps=$((helps + 1))
  # Every command completes (the completion script lists the nouns by hand).
  words=$(bash -c "source '$T/comp.bash'; COMP_WORDS=(spdctl '$n'); COMP_CWORD=1; _spdctl; echo \${COMPREPLY[*]}")
  [[ " $words " == *" $n "* ]] || fail "bash completion does not complete '$n' (got '$words')"
  for v in $(subcommands <"$T/out"); do
    expect 0 "$n" "$v" --help
    grep -q "^Usage: .*$n $v" "$T/out" || fail "spdctl $n $v --help printed no usage: $(cat "$T/out")"
    helps=$((helps + 1))
  done
done
echo "ok - --help of $helps commands and subcommands ($(echo $nouns | tr '\n' ' '))"
# spdctl's version: its API version is the daemon's documents' (checked against node info below).
expect 0 version
grep -Eqx "spdctl [0-9]+\.[0-9]+\.[0-9]+ \(API spd\.v1\)" "$T/out" || fail "version: $(cat "$T/out")"
spdctl_version=$(awk '{print $2}' "$T/out")

start_spd2 --volume vol0:64M --control-socket-mode 0666 --control-calls-max 1
chmod 0711 "$T/data"
expect 0 node info -o json
pyj "assert d['apiVersion'] == 'spd.v1' and d['version'] == '$spdctl_version', d" \
  "spdctl's version and API are the daemon's"

# ---- class get, list, delete in each form ----
expect 0 class put gold --limit-iops 500 --durability sync
expect 0 class get gold -o json
pyj "assert d == {'apiVersion': 'spd.v1', 'kind': 'StorageClass', 'name': 'gold',
      'intent': {'limit': {'iops': 500}, 'durability': 'sync'}}, d" "class get -o json"
expect 0 class get gold -o yaml
pyy "assert d['kind'] == 'StorageClass' and d['intent']['limit']['iops'] == 500, d" "class get -o yaml"
expect 0 class get gold
grep -q '^gold  *{"limit":{"iops":500},"durability":"sync"}$' "$T/out" || fail "class get: $(cat "$T/out")"
expect 3 class get nope
grep -q "^spdctl: NOT_FOUND: " "$T/err" || fail "class get nope: $(cat "$T/err")"
expect 0 class put plain
expect 0 class list -o json
pyj "assert d['kind'] == 'StorageClassList' and [c['name'] for c in d['items']] == ['gold', 'plain'] \
      and d['items'][1]['intent'] == {}, d" "class list -o json"
expect 0 class list -o yaml
pyy "assert d['kind'] == 'StorageClassList' and len(d['items']) == 2, d" "class list -o yaml"
expect 0 class list
[ "$(head -1 "$T/out" | tr -s ' ')" = "NAME INTENT" ] && grep -q "^plain  *-$" "$T/out" ||
  fail "class list: $(cat "$T/out")"
expect 0 class delete plain -o json
pyj "assert d == {'apiVersion': 'spd.v1', 'kind': 'Deleted', 'name': 'plain'}, d" "class delete -o json"
expect 0 class delete gold
grep -qx "deleted storage class gold" "$T/out" || fail "class delete: $(cat "$T/out")"
expect 3 class delete gold
expect 0 class list -o json
pyj "assert d['items'] == [], d" "class list after the deletes"
expect 0 tenant put gone
expect 0 tenant delete gone -o yaml
pyy "assert d == {'apiVersion': 'spd.v1', 'kind': 'Deleted', 'name': 'gone'}, d" "tenant delete -o yaml"
expect 0 volume create scratch --size 1M
expect 0 volume delete scratch -o json
pyj "assert d == {'apiVersion': 'spd.v1', 'kind': 'Deleted', 'name': 'scratch'}, d" "volume delete -o json"
# Token and uid lists as documents, in every form.
expect 0 token create --role operator --description "spdctl test"
id=$(cut -d_ -f2 "$T/out")
expect 0 token list -o json
pyj "t = [x for x in d['items'] if x['id'] == '$id']; assert d['kind'] == 'TokenList' and \
      t and t[0]['role'] == 'operator' and t[0]['description'] == 'spdctl test' and \
      t[0]['createdUnix'] > 0 and 'secret' not in t[0], d" "token list -o json"
expect 0 token list -o yaml
pyy "assert d['kind'] == 'TokenList' and d['items'][0]['id'] == '$id', d" "token list -o yaml"
expect 0 token list
grep -q "^$id  *operator  *never  *spdctl test$" "$T/out" || fail "token list: $(cat "$T/out")"
expect 0 tenant put uidt
expect 0 access set 2101 --role tenant --tenant uidt
expect 0 access list -o yaml
pyy "assert d['kind'] == 'UidRoleList' and d['items'] == [{'uid': 2101, 'role': 'tenant', \
      'tenant': 'uidt'}], d" "access list -o yaml"
expect 0 access list
grep -q "^2101  *tenant  *uidt$" "$T/out" || fail "access list: $(cat "$T/out")"
expect 0 access delete 2101
expect 0 tenant delete uidt
expect 0 audit head -o json
pyj "assert d['kind'] == 'AuditHead' and d['seq'] > 0 and len(d['hash']) == 64, d" "audit head -o json"

# ---- exit 9: a limit ----
# A request larger than 64 KiB: RESOURCE_EXHAUSTED from gRPC.
expect 9 tenant get "$(head -c 70000 /dev/zero | tr '\0' a)"
grep -q "^spdctl: RESOURCE_EXHAUSTED: " "$T/err" || fail "oversized request: $(cat "$T/err")"
# --control-calls-max 1: while a calibration holds the only slot (from its start to its
# answer), other calls are refused. Its scratch volume's creation (an event: watchers hold no
# slot) says it runs.
# The watcher first, admitted once it prints the events so far (scratch's above); then the
# calibration, which is running once its scratch volume's creation comes.
"$SPDCTL" events --since 1 -o json >"$T/ev" 2>&1 &
ev_pid=$!
EXTRA_PIDS+=("$ev_pid")
for _ in $(seq 300); do
  grep -q '"volume":"scratch"' "$T/ev" && break
  sleep 0.1
done
grep -q '"volume":"scratch"' "$T/ev" || fail "the watcher: $(cat "$T/ev")"
"$SPDCTL" calibrate --seconds 8 --working-set 16M >"$T/cal" 2>&1 &
cal_pid=$!
for _ in $(seq 300); do
  grep -q '"type":"volume-created","volume":"spd-calibrate-scratch"' "$T/ev" && break
  sleep 0.1
done
grep -q '"volume":"spd-calibrate-scratch"' "$T/ev" || fail "no calibration started: $(cat "$T/ev" "$T/cal")"
expect 9 volume list
grep -q "^spdctl: RESOURCE_EXHAUSTED: 1 control calls are in flight" "$T/err" || fail "$(cat "$T/err")"
wait "$cal_pid" || fail "calibrate: $(cat "$T/cal")"
expect 0 volume list
kill "$ev_pid"
rc=0
wait "$ev_pid" 2>/dev/null || rc=$?
EXTRA_PIDS=()  # reaped: its pid is no longer ours to kill

# ---- apply --prune: deletes what the file no longer declares ----
cat >"$T/site.yaml" <<'YAML'
apiVersion: spd.v1
kind: Tenant
metadata:
  name: acme
---
apiVersion: spd.v1
kind: StorageClass
metadata:
  name: fast
spec:
  intent: {limit: {iops: 1000}}
---
apiVersion: spd.v1
kind: Volume
metadata:
  name: vol0
spec:
  size: 64M
---
apiVersion: spd.v1
kind: Volume
metadata:
  name: tmp1
  tenant: acme
spec:
  size: 8M
  storageClass: fast
YAML
expect 0 apply -f "$T/site.yaml" --prune
grep -q "applied 3 change(s)" "$T/out" || fail "apply: $(cat "$T/out")"
head -c 8M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "$(uri tmp1)" || fail "writing tmp1"
# The file without tmp1, its class and its tenant: without --prune nothing goes...
$PY -c "
import sys
docs = open('$T/site.yaml').read().split('---\n')
open('$T/site2.yaml', 'w').write('---\n'.join(d for d in docs if 'name: vol0' in d))"
expect 0 apply -f "$T/site2.yaml"
grep -q "0 to create, 0 to update, 0 to delete, 1 unchanged" "$T/out" || fail "apply: $(cat "$T/out")"
expect 0 volume get tmp1
# ... with --prune the volume, then its class and tenant are deleted, in that order.
expect 1 diff -f "$T/site2.yaml" --prune
expect 0 apply -f "$T/site2.yaml" --prune
grep -q -- "- volume tmp1" "$T/out" && grep -q "applied 3 change(s)" "$T/out" ||
  fail "apply --prune: $(cat "$T/out")"
expect 3 volume get tmp1
expect 3 class get fast
expect 3 tenant get acme
expect 0 volume get vol0
expect 0 diff -f "$T/site2.yaml" --prune
expect 0 pool list -o json
pyj "assert d['items'][0]['volumes'] == 1, d" "the pool after the prune"
"$PY" - "$T/data/audit/audit.log" <<'PY' || fail "the prune's deletes are not in the audit log"
import json, sys
calls = [(e["method"].split("/")[1], e["args"].get("name"), e["result"]) for e in map(json.loads, open(sys.argv[1]))]
i = calls.index(("DeleteVolume", "tmp1", "OK"))
assert calls.index(("DeleteStorageClass", "fast", "OK")) > i, calls
assert calls.index(("DeleteTenant", "acme", "OK")) > i, calls
PY

# ---- exit 10: any other error ----
expect 10 audit verify --dir "$T/no-such-dir"
# The audit log cannot be written (immutable: root cannot append either): the change is made
# but not recorded, INTERNAL (10); every later change UNAVAILABLE (7) until a restart.
chattr +i "$T/data/audit/audit.log" || fail "chattr +i (the test needs an ext4-like /tmp)"
trap 'chattr -i "$T/data/audit/audit.log" 2>/dev/null; cleanup' EXIT
expect 10 volume create unrecorded --size 1M
grep -q "^spdctl: INTERNAL: the change was made but could not be recorded in the audit log" "$T/err" ||
  fail "INTERNAL: $(cat "$T/err")"
expect 7 volume create after --size 1M
grep -q "audit log cannot be written" "$T/err" || fail "$(cat "$T/err")"
expect 0 volume get unrecorded
chattr -i "$T/data/audit/audit.log"
stop_spd2

# ---- --control-socket-group ----
# By name (disk) and by number: the socket's group; with mode 0660 a member of the group
# connects (and is judged by its role: none here, PERMISSION_DENIED, exit 6), another user
# cannot connect at all (exit 7). An unknown group is refused at start.
disk_gid=$(getent group disk | cut -d: -f3)
[ -n "$disk_gid" ] || fail "no group disk on this system"
start_spd2 --control-socket-group disk --control-socket-mode 0660
[ "$(stat -c '%G %a' "$T/data/control.sock")" = "disk 660" ] ||
  fail "socket: $(stat -c '%G %a' "$T/data/control.sock")"
chmod 0711 "$T/data"
as() { local rc=0; setpriv --reuid=2102 --regid=2102 "$@" "$SPDCTL" volume list >"$T/out" 2>"$T/err" || rc=$?; echo "$rc"; }
[ "$(as --groups="$disk_gid")" = 6 ] && grep -q "uid 2102 has no role" "$T/err" ||
  fail "a member of disk: $(cat "$T/err")"
[ "$(as --clear-groups)" = 7 ] || fail "a user outside disk: $(cat "$T/err")"
expect 0 access set 2102 --role viewer
[ "$(as --groups="$disk_gid")" = 0 ] || fail "a viewer in disk: $(cat "$T/err")"
stop_spd2
start_spd2 --control-socket-group "$disk_gid"
[ "$(stat -c '%g %a' "$T/data/control.sock")" = "$disk_gid 600" ] ||
  fail "socket by gid: $(stat -c '%g %a' "$T/data/control.sock")"
stop_spd2
rc=0
timeout 20 "$SPD2" --data-dir "$T/data" --nbd-listen off --metrics-listen off \
  --control-socket-group no-such-group-here >"$T/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "control-socket-group: no group 'no-such-group-here'" "$T/out" ||
  fail "an unknown group: exit $rc, $(cat "$T/out")"
echo "ok - spdctl: help, version, class, documents, exit 9 and 10, apply --prune, socket group"
