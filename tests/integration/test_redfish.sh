# spd-it: alone (it measures the sensor cache's CPU and rates)
# spd2's Redfish service over HTTPS (docs/redfish.md) on a fake sysfs tree:
#  - curl: the headers DSP0266 asks for, 401 with WWW-Authenticate, 405 with Allow, 412 for a
#    wrong OData-Version, 304 for If-None-Match, 413 past --redfish-request-max, a session
#    created (X-Auth-Token, Location), used, deleted; 503 past --redfish-sessions-max; a
#    connection past --redfish-connections-max closed; a Sensor's Reading following the file;
#    $expand of the Sensors collection (400 for a bad value, 501 for $select).
#  - DMTF's Redfish Protocol Validator (rf_protocol_validator, from .venv-test: scripts/setup.sh)
#    reports no FAIL; against --redfish-test-break-odata-version it must report some (the
#    negative control: the validator does look).
# The validator first looks for the service by SSDP: it multicasts M-SEARCH to 239.255.255.250
# and ff02::c and waits 5 s for each of four answers. The test runs in a network namespace of
# its own with loopback only, so that nothing leaves the machine (those sends fail at once)
# and the 20 s per run go.
if [ -z "${SPD_TEST_NETNS:-}" ]; then
  ns=spdrf$$
  ip netns add "$ns" || { echo "FAIL: cannot make the network namespace $ns" >&2; exit 1; }
  trap 'ip netns del "$ns" 2>/dev/null' EXIT
  ip netns exec "$ns" ip link set lo up || exit 1
  SPD_TEST_NETNS=$ns ip netns exec "$ns" bash "$0" "$@" &
  inner=$!
  trap 'kill -TERM "$inner" 2>/dev/null; wait "$inner"; exit 143' TERM INT
  rc=0
  wait "$inner" || rc=$?
  exit "$rc"
fi
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fake_sysfs.sh"
repo=$(cd "$(dirname "$0")/../.." && pwd)
RPV=${RPV:-$repo/.venv-test/bin/rf_protocol_validator}
[ -x "$RPV" ] || fail "no rf_protocol_validator at $RPV: run scripts/setup.sh"
root=$T/sys
fake_sysfs "$root"
rport=$((SPD_PORT + 2))
base=https://127.0.0.1:$rport
# The accounts file: PBKDF2-HMAC-SHA256 lines, as docs/redfish.md shows how to make them.
mkline() {
  $PY - "$@" <<'PY'
import hashlib, os, sys
user, role, pw = sys.argv[1:4]
salt = os.urandom(16)
h = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, 10000)
print(f"{user}:{role}:pbkdf2-sha256$10000${salt.hex()}${h.hex()}")
PY
}
{
  mkline admin Administrator 'Adm1n-pass'
  mkline viewer ReadOnly 'v1ewer-pass'
} >"$T/users"
chmod 600 "$T/users"
start_redfish() {
  start_spd2 --volume vol0:64M --sysfs-root "$root" --health-shm "$T/health.cache" \
    --health-period-ms 500 --redfish-listen "127.0.0.1:$rport" --redfish-users "$T/users" \
    --redfish-sessions-max 4 --redfish-request-max 4096 "$@"
  for _ in $(seq 100); do
    curl -sk -o /dev/null "$base/redfish/v1" && return 0
    sleep 0.1
  done
  cat "$T/spd2.log"
  fail "redfish did not answer"
}
C=(curl -sk --max-time 10)
A=(-u admin:Adm1n-pass)
# code ARGS...: the HTTP status of a request (headers in $T/h, body in $T/b).
code() { "${C[@]}" -D "$T/h" -o "$T/b" -w '%{http_code}' "$@"; }
hdr() { awk -v k="$1" 'BEGIN {IGNORECASE = 1} index(tolower($0), tolower(k) ":") == 1 {sub(/^[^:]*: */, ""); sub(/\r$/, ""); print}' "$T/h"; }
expect_code() {
  local want=$1 got
  shift
  got=$(code "$@")
  [ "$got" = "$want" ] || { cat "$T/h" "$T/b"; fail "$* -> $got, want $want"; }
}

start_redfish
[ -f "$T/data/redfish-key.pem" ] || fail "no self-signed key in the data dir"
[ "$(stat -c %a "$T/data/redfish-key.pem")" = 600 ] || fail "key mode $(stat -c %a "$T/data/redfish-key.pem")"
grep -q "redfish: made a self-signed certificate" "$T/spd2.log" || fail "certificate not logged"
# The made certificate verifies for 127.0.0.1 (its SAN) when trusted.
curl -s --max-time 10 --cacert "$T/data/redfish-cert.pem" -o /dev/null "$base/redfish/v1/" ||
  fail "the self-signed certificate does not verify for 127.0.0.1"
expect_code 200 "$base/redfish/v1/"
[ "$(hdr OData-Version)" = 4.0 ] || fail "OData-Version '$(hdr OData-Version)'"
[ "$(hdr Content-Type)" = "application/json;charset=utf-8" ] || fail "Content-Type '$(hdr Content-Type)'"
[ -n "$(hdr ETag)" ] || fail "no ETag"
[ -n "$(hdr Cache-Control)" ] || fail "no Cache-Control"
hdr Link | grep -q 'ServiceRoot.v1_15_0.json>; rel=describedby' || fail "Link '$(hdr Link)'"
grep -q '"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}' "$T/b" || fail "Links.Sessions"
expect_code 200 "$base/redfish"
expect_code 200 "$base/redfish/v1/\$metadata"
grep -q 'http://redfish.dmtf.org/schemas/v1/Sensor_v1.xml' "$T/b" || fail "\$metadata"
expect_code 200 "$base/redfish/v1/odata"
expect_code 401 "$base/redfish/v1/Chassis"
[ "$(hdr WWW-Authenticate)" = 'Basic realm="spd2"' ] || fail "WWW-Authenticate '$(hdr WWW-Authenticate)'"
expect_code 401 -u admin:wrong "$base/redfish/v1/Chassis"
expect_code 405 "${A[@]}" -X POST -d '{}' "$base/redfish/v1/Chassis"
[ "$(hdr Allow)" = "GET, HEAD" ] || fail "Allow '$(hdr Allow)'"
expect_code 412 -H 'OData-Version: 4.1' "$base/redfish/v1/"
expect_code 200 -H 'OData-Version: 4.0' "$base/redfish/v1/"
etag=$(hdr ETag)
expect_code 304 -H "If-None-Match: $etag" "$base/redfish/v1/"
head -c 5000 /dev/zero | tr '\0' x >"$T/big"
expect_code 413 -X POST -H 'Content-Type: application/json' --data-binary "@$T/big" \
  "$base/redfish/v1/SessionService/Sessions"
# Sessions: create, use, delete; the fifth open one is refused.
expect_code 201 -X POST -H 'Content-Type: application/json' \
  -d '{"UserName": "viewer", "Password": "v1ewer-pass"}' "$base/redfish/v1/SessionService/Sessions"
token=$(hdr X-Auth-Token)
loc=$(hdr Location)
[ "${#token}" -ge 32 ] || fail "token '$token'"
case "$loc" in /redfish/v1/SessionService/Sessions/*) ;; *) fail "Location '$loc'" ;; esac
expect_code 200 -H "X-Auth-Token: $token" "$base/redfish/v1/Chassis/1"
expect_code 200 -H "X-Auth-Token: $token" -X DELETE "$base$loc"
expect_code 401 -H "X-Auth-Token: $token" "$base/redfish/v1/Chassis/1"
for i in 1 2 3 4; do
  expect_code 201 -X POST -H 'Content-Type: application/json' \
    -d '{"UserName": "admin", "Password": "Adm1n-pass"}' "$base/redfish/v1/SessionService/Sessions"
  locs[$i]=$(hdr Location)
done
expect_code 503 -X POST -H 'Content-Type: application/json' \
  -d '{"UserName": "admin", "Password": "Adm1n-pass"}' "$base/redfish/v1/SessionService/Sessions"
for i in 1 2 3 4; do expect_code 200 "${A[@]}" -X DELETE "$base${locs[$i]}"; done
# A Sensor follows its file (values only from the cache, which the collector refreshes).
s=$base/redfish/v1/Chassis/1/Sensors/hwmon_spdcpu_Package_id_0
reading() { "${C[@]}" "${A[@]}" "$s" | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["Reading"], d["Status"]["Health"])'; }
[ "$(reading)" = "42.5 OK" ] || fail "sensor reads '$(reading)'"
fake_put "$root" class/hwmon/hwmon0/temp1_input 101000
for _ in $(seq 100); do [ "$(reading)" = "101.0 Critical" ] && break; sleep 0.05; done
[ "$(reading)" = "101.0 Critical" ] || fail "sensor did not follow the file: '$(reading)'"
fake_put "$root" class/hwmon/hwmon0/temp1_input 42500
# $expand over HTTPS: every Sensor of the collection in one reply.
expect_code 200 "${A[@]}" "$base/redfish/v1/Chassis/1/Sensors?\$expand=.(\$levels=1)"
$PY - "$T/b" <<'PY' || fail "\$expand=. of the Sensors"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["Members@odata.count"] == len(d["Members"]) >= 8, d["Members@odata.count"]
for m in d["Members"]:
    assert m["@odata.type"].startswith("#Sensor.") and "ReadingType" in m, m
PY
expect_code 400 "${A[@]}" "$base/redfish/v1/Chassis/1/Sensors?\$expand=Members"
expect_code 501 "${A[@]}" "$base/redfish/v1/Chassis/1/Sensors?\$select=Reading"
# DMTF's Redfish Protocol Validator: no FAIL.
# rpv DIR: runs it into DIR; prints "PASS FAIL WARN" from the summary of its TSV report. Its exit
# status must agree: 1 when it counted a FAIL, 0 when not (anything else: it did not finish).
rpv() {
  mkdir -p "$1"
  local rc=0
  # requests lets REQUESTS_CA_BUNDLE (set on some CI hosts) override --no-cert-check.
  (cd "$1" && timeout 240 env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE "$RPV" --rhost "$base" --user admin --password 'Adm1n-pass' \
    --no-cert-check --report-dir "$1" --report-type tsv >"$1/out.txt" 2>&1) || rc=$?
  local tsv
  tsv=$(ls "$1"/*.tsv 2>/dev/null | head -1)
  [ -n "$tsv" ] || { cat "$1/out.txt"; fail "the validator wrote no report"; }
  $PY - "$tsv" <<'PY'
import csv, sys
counts = {}
for row in csv.reader(open(sys.argv[1]), delimiter="\t"):
    for cell in row:
        if cell in ("PASS", "FAIL", "WARN", "NOT_TESTED"):
            counts[cell] = counts.get(cell, 0) + 1
print(counts.get("PASS", 0), counts.get("FAIL", 0), counts.get("WARN", 0))
PY
  [ "$rc" -le 1 ] || { tail -20 "$1/out.txt" >&2; fail "the validator exited $rc"; }
  echo "$rc"
}
read -r pass nfail warn rc <<<"$(rpv "$T/rpv" | tr '\n' ' ')"
echo "protocol validator: $pass PASS, $nfail FAIL, $warn WARN (exit $rc)"
[ "$rc" = "$((nfail > 0))" ] || fail "the validator's exit status $rc disagrees with its $nfail FAIL"
if [ "$nfail" -ne 0 ]; then
  awk -F'\t' '/FAIL/' "$T"/rpv/*.tsv | head -20
  fail "the protocol validator reports $nfail FAIL"
fi
[ "$pass" -gt 200 ] || fail "only $pass PASS: did the validator reach the service?"
# After all that, the server's threads sleep (epoll without a timer; the validator's
# keep-alive connections were closed or time out).
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$SPD_PID/stat"; }
t0=$(ticks)
sleep 3
t1=$(ticks)
echo "idle with Redfish on: $((t1 - t0)) clock ticks in 3 s"
[ $((t1 - t0)) -le 3 ] || fail "spd2 with Redfish used $((t1 - t0)) ticks in 3 idle seconds"
stop_spd2

# Negative control: the same validator against a service without OData-Version. It checks the
# validator, not spd2's memory: the sanitizer build's run leaves it to the release build's.
if sanitizer_build; then
  echo "protocol validator's negative control: left to the release build's run"
else
  start_redfish --redfish-test-break-odata-version
  read -r pass nfail warn rc <<<"$(rpv "$T/rpv-broken" | tr '\n' ' ')"
  echo "protocol validator, OData-Version omitted: $pass PASS, $nfail FAIL, $warn WARN (exit $rc)"
  [ "$nfail" -gt 0 ] && [ "$rc" = 1 ] || fail "the validator found nothing wrong with a broken service"
  stop_spd2
fi

start_redfish --redfish-connections-max 6
# Connections: 6 open (TLS done, idle); the 7th is closed at once; after one closes, it works.
$PY - "$rport" <<'PY' || fail "connection limit"
import socket, ssl, sys, time
port = int(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(s)
held = [conn() for _ in range(6)]
time.sleep(0.2)
try:
    extra = conn()
    extra.sendall(b"GET /redfish/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
    got = extra.recv(100)
    assert not got, "7th connection served: %r" % got
except (ssl.SSLError, ConnectionError, OSError):
    pass
held.pop().close()
time.sleep(0.3)
c = conn()
c.sendall(b"GET /redfish/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
assert c.recv(100).startswith(b"HTTP/1.1 200"), "no room after a close"
PY

stop_spd2
echo "test_redfish: ok"
