# A listener that cannot start (its port taken, its socket path unusable) after others did:
# spd2 says which one and why, stops what had started in order (as on SIGTERM: the servers
# already watched by the reactor are shut down before they go), exits 1, and leaves the pool
# unlocked and consistent. Under the ASan+UBSan daemon a server torn down while the reactor
# still watched its socket ended in a sanitizer report (exit 1 too): the log is checked for one.
# Credentials and account files are checked before the pool opens: refused, they leave nothing.
source "$(dirname "$0")/lib.sh"

# A port held by a listener of this test (its pid killed at exit).
"$PY" -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(120)
' >"$T/port" &
EXTRA_PIDS+=("$!")
for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.05; done
TAKEN=$(cat "$T/port")
[ -n "$TAKEN" ] || fail "no port taken"

# fails_to_start WHAT EXPECTED_TEXT ARGS...: spd2 must exit 1 within 30 s, printing
# EXPECTED_TEXT and that it stopped what had started, and no sanitizer report.
fails_to_start() {
  local what=$1 want=$2
  shift 2
  local rc=0
  timeout 30 "$SPD2" --data-dir "$T/data" --pool-size 1G --volume vol0:64M "$@" \
    >"$T/$what.log" 2>&1 || rc=$?
  [ "$rc" -eq 1 ] || { cat "$T/$what.log"; fail "$what: exit $rc (want 1)"; }
  grep -q -- "$want" "$T/$what.log" || { cat "$T/$what.log"; fail "$what: no '$want'"; }
  grep -q "the start failed: stopping what started" "$T/$what.log" ||
    { cat "$T/$what.log"; fail "$what: not stopped in order"; }
  if grep -E -q "runtime error|Sanitizer" "$T/$what.log"; then
    cat "$T/$what.log"
    fail "$what: a sanitizer report"
  fi
}

# The NBD TCP port, after the NBD unix socket is watched.
fails_to_start nbd "nbd: bind 127.0.0.1:$TAKEN" --nbd-listen "127.0.0.1:$TAKEN" \
  --metrics-listen off
# The metrics port, after the NBD server started.
fails_to_start metrics "127.0.0.1:$TAKEN" --nbd-listen "127.0.0.1:$SPD_PORT" \
  --metrics-listen "127.0.0.1:$TAKEN"
# The replication port, after the NBD server and the metrics endpoint. The cluster's etcd is a
# port nobody listens on: a node serves whether etcd answers or not.
NO_ETCD=(--cluster "http://127.0.0.1:$SPD_PORT" --node-name n1)
fails_to_start replication "replica: bind/listen 127.0.0.1:$TAKEN" --nbd-listen off \
  --metrics-listen 127.0.0.1:0 "${NO_ETCD[@]}" --replication-listen "127.0.0.1:$TAKEN"
# The control socket in a directory that is not there, after all of those and the replication
# manager.
fails_to_start control "$T/none/control.sock" --nbd-listen off --metrics-listen 127.0.0.1:0 \
  "${NO_ETCD[@]}" --replication-listen 127.0.0.1:0 --control-socket "$T/none/control.sock"

# Files refused before the pool opens (exit 2, nothing made): Redfish's users file and its
# certificate with another certificate's key.
refused_before_pool() {  # WHAT EXPECTED_TEXT ARGS...
  local what=$1 want=$2
  shift 2
  local rc=0
  timeout 30 "$SPD2" --data-dir "$T/fresh" --pool-size 1G --nbd-listen off \
    --metrics-listen off "$@" >"$T/$what.log" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$T/$what.log"; fail "$what: exit $rc (want 2)"; }
  grep -q -- "$want" "$T/$what.log" || { cat "$T/$what.log"; fail "$what: no '$want'"; }
  [ ! -e "$T/fresh/pool.img" ] || fail "$what: a pool was made"
}
printf 'admin:x\n' >"$T/bad-users"
chmod 600 "$T/bad-users"
refused_before_pool redfish-users "users file line 1" --redfish-listen 127.0.0.1:0 \
  --redfish-users "$T/bad-users"
"$PY" - "$T/users" <<'PY'
import hashlib, os, sys
salt = os.urandom(16)
h = hashlib.pbkdf2_hmac("sha256", b"Adm1n-pass", salt, 10000)
with open(sys.argv[1], "w") as f:
    f.write(f"admin:Administrator:pbkdf2-sha256$10000${salt.hex()}${h.hex()}\n")
PY
chmod 600 "$T/users"
for n in one two; do
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/$n.key" -out "$T/$n.pem" -days 1 \
    -subj /CN=localhost 2>/dev/null || fail "openssl req"
done
refused_before_pool redfish-cert "do not match" --redfish-listen 127.0.0.1:0 \
  --redfish-users "$T/users" --redfish-cert "$T/one.pem" --redfish-key "$T/two.key"

# Nothing held, nothing lost: the pool checks clean and the next start serves.
rc=0
"$SPD2" check "$T/data/pool.img" >"$T/check.log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/check.log"; fail "check after the failed starts"; }
SPD_POOL_SIZE=1G start_spd2 --volume vol0:64M
[ "$(nbdinfo --size "$(uri)")" = $((64 << 20)) ] || fail "size after the failed starts"
stop_spd2
echo "test_startup_ports: ok"
