# nbdinfo: --json capabilities, --can, --list, --map after writing.
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
for c in flush fua trim zero multi-conn cache; do
  nbdinfo --can "$c" "$(uri)" || fail "--can $c"
done
if nbdinfo --is read-only "$(uri)"; then fail "read-only reported"; fi
nbdinfo --list "nbd+unix:///?socket=$SPD_SOCK" >"$T/list"
grep -q 'export="vol0"' "$T/list" || fail "list lacks vol0"
grep -q 'export="scratch"' "$T/list" || fail "list lacks scratch"
# Write 1 MiB at 3 MiB; --map shows data there and holes around.
head -c 1M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "$(uri)" --destination-is-zero 2>/dev/null || true
$PY - "$(uri)" "$T/blob" <<'PY'
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(open(sys.argv[2], "rb").read(), 3 << 20); h.flush(); h.shutdown()
PY
nbdinfo --map "$(uri)" >"$T/map"
grep -E '^ *3145728 +1048576 +0 +data' "$T/map" || { cat "$T/map"; fail "map lacks data extent"; }
grep -E '^ *4194304 .*hole,zero' "$T/map" || { cat "$T/map"; fail "map lacks hole after"; }
stop_spd2
