# Declarative configuration through spdctl against a real daemon: apply creates tenants, classes
# and volumes; the same file twice changes nothing; diff exits 1 on drift and 0 in sync; nothing
# is deleted without --prune; a dry run prints the plan of what it would create; an invalid file
# is refused whole (a new tenant before the bad document is not created), naming the line; a
# class's durability reaches its volumes; a tenant's intent is applied and compared like a
# class's; policies survive a restart and go with their volume; at start, the policy of a volume
# the pool no longer has is dropped (Reconcile), its tenant and class stay.
source "$(dirname "$0")/lib.sh"
export SPD_CONTROL_SOCKET="$T/data/control.sock"
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
  intent:
    latency: {percentile: 99, boundUs: 2000}
    reservation: {iops: 5000}
    limit: {iops: 20000, bytesPerSecond: 200M}
    durability: sync
---
apiVersion: spd.v1
kind: Volume
metadata:
  name: db1
  tenant: acme
spec:
  size: 1G
  storageClass: fast
  intent: {weight: 300}
YAML
start_spd2 --volume vol0:64M
expect 1 diff -f "$T/site.yaml"
grep -q "3 to create, 0 to update, 0 to delete, 0 unchanged" "$T/out" || fail "$(cat "$T/out")"
expect 0 apply -f "$T/site.yaml" --dry-run
# The plan names each thing it would create, and says it created nothing.
for line in "+ tenant acme" "+ storageclass fast" "+ volume db1" \
  "3 to create, 0 to update, 0 to delete, 0 unchanged"; do
  grep -qF -- "$line" "$T/out" || fail "dry run: no '$line' in: $(cat "$T/out")"
done
! grep -q "applied" "$T/out" || fail "dry run applied: $(cat "$T/out")"
expect 1 diff -f "$T/site.yaml"  # a dry run changed nothing
expect 3 tenant get acme
# -o json|yaml: one Plan document (apiVersion spd.v1), the same exit codes, no plan text.
expect 1 diff -f "$T/site.yaml" -o json
/usr/bin/python3 -c "import json; d = json.load(open('$T/out')); \
  assert (d['apiVersion'], d['kind'], d['dryRun'], d['applied'], d['toCreate']) == \
    ('spd.v1', 'Plan', True, False, 3), d; \
  assert [(c['op'], c['kind'], c['name']) for c in d['changes']] == [('create', 'tenant', 'acme'), \
    ('create', 'storageclass', 'fast'), ('create', 'volume', 'db1')], d" ||
  fail "diff -o json: $(cat "$T/out")"
expect 0 apply -f "$T/site.yaml" --dry-run -o yaml
/usr/bin/python3 -c "import yaml; d = yaml.safe_load(open('$T/out')); \
  assert (d['kind'], d['dryRun'], d['applied'], d['toCreate']) == ('Plan', True, False, 3), d" ||
  fail "apply --dry-run -o yaml: $(cat "$T/out")"
expect 3 tenant get acme
expect 0 apply -f "$T/site.yaml"
grep -q "applied 3 change(s)" "$T/out" || fail "$(cat "$T/out")"
expect 0 apply -f "$T/site.yaml" -o json
/usr/bin/python3 -c "import json; d = json.load(open('$T/out')); \
  assert (d['kind'], d['applied'], d['changes'], d['unchanged']) == ('Plan', False, [], 3), d" ||
  fail "second apply -o json: $(cat "$T/out")"
expect 0 diff -f "$T/site.yaml"
# The class's durability is the volume's; the volume's own weight overrides nothing else.
expect 0 volume get db1 -o json
/usr/bin/python3 -c "import json; d = json.load(open('$T/out')); \
  assert (d['durability'], d['tenant'], d['storageClass'], d['sizeBytes']) == ('sync', 'acme', 'fast', 1 << 30), d" ||
  fail "volume: $(cat "$T/out")"
expect 0 policy get db1 -o json
/usr/bin/python3 -c "import json; e = json.load(open('$T/out'))['effective']; \
  assert e == {'latency': {'percentile': 99.0, 'boundUs': 2000}, 'reservation': {'iops': 5000}, \
    'limit': {'iops': 20000, 'bytesPerSecond': 200 << 20}, 'weight': 300, 'durability': 'sync'}, e" ||
  fail "effective intent: $(cat "$T/out")"

# Drift: a bigger size in the file; vol0 is not in the file but stays without --prune.
sed -i 's/size: 1G/size: 2G/' "$T/site.yaml"
expect 1 diff -f "$T/site.yaml"
grep -q "~ volume db1: size 1G -> 2G" "$T/out" || fail "$(cat "$T/out")"
expect 0 apply -f "$T/site.yaml"
expect 0 volume get vol0
expect 1 diff -f "$T/site.yaml" --prune
grep -q -- "- volume vol0" "$T/out" || fail "$(cat "$T/out")"

# A tenant's intent: one the file does not declare is drift (the file is the truth); a file's
# tenant intent is applied, then in sync; a latency target on a tenant is refused at its line.
expect 0 tenant put acme --limit-iops 600
expect 1 diff -f "$T/site.yaml"
grep -q "~ tenant acme: intent.limit {iops: 600} -> (none)" "$T/out" || fail "$(cat "$T/out")"
expect 0 apply -f "$T/site.yaml"
expect 0 tenant get acme -o json
/usr/bin/python3 -c "import json; d = json.load(open('$T/out')); assert d['intent'] == {}, d" ||
  fail "acme's intent: $(cat "$T/out")"
cat >"$T/tenant.yaml" <<'YAML'
apiVersion: spd.v1
kind: Tenant
metadata:
  name: beta
spec:
  intent: {reservation: {iops: 100}, limit: {iops: 600}, weight: 300, priority: background}
YAML
expect 0 apply -f "$T/tenant.yaml"
grep -q "+ tenant beta (intent {reservation: {iops: 100}, limit: {iops: 600}, weight: 300, priority: background})" "$T/out" ||
  fail "$(cat "$T/out")"
expect 0 diff -f "$T/tenant.yaml"
expect 0 tenant get beta -o json
/usr/bin/python3 -c "import json; d = json.load(open('$T/out')); assert d['intent'] == \
  {'reservation': {'iops': 100}, 'limit': {'iops': 600}, 'weight': 300, 'priority': 'background'}, d" ||
  fail "beta's intent: $(cat "$T/out")"
sed -i 's/weight: 300/weight: 300, latency: {percentile: 99, boundUs: 2000}/' "$T/tenant.yaml"
expect 8 apply -f "$T/tenant.yaml"
grep -q "tenant.yaml:6:.*spec.intent.latency: a tenant has no latency target" "$T/err" ||
  fail "no line/field in: $(cat "$T/err")"
expect 0 tenant delete beta

# An invalid file is refused whole, naming the line, and changes nothing: a new tenant and a new
# class before the bad document are not created (a partial apply would create them).
cp "$T/site.yaml" "$T/bad.yaml"
cat >>"$T/bad.yaml" <<'YAML'
---
apiVersion: spd.v1
kind: Tenant
metadata:
  name: gamma
---
apiVersion: spd.v1
kind: StorageClass
metadata:
  name: slowpoke
spec:
  intent: {limit: {iops: 50}}
---
apiVersion: spd.v1
kind: Volume
metadata:
  name: db2
spec:
  size: 1G
  intent: {limit: {iops: 100}, reservation: {iops: 5000}}
YAML
expect 8 apply -f "$T/bad.yaml"
grep -q "bad.yaml:45:.*limit.iops" "$T/err" || fail "no line/field in: $(cat "$T/err")"
expect 3 volume get db2
expect 3 tenant get gamma
expect 3 class get slowpoke

# Refusals through the API: a policy naming a missing class, or copies without a cluster; a
# class in use cannot go.
expect 5 policy set vol0 --class nope
# A replica count of 2 makes a local volume replicated, with a cluster only (none here).
expect 5 policy set vol0 --replicas 2
grep -q "runs without a cluster" "$T/err" || fail "replicas without a cluster: $(cat "$T/err")"
expect 5 class delete fast
expect 2 class put slow --limit-iops 10 --reserve-iops 100  # spdctl checks first
grep -q "intent.limit.iops" "$T/err" || fail "$(cat "$T/err")"

# Policies survive a restart; a deleted volume's policy goes with it.
stop_spd2
start_spd2
expect 0 diff -f "$T/site.yaml"
expect 0 volume delete db1
expect 0 policy list -o json
/usr/bin/python3 -c "import json; d = json.load(open('$T/out')); assert d['items'] == [], d" ||
  fail "policy of a deleted volume left: $(cat "$T/out")"

# Reconciliation at start (Reconcile): a volume with a policy, its pool gone while spd2 was
# down but state.db kept. The new pool lacks the volume: its policy is dropped (logged), its
# tenant and class stay, and nothing names them any more.
expect 0 volume create db3 --size 16M
expect 0 policy set db3 --tenant acme --class fast
expect 0 policy get db3
stop_spd2
[ -f "$T/data/state.db" ] && [ -f "$T/data/pool.img" ] || fail "no state.db or pool.img: $(ls "$T/data")"
rm "$T/data/pool.img"
start_spd2 --volume vol0:64M  # a new, empty pool (vol0 for start_spd2's readiness check)
expect 3 volume get db3
expect 3 policy get db3
expect 0 policy list -o json
/usr/bin/python3 -c "import json; d = json.load(open('$T/out')); assert d['items'] == [], d" ||
  fail "policy of a vanished volume left: $(cat "$T/out")"
grep -q "dropping the policy of volume db3" "$T/spd2.log" || fail "no log line: $(tail "$T/spd2.log")"
expect 0 tenant get acme
expect 0 class get fast
expect 0 class delete fast
expect 0 tenant delete acme
stop_spd2
