# nbdinfo: --json capabilities and exact sizes, --can, --list, --map after writing; the written
# data read back.
source "$(dirname "$0")/lib.sh"
start_spd2 --volume vol0:256M --volume scratch:64M
json=$(nbdinfo --json "$(uri)")
$PY - "$json" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
e = d["exports"][0]
assert e["export-size"] == 256 << 20, e
for k in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn", "can_cache"):
    assert e[k] is True, (k, e[k])
assert e["is_read_only"] is False
assert e["block_size_maximum"] >= 32 << 20
assert "base:allocation" in e["contexts"]
PY
[ "$(nbdinfo --size "$(uri)")" = $((256 << 20)) ] || fail "--size vol0"
[ "$(nbdinfo --size "$(uri scratch)")" = $((64 << 20)) ] || fail "--size scratch"
for c in flush fua trim zero multi-conn cache; do
  nbdinfo --can "$c" "$(uri)" || fail "--can $c"
done
if nbdinfo --is read-only "$(uri)"; then fail "read-only reported"; fi
nbdinfo --list "nbd+unix:///?socket=$SPD_SOCK" >"$T/list"
grep -q 'export="vol0"' "$T/list" || fail "list lacks vol0"
grep -q 'export="scratch"' "$T/list" || fail "list lacks scratch"
# 1 MiB at 0 (nbdcopy) and 1 MiB at 3 MiB (libnbd, then FLUSH): --map shows exactly these two
# data extents and holes that read as zeros everywhere else.
head -c 1M /dev/urandom >"$T/blob0"
head -c 1M /dev/urandom >"$T/blob3"
nbdcopy "$T/blob0" "$(uri)" --destination-is-zero || fail "nbdcopy into vol0: exit $?"
$PY - "$(uri)" "$T/blob3" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(open(sys.argv[2], "rb").read(), 3 << 20); h.flush(); h.shutdown()
PY
nbdinfo --map --json "$(uri)" >"$T/map"
$PY - "$T/map" <<'PY' || { cat "$T/map"; fail "map"; }
import json, sys
M = 1 << 20
got = [(e["offset"], e["length"], e["type"]) for e in json.load(open(sys.argv[1]))]
want = [(0, M, 0), (M, 2 * M, 3), (3 * M, M, 0), (4 * M, 252 * M, 3)]
assert got == want, got
PY
# Read the whole volume back: both blobs where written, zeros elsewhere.
nbdcopy "$(uri)" "$T/out" || fail "nbdcopy out of vol0: exit $?"
[ "$(stat -c %s "$T/out")" -eq $((256 << 20)) ] || fail "read back $(stat -c %s "$T/out") bytes"
cmp -n $((1 << 20)) "$T/out" "$T/blob0" || fail "data at 0 differs"
cmp -n $((1 << 20)) -i $((3 << 20)):0 "$T/out" "$T/blob3" || fail "data at 3 MiB differs"
cmp -n $((2 << 20)) -i $((1 << 20)):0 "$T/out" /dev/zero || fail "1..3 MiB not zero"
cmp -n $((252 << 20)) -i $((4 << 20)):0 "$T/out" /dev/zero || fail "4 MiB.. not zero"
stop_spd2
