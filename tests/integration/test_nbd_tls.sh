# NBD's own TLS with pre-shared keys: spd2 --nbd-tls require --nbd-tls-psk, then real clients
# over TLS-PSK (nbdinfo, nbdcopy in and back out, qemu-img with a tls-creds-psk object); a
# plaintext client and a wrong key are refused (and counted); a non-loopback listener without
# TLS does not start unless --nbd-insecure.
source "$(dirname "$0")/lib.sh"
command -v psktool >/dev/null || fail "psktool missing (gnutls-bin; scripts/setup.sh)"
mkdir -m 700 "$T/keys" "$T/qemu"
psktool -u alice -p "$T/keys/keys.psk" >/dev/null
psktool -u bob -p "$T/keys/keys.psk" >/dev/null
# qemu reads DIR/keys.psk, a file holding the client's identity.
grep '^alice:' "$T/keys/keys.psk" >"$T/qemu/keys.psk"
# alice with bob's key: the handshake must fail.
echo "alice:$(grep '^bob:' "$T/keys/keys.psk" | cut -d: -f2)" >"$T/keys/wrong.psk"
chmod 600 "$T"/keys/*.psk "$T/qemu/keys.psk"
PSK="$T/keys/keys.psk"
mport=$((SPD_PORT + 1))
SPD_METRICS=127.0.0.1:$mport start_spd2 --volume vol0:128M --nbd-tls require --nbd-tls-psk "$PSK" \
  --nbd-tls-admin-identity alice  # alice may use every volume (identities are tenants otherwise)
tls_uri() { echo "nbds://alice@127.0.0.1:$SPD_PORT/${1:-vol0}?tls-psk-file=${2:-$PSK}"; }

# nbdinfo over TLS: the protocol line says so, the size is exact.
nbdinfo "$(tls_uri)" >"$T/info" 2>&1 || { cat "$T/info"; fail "nbdinfo over TLS-PSK"; }
grep -q "with TLS" "$T/info" || { cat "$T/info"; fail "nbdinfo did not negotiate TLS"; }
[ "$(nbdinfo --size "$(tls_uri)")" = $((128 << 20)) ] || fail "size over TLS"

# nbdcopy: 32 MiB in, the volume back out, compared.
head -c 32M /dev/urandom >"$T/in.bin"
nbdcopy "$T/in.bin" "$(tls_uri)" || fail "nbdcopy into vol0 over TLS: exit $?"
nbdcopy "$(tls_uri)" "$T/out.bin" || fail "nbdcopy out of vol0 over TLS: exit $?"
[ "$(stat -c %s "$T/out.bin")" -eq $((128 << 20)) ] || fail "read back $(stat -c %s "$T/out.bin") bytes"
cmp -n $((32 << 20)) "$T/out.bin" "$T/in.bin" || fail "data read back over TLS differs"
cmp -n $((96 << 20)) -i $((32 << 20)):0 "$T/out.bin" /dev/zero || fail "the rest is not zero"

# qemu-img with a tls-creds-psk object. qemu sends its first option right behind its TLS
# finished message; against the slower ASan daemon both arrive in one read while the server
# still runs the handshake inside the STARTTLS read (the bug of session 7: that option was left
# unread until the negotiation timeout; convert stalled in 4 of 4 runs).
info=$(qemu-img info --output=json \
  --object "tls-creds-psk,id=tls0,dir=$T/qemu,endpoint=client,username=alice" \
  --image-opts "driver=nbd,host=127.0.0.1,port=$SPD_PORT,export=vol0,tls-creds=tls0") ||
  fail "qemu-img info over TLS-PSK"
$PY - "$info" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
assert d["virtual-size"] == 128 << 20, d
PY
# qemu-img reads the data too: the first 32 MiB equal in.bin.
qemu-img convert -O raw \
  --object "tls-creds-psk,id=tls0,dir=$T/qemu,endpoint=client,username=alice" \
  --image-opts "driver=nbd,host=127.0.0.1,port=$SPD_PORT,export=vol0,tls-creds=tls0" \
  "$T/qemu.bin" || fail "qemu-img convert over TLS-PSK"
cmp -n $((32 << 20)) "$T/qemu.bin" "$T/in.bin" || fail "qemu-img read other data"

# Refused: a plaintext client over TCP, and alice with the wrong key.
if nbdinfo "nbd://127.0.0.1:$SPD_PORT/vol0" >"$T/plain" 2>&1; then
  cat "$T/plain"
  fail "a plaintext client was served with --nbd-tls require"
fi
if nbdinfo "$(tls_uri vol0 "$T/keys/wrong.psk")" >"$T/wrong" 2>&1; then
  fail "a wrong key was accepted"
fi
grep -qi "tls\|handshake" "$T/wrong" || { cat "$T/wrong"; fail "the wrong key failed otherwise"; }
# The unix socket stays plaintext (no --nbd-tls-unix).
[ "$(nbdinfo --size "$(uri)")" = $((128 << 20)) ] || fail "unix socket"

# The counters: sessions established (nbdinfo x2, nbdcopy's connections, qemu-img x2) and the
# one failed handshake.
curl -s "http://127.0.0.1:$mport/metrics" >"$T/metrics"
sessions=$(awk '$1 == "spd_nbd_tls_sessions_total" {print $2}' "$T/metrics")
failures=$(awk '$1 == "spd_nbd_tls_handshake_failures_total" {print $2}' "$T/metrics")
[ "${sessions:-0}" -ge 6 ] || { grep tls "$T/metrics"; fail "tls sessions: ${sessions:-none}"; }
[ "${failures:-0}" -eq 1 ] || { grep tls "$T/metrics"; fail "tls failures: ${failures:-none}, want 1"; }
stop_spd2

# The epoll reactor (--backend posix: the fallback without io_uring) runs TLS the same way.
start_spd2 --backend posix --nbd-tls require --nbd-tls-psk "$PSK" --nbd-tls-admin-identity alice
rm -f "$T/out.bin"
nbdcopy "$(tls_uri)" "$T/out.bin" || fail "nbdcopy over TLS on epoll: exit $?"
cmp -n $((32 << 20)) "$T/out.bin" "$T/in.bin" || fail "data read back over TLS on epoll differs"
head -c 8M /dev/urandom >"$T/in2.bin"
nbdcopy "$T/in2.bin" "$(tls_uri)" || fail "nbdcopy into vol0 over TLS on epoll: exit $?"
rm -f "$T/out.bin"
nbdcopy "$(tls_uri)" "$T/out.bin" || fail "nbdcopy over TLS on epoll: exit $?"
cmp -n $((8 << 20)) "$T/out.bin" "$T/in2.bin" || fail "data written over TLS on epoll differs"
stop_spd2

# A listener on a non-loopback address (0.0.0.0: nothing is sent to it) without TLS: refused
# at start with one line naming both fixes, exit 2.
rc=0
"$SPD2" --data-dir "$T/data" --nbd-listen "0.0.0.0:$SPD_PORT" --metrics-listen off --quiet \
  >"$T/insecure.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || { cat "$T/insecure.log"; fail "plaintext on 0.0.0.0: exit $rc, want 2"; }
grep -q -- "--nbd-tls require" "$T/insecure.log" && grep -q -- "--nbd-insecure" "$T/insecure.log" ||
  { cat "$T/insecure.log"; fail "the refusal does not name both fixes"; }
# --nbd-tls on is not enough (plaintext still served) ...
rc=0
"$SPD2" --data-dir "$T/data" --nbd-listen "0.0.0.0:$SPD_PORT" --metrics-listen off --quiet \
  --nbd-tls on --nbd-tls-psk "$PSK" >"$T/insecure.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || { cat "$T/insecure.log"; fail "--nbd-tls on on 0.0.0.0: exit $rc, want 2"; }
# A key file that does not parse: refused at start (exit 2) before the pool opens (none is made).
printf 'alice:zz\n' >"$T/bad.psk"
chmod 600 "$T/bad.psk"
rc=0
"$SPD2" --data-dir "$T/fresh" --nbd-listen "127.0.0.1:$SPD_PORT" --metrics-listen off --quiet \
  --nbd-tls on --nbd-tls-psk "$T/bad.psk" >"$T/badkey.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || { cat "$T/badkey.log"; fail "a bad key file: exit $rc, want 2"; }
grep -q "bad.psk:1" "$T/badkey.log" || { cat "$T/badkey.log"; fail "the refusal names no line"; }
[ ! -e "$T/fresh/pool.img" ] || fail "a refused key file left a pool behind"
# ... require is, and so is --nbd-insecure.
SPD_NBD_LISTEN=0.0.0.0:$SPD_PORT start_spd2 --nbd-tls require --nbd-tls-psk "$PSK" \
  --nbd-tls-admin-identity alice
nbdinfo --size "$(tls_uri)" >/dev/null || fail "TLS on 0.0.0.0 (reached over loopback)"
stop_spd2
SPD_NBD_LISTEN=0.0.0.0:$SPD_PORT start_spd2 --nbd-insecure
[ "$(nbdinfo --size "nbd://127.0.0.1:$SPD_PORT/vol0")" = $((128 << 20)) ] || fail "--nbd-insecure"
stop_spd2
