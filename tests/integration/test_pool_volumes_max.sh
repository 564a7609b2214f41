# --pool-volumes-max: the volume table size of a new pool. With 8 slots the 9th volume is refused
# (RESOURCE_EXHAUSTED: spdctl exit 9) and the pool keeps its 8 slots when restarted without the
# flag or with another value (logged at info); out-of-range values (0, 65537) are refused at
# start with one clear line and exit 2, before any pool is made (so is a value that is not a
# number). --pool-overcommit-max bounds the volumes' sizes summed (thin provisioning), and
# --pool-map-memory-max the memory of their chunk maps.
source "$(dirname "$0")/lib.sh"
export SPD_CONTROL_SOCKET="$T/data/control.sock"

# expect CODE ARGS...: spdctl must exit CODE; its stdout in $T/out, stderr in $T/err.
# run_refused EXPECTED_TEXT ARGS...: spd2 must exit 2 at once, printing EXPECTED_TEXT.
run_refused() {
  local want=$1 rc=0
  shift
  timeout 20 "$SPD2" --data-dir "$T/data" --nbd-listen off --metrics-listen off --quiet "$@" \
    >"$T/refused.log" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$T/refused.log"; fail "exit $rc (want 2) for: $*"; }
  grep -q -- "$want" "$T/refused.log" || { cat "$T/refused.log"; fail "no '$want' for: $*"; }
}
# The pool's volume count (pool list).
volumes() {
  expect 0 pool get -o json
  /usr/bin/python3 -c "import json; print(json.load(open('$T/out'))['volumes'])"
}
# The 9th volume is refused as a full table, by name and number.
ninth_refused() {
  expect 9 volume create v9 --size 4M
  grep -q "RESOURCE_EXHAUSTED: pool holds the maximum of 8 volumes already" "$T/err" ||
    { cat "$T/err"; fail "the 9th create: not refused as a full table ($1)"; }
  [ "$(volumes)" = 8 ] || fail "volumes after the refusal ($1): $(volumes)"
}

for bad in 0 65537 many; do
  run_refused "spd2: --pool-volumes-max: Value $bad not in range 1 to 65536" --pool-volumes-max "$bad"
done
[ ! -e "$T/data/pool.img" ] || fail "a refused start made a pool"
"$SPD2" --help >"$T/help"
tr -s ' \n' ' ' <"$T/help" >"$T/help1"
grep -q -- "--pool-volumes-max UINT.*=4096 Volume table slots of a new pool.*Applies only when the pool is created" "$T/help1" ||
  { cat "$T/help"; fail "--pool-volumes-max is not in --help"; }

# A new pool of 8 slots: vol0 (made at start) and v2..v8 fit, the 9th does not.
start_spd2 --pool-volumes-max 8
[ "$(volumes)" = 1 ] || fail "a new pool without vol0"
for i in 2 3 4 5 6 7 8; do expect 0 volume create "v$i" --size 4M; done
ninth_refused "new pool"
stop_spd2
"$SPD2" check "$T/data/pool.img" >"$T/check.log" 2>&1 || { cat "$T/check.log"; fail "check"; }
grep -q "volume table of 8 slots" "$T/check.log" || { cat "$T/check.log"; fail "table size"; }

# Restarted without the flag (default 4096): still 8 slots, nothing logged about it.
start_spd2
ninth_refused "restart without the flag"
# A slot freed by a delete is taken again, and the limit stays.
expect 0 volume delete v8
expect 0 volume create v9 --size 4M
expect 9 volume create v10 --size 4M
stop_spd2
if grep -q "applies only to a new pool" "$T/spd2.log"; then
  cat "$T/spd2.log"
  fail "logged a difference without the flag"
fi

# Restarted with another value: the pool keeps its 8, and says so.
start_spd2 --pool-volumes-max 16
grep -q "has a volume table of 8 slots, fixed when it was created: --pool-volumes-max 16 applies only to a new pool" \
  "$T/spd2.log" || { cat "$T/spd2.log"; fail "the differing flag was not logged"; }
expect 9 volume create v10 --size 4M
grep -q "maximum of 8 volumes" "$T/err" || { cat "$T/err"; fail "limit after --pool-volumes-max 16"; }
stop_spd2

# --pool-overcommit-max 1: the volumes' sizes summed (PROVISIONED) may not exceed the data area.
# A create or a growth beyond it is refused (exit 9, the flag named) and changes nothing; one
# within it, and a shrink, are not. Out-of-range values are refused at start.
for bad in -1 1000001 many; do
  run_refused "--pool-overcommit-max" --pool-overcommit-max "$bad"
done
start_spd2 --pool-overcommit-max 1
expect 0 volume delete v9  # a free table slot, so that only the bound can refuse
expect 0 pool get -o json
size=$(json "d['sizeBytes']")
prov=$(json "d['provisionedBytes']")
room=$(((size - prov) / 4194304 * 4194304))  # what is left, in 4 MiB steps
[ "$room" -gt $((256 << 20)) ] || fail "no room left to test with: $(cat "$T/out")"
expect 9 volume create big --size $((room + 4194304))
grep -q "RESOURCE_EXHAUSTED: create volume big: .*--pool-overcommit-max" "$T/err" ||
  { cat "$T/err"; fail "a create over the bound: not refused by it"; }
expect 0 volume create big --size "$room"
expect 9 volume resize big --size $((room + 4194304))
grep -q "RESOURCE_EXHAUSTED: resize volume big: .*--pool-overcommit-max" "$T/err" ||
  { cat "$T/err"; fail "a growth over the bound: not refused by it"; }
expect 0 volume resize big --size $((room - 4194304))
expect 0 pool get -o json
[ "$(json "d['provisionedBytes']")" = $((prov + room - 4194304)) ] ||
  fail "provisioned after the refusals: $(cat "$T/out")"
stop_spd2

# --pool-map-memory-max (default 1G): every volume's chunk map is in memory whole, 4 bytes per
# 1 MiB chunk of its size. A 2 PiB thin volume (an 8 GiB map) is refused, not allocated: before,
# any caller allowed to create a volume (a tenant too) could make the daemon take 8 GiB.
run_refused "--pool-map-memory-max: not a size" --pool-map-memory-max lots
start_spd2
expect 0 volume delete big  # a free table slot (of 8), so that only the bound can refuse
expect 9 volume create huge --size 2P
grep -q "RESOURCE_EXHAUSTED: create volume huge: the volumes' chunk maps would take .*--pool-map-memory-max" \
  "$T/err" || { cat "$T/err"; fail "a 2 PiB volume: not refused by the map bound"; }
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$SPD_PID/status")
[ "$rss" -lt $((512 << 10)) ] || fail "spd2 holds $rss KiB after the refusal"
stop_spd2
start_spd2 --pool-map-memory-max 1M  # 1 MiB of maps: 256 GiB of volumes in all
expect 9 volume create bigmap --size 256G
grep -q -- "--pool-map-memory-max" "$T/err" || { cat "$T/err"; fail "256G under a 1M map bound"; }
expect 0 volume create bigmap --size 128G
stop_spd2
echo "ok"
