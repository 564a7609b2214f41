#!/usr/bin/env bash
# TLS on the replication link with x509 certificates (--replication-tls-cert, -key, -ca;
# docs/replication.md "TLS"): three spd2 nodes and a real etcd, each node with its own
# certificate of the cluster's CA naming it. The flags are refused where they cannot take
# effect (a certificate naming another node, an expired one, ...). c first trusts only another
# CA: it refuses a's handshakes, stays out of sync and holds nothing while b is in sync and
# holds every acknowledged write. Then c trusting the cluster's CA is resynced and holds them
# too. A node with valid credentials that says it is the primary (it is not, or not at that
# epoch) is refused by the replica (etcd names another). An impostor at c's address with a
# certificate of the CA naming b is refused by the primary. Last, c with a certificate of a
# forged CA (the cluster CA's name, another key), the primary of a volume of its own: its
# replicas refuse it.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"
VOL=xv

# A CA (NAME) and node certificates (CA NAME CN): EC P-256 keys, for TLS server and client use.
new_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$T/$1.key" -out "$T/$1.pem" -subj "/CN=spd test $1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    2>"$T/openssl.log" || { cat "$T/openssl.log"; fail "openssl: CA $1"; }
}
new_cert() {
  local ca=$1 name=$2 cn=$3
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/$name.key" \
    -out "$T/$name.csr" -subj "/CN=$cn" 2>"$T/openssl.log" &&
    printf 'extendedKeyUsage=serverAuth,clientAuth\n' >"$T/$name.ext" &&
    openssl x509 -req -in "$T/$name.csr" -CA "$T/$ca.pem" -CAkey "$T/$ca.key" \
      -CAcreateserial -days 2 -extfile "$T/$name.ext" -out "$T/$name.pem" 2>>"$T/openssl.log" ||
    { cat "$T/openssl.log"; fail "openssl: certificate $name"; }
  chmod 600 "$T/$name.key"
}
new_ca ca
new_ca other
new_cert ca a a
new_cert ca b b
new_cert ca c-as-b b
new_cert ca c c
# A forged CA: the cluster CA's name, another key. Its certificates name the cluster's CA as
# their issuer, so that a client sends one when a server asks for that CA's.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$T/forged.key" -out "$T/forged.pem" -subj "/CN=spd test ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  2>"$T/openssl.log" || { cat "$T/openssl.log"; fail "openssl: forged CA"; }
new_cert forged c-forged c
: >"$T/empty.pem"

# Flags first: where they cannot take effect, spd2 exits 2 at once.
expect_start_refused() {  # WHAT ARGS...
  local what=$1 rc=0
  shift
  timeout 20 "$SPD2" --data-dir "$T/refused" --pool-size 64M --nbd-listen off \
    --metrics-listen off --control-socket off --quiet "$@" >"$T/refused.log" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$T/refused.log"; fail "$what: exit $rc, wanted 2"; }
}
CL=(--cluster http://127.0.0.1:1 --node-name a)
expect_start_refused "a certificate without its key and CA" "${CL[@]}" \
  --replication-listen 127.0.0.1:0 --replication-tls-cert "$T/a.pem"
grep -q "go together" "$T/refused.log" || fail "cert alone: $(cat "$T/refused.log")"
printf 'x:%s\n' "$(printf 'ab%.0s' $(seq 32))" >"$T/k.psk"
chmod 600 "$T/k.psk"
expect_start_refused "certificates and keys at once" "${CL[@]}" --replication-listen 127.0.0.1:0 \
  --replication-tls-cert "$T/a.pem" --replication-tls-key "$T/a.key" \
  --replication-tls-ca "$T/ca.pem" --replication-tls-psk "$T/k.psk"
grep -q "not both" "$T/refused.log" || fail "cert and psk: $(cat "$T/refused.log")"
expect_start_refused "no --replication-listen" "${CL[@]}" --replication-tls-cert "$T/a.pem" \
  --replication-tls-key "$T/a.key" --replication-tls-ca "$T/ca.pem"
expect_start_refused "a CA file without a certificate" "${CL[@]}" \
  --replication-listen 127.0.0.1:0 --replication-tls-cert "$T/a.pem" \
  --replication-tls-key "$T/a.key" --replication-tls-ca "$T/empty.pem"
grep -q "no CA certificate" "$T/refused.log" || fail "empty CA: $(cat "$T/refused.log")"
expect_start_refused "a key that is not the certificate's" "${CL[@]}" \
  --replication-listen 127.0.0.1:0 --replication-tls-cert "$T/a.pem" \
  --replication-tls-key "$T/b.key" --replication-tls-ca "$T/ca.pem"
expect_start_refused "a certificate that names another node" "${CL[@]}" \
  --replication-listen 127.0.0.1:0 --replication-tls-cert "$T/b.pem" \
  --replication-tls-key "$T/b.key" --replication-tls-ca "$T/ca.pem"
grep -q "does not name this node, 'a'" "$T/refused.log" || fail "b's for a: $(cat "$T/refused.log")"
# An expired certificate of the CA (certtool sets any dates; openssl x509 only from now on).
certtool --generate-privkey --key-type ecdsa --outfile "$T/old.key" 2>/dev/null ||
  fail "certtool: key"
printf 'cn = "a"\nactivation_date = "2020-01-01 00:00:00"\nexpiration_date = "2020-01-02 00:00:00"\ntls_www_server\ntls_www_client\n' >"$T/old.tmpl"
certtool --generate-certificate --load-privkey "$T/old.key" --load-ca-certificate "$T/ca.pem" \
  --load-ca-privkey "$T/ca.key" --template "$T/old.tmpl" --outfile "$T/old.pem" \
  >"$T/certtool.log" 2>&1 || { cat "$T/certtool.log"; fail "certtool: expired certificate"; }
expect_start_refused "an expired certificate" "${CL[@]}" --replication-listen 127.0.0.1:0 \
  --replication-tls-cert "$T/old.pem" --replication-tls-key "$T/old.key" \
  --replication-tls-ca "$T/ca.pem"
grep -q "expired on 2020-01-02 00:00:00 UTC" "$T/refused.log" ||
  fail "expired: $(cat "$T/refused.log")"

repl_cluster_init
start_x509_node() {  # NAME CERT CA
  start_repl_node "$1" --replication-tls-cert "$T/$2.pem" --replication-tls-key "$T/$2.key" \
    --replication-tls-ca "$T/$3.pem"
}
start_x509_node a a ca
start_x509_node b b ca
start_x509_node c c other  # its own certificate, but it trusts only another CA
wait_registered
# When a's certificate expires, for monitoring (two days from now, as made above).
expiry=$(metric a spd_replication_tls_certificate_expiry_seconds)
[ "$((expiry - $(date +%s)))" -gt 86400 ] && [ "$((expiry - $(date +%s)))" -le 172800 ] ||
  fail "a's certificate expiry: $expiry"
ctl a volume create xv --size 32M --replicas 3
# c refuses a's handshakes. (GnuTLS's client sends no certificate that the CAs c names did not
# sign: "Certificate is required"; c's handshake failures count it.)
c_refuses_the_link "trusting another CA" 5

restart_c() {  # CERT CA
  kill -TERM "${PID[c]}"
  wait "${PID[c]}" || fail "node c exited $? on SIGTERM"
  start_x509_node c "$1" "$2"
}
# c trusting the cluster's CA: resynced, it holds every acknowledged write.
restart_c c ca
all_in_sync() { [ "$(copies a)" = "a=in_sync b=in_sync c=in_sync" ]; }
wait_for "c in sync with its own certificate" 30 all_in_sync
$PY "$BC" verify --uri "$(nbd_uri c)" --state "$T/bc.json" --min-durable 500 >"$T/v.log" ||
  { cat "$T/v.log"; fail "c lacks acknowledged writes"; }

# A node with valid credentials that lies: b's certificate, to c's listener, saying it is the
# primary of xv at a higher epoch; then a's (the primary's) at another epoch than etcd's. c
# refuses both hellos (etcd names a at E1): nothing is written, a's link to c stays in sync.
read -r P1 E1 <<<"$(primary_of a)"
[ "$P1" = a ] || fail "the primary of xv is '$P1'"
C_ADDR=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=5s get /spd/v1/nodes/c \
  --print-value-only | $PY -c 'import json,sys; print(json.load(sys.stdin)["replication"])')
rogue() {  # CERT EPOCH
  /usr/bin/python3 "$(dirname "$0")/rogue_primary.py" --address "$C_ADDR" --cert "$T/$1.pem" \
    --key "$T/$1.key" --ca "$T/ca.pem" --server-name c --volume xv --size $((32 << 20)) \
    --epoch "$2"
}
[ "$(rogue b $((E1 + 1000)))" = '{"hello": "error", "write": null}' ] ||
  fail "b taken as the primary of xv: $(rogue b $((E1 + 1000)))"
[ "$(rogue a $((E1 + 1)))" = '{"hello": "error", "write": null}' ] ||
  fail "a taken at another epoch than etcd's"
grep -q "node 'b' refused as the primary of xv.*etcd names node 'a'" "$T/c.log" ||
  fail "c's log: $(grep -i "refused as the primary" "$T/c.log" | tail -2)"
[ "$(metric c spd_replica_primaries_refused_total)" -ge 2 ] ||
  fail "primaries_refused on c: $(metric c spd_replica_primaries_refused_total)"
[ "$(copies a)" = "a=in_sync b=in_sync c=in_sync" ] || fail "after the lies: $(copies a)"
$PY "$BC" verify --uri "$(nbd_uri c)" --state "$T/bc.json" --min-durable 500 >"$T/v.log" ||
  { cat "$T/v.log"; fail "c's copy changed under a lying node"; }

# An impostor at c's address (c killed; its registration stays until its lease ends) with a
# certificate of the cluster's CA that names b: a, which connects to c there again (a resync
# attempt: the copy's detail and a's log say why), refuses it in the handshake and sends it
# nothing.
kill -KILL "${PID[c]}"
rc=0
wait "${PID[c]}" || rc=$?
[ "$rc" -eq 137 ] || fail "node c, killed, exited $rc"
/usr/bin/python3 "$(dirname "$0")/impostor_replica.py" --listen "$C_ADDR" --cert "$T/c-as-b.pem" \
  --key "$T/c-as-b.key" --seconds 8 >"$T/impostor.json" &
IMPOSTOR=$!
refused_impostor() {
  ctl a replica list xv -o json
  json '[c["detail"] for c in d["items"][0]["copies"] if c["node"] == "c"][0]' >"$T/detail"
  grep -q "TLS handshake:.*does not match" "$T/detail"
}
wait_for "a refused the impostor at c's address" 8 refused_impostor
wait "$IMPOSTOR" || fail "the impostor did not run"
grep -q "replica c (.*): resync: TLS handshake:.*does not match" "$T/a.log" ||
  fail "a's log does not say why it refused the impostor"
$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d["connections"] > 0 and d["app_bytes"] == 0))' \
  "$T/impostor.json" || fail "the impostor at c's address: $(cat "$T/impostor.json")"

# c with a certificate of the forged CA, the primary of a volume of its own: a and b refuse its
# certificate in their handshakes (as replicas), and its copies there stay out of sync and hold
# nothing; a refuses c's as a replica of xv too.
start_x509_node c c-forged ca
wait_registered a "c registered again (as a sees it)"
wait_registered c "c registered again (as c sees it)"
VOL=xw
ctl c volume create xw --size 16M --replicas 3
c_primary() { [ "$(primary_of c | cut -d' ' -f1)" = c ]; }
wait_for "c the primary of xw" 20 c_primary
refused_c() { grep -q "a primary's certificate refused" "$T/$1.log"; }
wait_for "a refused the forged certificate" 20 refused_c a
wait_for "b refused the forged certificate" 20 refused_c b
[ "$(copies c)" = "c=in_sync a=out_of_sync b=out_of_sync" ] || fail "xw: $(copies c)"
for n in a b; do
  nbdinfo --map "$(nbd_uri $n)" >"$T/map" || fail "no copy of xw on $n"
  ! grep -q "data" "$T/map" || fail "$n holds data of a forged primary: $(cat "$T/map")"
done
VOL=xv
[ "$(copies a)" = "a=in_sync b=in_sync c=out_of_sync" ] || fail "xv with c forged: $(copies a)"
echo "replication tls x509: OK (the flags refused; b in sync; c refused while it trusted another CA, in sync after; a lying node refused; an impostor at c's address refused; a forged CA of the same name refused at both ends)"
