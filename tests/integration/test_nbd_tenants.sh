# NBD over TLS-PSK by tenant: a PSK identity is a tenant and lists and opens only the volumes
# whose policy names it; an identity given with --nbd-tls-admin-identity sees every volume; an
# identity whose tenant owns nothing sees nothing.
source "$(dirname "$0")/lib.sh"
export SPD_CONTROL_SOCKET="$T/data/control.sock"
mkdir -m 700 "$T/keys"
for id in acme beta ops; do psktool -u "$id" -p "$T/keys/keys.psk" >/dev/null; done
chmod 600 "$T/keys/keys.psk"
PSK="$T/keys/keys.psk"
start_spd2 --volume vol0:16M --nbd-tls require --nbd-tls-psk "$PSK" --nbd-tls-admin-identity ops
"$SPDCTL" tenant put acme >/dev/null && "$SPDCTL" tenant put beta >/dev/null || fail "tenants"
"$SPDCTL" volume create a1 --size 16M >/dev/null || fail "create a1"
"$SPDCTL" policy set a1 --tenant acme >/dev/null || fail "policy a1"
list() {
  nbdinfo --list --json "nbds://$1@127.0.0.1:$SPD_PORT/?tls-psk-file=$PSK" |
    $PY -c "import json, sys; print(' '.join(sorted(e['export-name'] for e in json.load(sys.stdin)['exports'])))"
}
[ "$(list acme)" = "a1" ] || fail "acme lists: '$(list acme)'"
[ "$(list ops)" = "a1 vol0" ] || fail "ops lists: '$(list ops)'"
[ "$(list beta)" = "" ] || fail "beta lists: '$(list beta)'"
nbdinfo --size "nbds://acme@127.0.0.1:$SPD_PORT/a1?tls-psk-file=$PSK" >/dev/null ||
  fail "acme cannot open its own volume"
if nbdinfo --size "nbds://acme@127.0.0.1:$SPD_PORT/vol0?tls-psk-file=$PSK" >/dev/null 2>&1; then
  fail "acme opened vol0, which is not its tenant's"
fi
if nbdinfo --size "nbds://beta@127.0.0.1:$SPD_PORT/a1?tls-psk-file=$PSK" >/dev/null 2>&1; then
  fail "beta opened acme's volume"
fi
# Moving the volume to beta moves the access with it, at once.
"$SPDCTL" policy set a1 --tenant beta >/dev/null || fail "policy a1 beta"
[ "$(list beta)" = "a1" ] || fail "beta after the move: '$(list beta)'"
[ "$(list acme)" = "" ] || fail "acme after the move: '$(list acme)'"
stop_spd2
