# NBD by uid: a plaintext client on this host, over TCP on loopback (the owner of its socket,
# from the kernel's socket table) or over the unix socket (SO_PEERCRED), is its uid, with the
# control socket's roles. Root sees and opens every volume; user nobody (uid 65534) without a
# role, or as a viewer, sees nothing and opens nothing; as tenant acme exactly acme's volume; as
# an operator everything. Refusals are counted and logged. --nbd-local-any-user turns the check
# off; --nbd-unix-mode/--nbd-unix-group set the socket file's permissions.
source "$(dirname "$0")/lib.sh"
chmod 0755 "$T"  # so that user nobody can reach the NBD socket below
export SPD_CONTROL_SOCKET="$T/data/control.sock"
mport=$((SPD_PORT + 1))
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)

SPD_METRICS=127.0.0.1:$mport start_spd2 --volume vol0:16M --nbd-unix-mode 0666 \
  --nbd-unix-group nogroup
[ "$(stat -c %a "$SPD_SOCK")" = 666 ] || fail "--nbd-unix-mode: $(stat -c %a "$SPD_SOCK")"
[ "$(stat -c %G "$SPD_SOCK")" = nogroup ] || fail "--nbd-unix-group: $(stat -c %G "$SPD_SOCK")"
chmod 0711 "$T/data"  # let user nobody reach the socket (and be refused by the daemon)
for t in acme beta; do "$SPDCTL" tenant put $t >/dev/null || fail "tenant $t"; done
for v in a1:acme b1:beta; do
  "$SPDCTL" volume create "${v%:*}" --size 16M >/dev/null || fail "create ${v%:*}"
  "$SPDCTL" policy set "${v%:*}" --tenant "${v#*:}" >/dev/null || fail "policy ${v%:*}"
done
head -c 1M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "nbd+unix:///vol0?socket=$SPD_SOCK" || fail "root writes vol0"

tcp() { echo "nbd://127.0.0.1:$SPD_PORT/${1:-}"; }
unx() { echo "nbd+unix:///${1:-}?socket=$SPD_SOCK"; }
# as WHO CMD...: runs CMD as root or as user nobody.
as() {
  if [ "$1" = nobody ]; then
    shift
    "${NOBODY[@]}" "$@"
  else
    shift
    "$@"
  fi
}
# names WHO URI: the export names nbdinfo --list shows WHO, sorted, on one line.
names() {
  as "$1" nbdinfo --list --json "$2" |
    $PY -c "import json, sys; print(' '.join(sorted(e['export-name'] for e in json.load(sys.stdin)['exports'])))"
}
# opens WHO URI: WHO can open the export (nbdinfo --size) or not.
opens() { as "$1" nbdinfo --size "$2" >/dev/null 2>&1; }
refusals() {
  curl -s "http://127.0.0.1:$mport/metrics" | awk '$1 == "spd_nbd_uid_refusals_total" {print $2}'
}
# sees WHO "NAMES": WHO lists exactly NAMES over TCP and over the unix socket.
sees() {
  local got
  for u in "$(tcp)" "$(unx)"; do
    got=$(names "$1" "$u") || fail "$1: nbdinfo --list $u failed"
    [ "$got" = "$2" ] || fail "$1 lists '$got' at $u, want '$2'"
  done
}
# may WHO VOLUME / may_not WHO VOLUME, over both transports.
may() { for u in "$(tcp "$2")" "$(unx "$2")"; do opens "$1" "$u" || fail "$1 cannot open $u"; done; }
may_not() {
  for u in "$(tcp "$2")" "$(unx "$2")"; do
    if opens "$1" "$u"; then fail "$1 opened $u"; fi
  done
}

# Root (an admin, as on the control socket) lists, reads and writes everything.
sees root "a1 b1 vol0"
for v in vol0 a1 b1; do may root $v; done
rm -f "$T/out"
nbdcopy "nbd://127.0.0.1:$SPD_PORT/vol0" "$T/out" || fail "root reads vol0 over TCP"
cmp -n 1048576 "$T/blob" "$T/out" || fail "root read back other data"

# nobody has no role: sees nothing, opens nothing (by name or the default export), writes nothing.
r0=$(refusals)
sees nobody ""
for v in vol0 a1 b1 ""; do may_not nobody "$v"; done
head -c 1M /dev/zero >"$T/zeros"
if "${NOBODY[@]}" nbdcopy "$T/zeros" "$(tcp vol0)" 2>/dev/null; then
  fail "nobody wrote vol0 over TCP"
fi
nbdcopy "$(unx vol0)" "$T/out" && cmp -n 1048576 "$T/blob" "$T/out" || fail "vol0 changed"
r1=$(refusals)
# Four exports times two transports, and the write: one refusal each.
[ "$((r1 - r0))" -eq 9 ] || fail "refusals went from $r0 to $r1, want +9"
grep -q "uid 65534 may not use export 'vol0'" "$T/spd2.log" || fail "no refusal line in the log"
grep -q "nbd unix: uid 65534 may not use export" "$T/spd2.log" || fail "no unix refusal logged"

# A viewer reads the control plane's metadata, not volume data.
"$SPDCTL" access set 65534 --role viewer >/dev/null || fail "access set viewer"
sees nobody ""
may_not nobody vol0
# A tenant: exactly its tenant's volume, which it reads and writes.
"$SPDCTL" access set 65534 --role tenant --tenant acme >/dev/null || fail "access set tenant"
sees nobody "a1"
may nobody a1
for v in vol0 b1; do may_not nobody $v; done
"${NOBODY[@]}" nbdcopy "$T/blob" "$(tcp a1)" || fail "tenant nobody writes a1"
"${NOBODY[@]}" nbdcopy "$(unx a1)" - >"$T/out" || fail "tenant reads a1"
cmp -n 1048576 "$T/blob" "$T/out" || fail "tenant read back other data"
# The default export is the tenant's first volume.
[ "$(as nobody nbdinfo --size "$(tcp)")" = 16777216 ] || fail "tenant's default export"
# Moving the tenant moves the access, at the next connection.
"$SPDCTL" access set 65534 --role tenant --tenant beta >/dev/null || fail "access set beta"
sees nobody "b1"
may_not nobody a1
# An operator uses every volume, as through the API.
"$SPDCTL" access set 65534 --role operator >/dev/null || fail "access set operator"
sees nobody "a1 b1 vol0"
may nobody vol0
"$SPDCTL" access delete 65534 >/dev/null || fail "access delete"
sees nobody ""
[ "$(refusals)" -gt "$r1" ] || fail "refusals did not move after r1"
stop_spd2

# Without the control server there is no uid map: root still sees everything, nobody nothing.
start_spd2 --nbd-unix-mode 0666 --control-socket off
sees root "a1 b1 vol0"
sees nobody ""
stop_spd2

# --nbd-local-any-user: the old behaviour, every local user every volume (and a warning).
start_spd2 --nbd-unix-mode 0666 --nbd-local-any-user
sees nobody "a1 b1 vol0"
may nobody vol0
grep -q "nbd-local-any-user: every local user" "$T/spd2.log" || fail "no warning for the opt-out"
stop_spd2
# The default mode: owner-only.
start_spd2
[ "$(stat -c %a "$SPD_SOCK")" = 600 ] || fail "default NBD socket mode $(stat -c %a "$SPD_SOCK")"
stop_spd2
