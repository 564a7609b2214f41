# NBD over TLS with x509 client certificates: spd2 --nbd-tls require --nbd-tls-cert/-key
# --nbd-tls-ca. A client certificate the CA signed is required, and its subject's Common Name
# is the client's identity, a tenant as a PSK identity is: CN=acme lists and opens only acme's
# volumes (read and written with nbdcopy), not globex's, over TLS 1.3 and 1.2; CN=ops
# (--nbd-tls-admin-identity) sees every volume. A client without a certificate, or with one
# from another CA, from an impostor CA under the CA's name, self-signed, expired, without a CN
# or made for servers only, fails the TLS handshake (counted, the reason logged); a plaintext
# client is refused. Without --nbd-tls-ca an x509 client has no identity and sees every volume
# (spd2 warns at start). Certificates made here with certtool (gnutls-bin).
source "$(dirname "$0")/lib.sh"
export SPD_CONTROL_SOCKET="$T/data/control.sock"
command -v certtool >/dev/null || fail "certtool missing (gnutls-bin; scripts/setup.sh)"
P="$T/pki"
mkdir -m 700 "$P"

# cert NAME SIGNER TEMPLATE-LINES...: NAME-key.pem and NAME-cert.pem in $P, signed by SIGNER's
# key ("self": self-signed). Valid from an hour ago for two days unless the template says.
cert() {
  local name=$1 signer=$2
  shift 2
  printf '%s\n' "$@" >"$P/$name.tmpl"
  grep -q _date "$P/$name.tmpl" || printf 'expiration_days = 2\n' >>"$P/$name.tmpl"
  certtool --generate-privkey --key-type ecdsa --outfile "$P/$name-key.pem" >/dev/null 2>&1 ||
    fail "certtool: key $name"
  if [ "$signer" = self ]; then
    certtool --generate-self-signed --load-privkey "$P/$name-key.pem" \
      --template "$P/$name.tmpl" --outfile "$P/$name-cert.pem" >/dev/null 2>&1
  else
    certtool --generate-certificate --load-privkey "$P/$name-key.pem" \
      --load-ca-certificate "$P/$signer-cert.pem" --load-ca-privkey "$P/$signer-key.pem" \
      --template "$P/$name.tmpl" --outfile "$P/$name-cert.pem" >/dev/null 2>&1
  fi || fail "certtool: certificate $name"
}
client=(tls_www_client signing_key)
cert ca self 'cn = "spd test CA"' ca cert_signing_key
cert foreign self 'cn = "another CA"' ca cert_signing_key
cert impostor self 'cn = "spd test CA"' ca cert_signing_key  # the CA's name, another key
cert server ca 'cn = "localhost"' 'dns_name = "localhost"' 'ip_address = "127.0.0.1"' \
  tls_www_server signing_key encryption_key
cert acme ca 'cn = "acme"' "${client[@]}"
cert globex ca 'cn = "globex"' "${client[@]}"
cert ops ca 'cn = "ops"' "${client[@]}"
cert foreign-acme foreign 'cn = "acme"' "${client[@]}"
cert impostor-acme impostor 'cn = "acme"' "${client[@]}"
cert self-acme self 'cn = "acme"' "${client[@]}"
cert self-ca self 'cn = "spd test CA"' "${client[@]}"  # self-signed under the CA's name
cert expired-acme ca 'cn = "acme"' "${client[@]}" 'activation_date = "2020-01-01 00:00:00"' \
  'expiration_date = "2020-06-01 00:00:00"'
cert no-cn ca 'organization = "acme"' "${client[@]}"
cert server-only ca 'cn = "acme"' tls_www_server signing_key  # for servers, not clients

# libnbd's certificates directory per client: the CA that signed the server's certificate,
# and the client's certificate and key (none for "nocert").
bad=(foreign-acme impostor-acme self-acme self-ca expired-acme no-cn server-only nocert)
for c in acme globex ops "${bad[@]}"; do
  mkdir -m 700 "$T/$c"
  cp "$P/ca-cert.pem" "$T/$c/ca-cert.pem"
  [ "$c" = nocert ] && continue
  cp "$P/$c-cert.pem" "$T/$c/client-cert.pem"
  cp "$P/$c-key.pem" "$T/$c/client-key.pem"
done
x509_uri() { echo "nbds://127.0.0.1:$SPD_PORT/${2:-}?tls-certificates=$T/$1"; }
# A client that offers TLS 1.2 only (GnuTLS's system priority file; the default is TLS 1.3).
printf '[overrides]\ndisabled-version = tls1.3\n' >"$T/tls12.conf"
tls12() { GNUTLS_SYSTEM_PRIORITY_FILE="$T/tls12.conf" "$@"; }
list() {
  nbdinfo --list --json "$(x509_uri "$1")" |
    $PY -c "import json, sys; print(' '.join(sorted(e['export-name'] for e in json.load(sys.stdin)['exports'])))"
}
metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

mport=$((SPD_PORT + 1))
# debug: the log says "TLS up (VERSION)..., identity 'CN'".
SPD_METRICS=127.0.0.1:$mport start_spd2 --log-level debug --volume vol0:16M --nbd-tls require \
  --nbd-tls-cert "$P/server-cert.pem" --nbd-tls-key "$P/server-key.pem" \
  --nbd-tls-ca "$P/ca-cert.pem" --nbd-tls-admin-identity ops
"$SPDCTL" tenant put acme >/dev/null && "$SPDCTL" tenant put globex >/dev/null || fail "tenants"
for v in a1:acme g1:globex; do
  "$SPDCTL" volume create "${v%:*}" --size 16M >/dev/null || fail "create ${v%:*}"
  "$SPDCTL" policy set "${v%:*}" --tenant "${v#*:}" >/dev/null || fail "policy ${v%:*}"
done

# (a) CN=acme is tenant acme: it lists only a1, and writes and reads a1.
[ "$(list acme)" = "a1" ] || fail "acme lists: '$(list acme)'"
[ "$(list globex)" = "g1" ] || fail "globex lists: '$(list globex)'"
[ "$(list ops)" = "a1 g1 vol0" ] || fail "ops (admin identity) lists: '$(list ops)'"
[ "$(tls12 list acme)" = "a1" ] || fail "acme over TLS 1.2 lists: '$(tls12 list acme)'"
grep -q "TLS up (TLS1.3).*identity 'acme'" "$T/spd2.log" &&
  grep -q "TLS up (TLS1.2).*identity 'acme'" "$T/spd2.log" ||
  { grep "TLS up" "$T/spd2.log"; fail "no TLS 1.3 and TLS 1.2 sessions with identity acme"; }
nbdinfo "$(x509_uri acme a1)" >"$T/info" 2>&1 || { cat "$T/info"; fail "nbdinfo acme a1"; }
grep -q "with TLS" "$T/info" || { cat "$T/info"; fail "nbdinfo did not negotiate TLS"; }
head -c 4M /dev/urandom >"$T/in.bin"
nbdcopy "$T/in.bin" "$(x509_uri acme a1)" || fail "nbdcopy into a1 as acme: exit $?"
nbdcopy "$(x509_uri acme a1)" "$T/out.bin" || fail "nbdcopy out of a1 as acme: exit $?"
cmp -n $((4 << 20)) "$T/out.bin" "$T/in.bin" || fail "data read back from a1 differs"
# The data is a1's: globex's volume is still zero (read by its own tenant).
nbdcopy "$(x509_uri globex g1)" "$T/g1.bin" || fail "nbdcopy out of g1 as globex: exit $?"
cmp -n $((4 << 20)) "$T/g1.bin" /dev/zero || fail "g1 is not zero"

# (b) acme cannot open globex's volume, nor vol0 (no tenant); globex cannot open a1: after a
# TLS handshake that succeeded, answered as for a name that does not exist (no oracle).
for x in "acme g1" "acme vol0" "globex a1"; do
  read -r who vol <<<"$x"
  if nbdinfo --size "$(x509_uri "$who" "$vol")" >"$T/refused" 2>&1; then
    fail "$who opened $vol, which is not its tenant's"
  fi
  grep -q "no export named '$vol'" "$T/refused" ||
    { cat "$T/refused"; fail "$who could not open $vol, but not for want of authorization"; }
done
tls_failures0=$(metric spd_nbd_tls_handshake_failures_total)
[ "${tls_failures0:-0}" -eq 0 ] || fail "tls handshake failures before the bad clients: $tls_failures0"

# (c) Refused at the TLS handshake: no certificate; signed by another CA or self-signed (which
# libnbd does not even send: GnuTLS clients send a certificate only if its issuer is among the
# CAs the server names); signed by an impostor CA under the CA's very name, or self-signed
# under that name (sent, and the signature does not verify); expired; no CN; for servers only.
# Each over TLS 1.3 and over TLS 1.2, each counted.
for c in "${bad[@]}"; do
  for v in "" tls12; do
    if $v nbdinfo --list "$(x509_uri "$c")" >"$T/bad.$c" 2>&1; then
      cat "$T/bad.$c"
      fail "client '$c' was served (${v:-tls13})"
    fi
    grep -qi "tls\|handshake\|certificate\|alert" "$T/bad.$c" ||
      { cat "$T/bad.$c"; fail "client '$c' failed otherwise (${v:-tls13})"; }
  done
done
want=$((2 * ${#bad[@]}))
for _ in $(seq 100); do
  [ "$(metric spd_nbd_tls_handshake_failures_total)" = "$want" ] && break
  sleep 0.05
done
failures=$(metric spd_nbd_tls_handshake_failures_total)
[ "${failures:-0}" -eq "$want" ] || fail "tls handshake failures: ${failures:-none}, want $want"
# The log says why (the server's reasons, not the client's).
for why in "Certificate is required" "No certificate was found" \
  "signature in the certificate is invalid" "expired" "no Common Name" "intended purpose"; do
  grep -qi "$why" "$T/spd2.log" || { cat "$T/spd2.log"; fail "no refusal logged for '$why'"; }
done

# (d) A plaintext client is refused (--nbd-tls require), with or without a name.
for e in "" a1; do
  if nbdinfo "nbd://127.0.0.1:$SPD_PORT/$e" >"$T/plain" 2>&1; then
    cat "$T/plain"
    fail "a plaintext client was served with --nbd-tls require"
  fi
  grep -qi "tls" "$T/plain" || { cat "$T/plain"; fail "the plaintext client failed otherwise"; }
done
# The good clients still work after all that.
[ "$(list acme)" = "a1" ] || fail "acme lists after the refusals: '$(list acme)'"
stop_spd2

# Without --nbd-tls-ca: no client certificate is asked for, a client has no identity and sees
# every volume (documented), and spd2 says so at start.
start_spd2 --nbd-tls require --nbd-tls-cert "$P/server-cert.pem" \
  --nbd-tls-key "$P/server-key.pem"
[ "$(list nocert)" = "a1 g1 vol0" ] || fail "no CA, no certificate lists: '$(list nocert)'"
[ "$(list acme)" = "a1 g1 vol0" ] || fail "no CA, acme's certificate lists: '$(list acme)'"
grep -q "x509 clients are not identified and see every volume" "$T/spd2.log" ||
  fail "no warning about x509 without --nbd-tls-ca"
stop_spd2
