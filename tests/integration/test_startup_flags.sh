# Start-up flags on an existing pool: --volume grows a volume (data kept) and applies a new
# durability; a smaller size, an explicit --pool-size of another size and a size that is not a
# multiple of 4 KiB are each refused with one clear line and exit status 2, harming nothing; so
# is "nan" for a real-valued flag.
source "$(dirname "$0")/lib.sh"

# run_refused EXPECTED_TEXT ARGS...: spd2 must exit 2 at once, printing EXPECTED_TEXT.
run_refused() {
  local want=$1
  shift
  local rc=0
  timeout 20 "$SPD2" --data-dir "$T/data" --nbd-listen off --metrics-listen off --quiet "$@" \
    >"$T/refused.log" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || { cat "$T/refused.log"; fail "exit $rc (want 2) for: $*"; }
  grep -q -- "$want" "$T/refused.log" || { cat "$T/refused.log"; fail "no '$want' for: $*"; }
}

start_spd2 --volume vol0:64M
head -c 1M /dev/urandom >"$T/blob"
nbdcopy "$T/blob" "$(uri)"
stop_spd2
[ "$(nbdinfo --size "$(uri)" 2>/dev/null || echo none)" = none ] || fail "still serving"

# Grow to 128M and switch to sync: logged, served at the new size, data kept.
start_spd2 --volume vol0:128M:sync
[ "$(nbdinfo --size "$(uri)")" = $((128 << 20)) ] || fail "not grown: $(nbdinfo --size "$(uri)")"
grep -q "grew volume vol0 from 67108864 to 134217728 bytes" "$T/spd2.log" ||
  { cat "$T/spd2.log"; fail "growth not logged"; }
grep -q "volume vol0: durability sync (was flush)" "$T/spd2.log" ||
  { cat "$T/spd2.log"; fail "durability change not logged"; }
rm -f "$T/out"
nbdcopy "$(uri)" "$T/out"
cmp -n $((1 << 20)) "$T/out" "$T/blob" || fail "data lost by the growth"
stop_spd2

# Shrinking by flag: refused, the volume untouched.
run_refused "shrinking a volume at start-up is refused" --pool-size 2G --volume vol0:64M
# --pool-size of another size on the existing pool: refused (the default value never is: the
# other runs here give 2G, the pool's size, and this one gives none).
run_refused "changing the size of an existing pool is not supported yet" --pool-size 4G
# A real-valued flag given "nan" (CLI11's range checks let it through: every comparison with it
# is false), on the command line or in the config file.
for flag in --pool-overcommit-max --qos-budget-factor --qos-budget-max-factor \
  --qos-limit-burst-ms --trace-sample-rate; do
  run_refused "$flag must be a number, got nan" "$flag" nan
done
printf 'qos-budget-factor = nan\n' >"$T/nan.toml"
run_refused "--qos-budget-factor must be a number, got nan" --config "$T/nan.toml"
# A volume size that is not a multiple of 4096.
run_refused "positive multiple of 4096 bytes, got 1000" --pool-size 2G --volume small:1000
run_refused "must be at least --qos-budget-factor" --qos on --qos-budget-factor 4 \
  --qos-budget-max-factor 2
rc=0
"$SPD2" check "$T/data/pool.img" >"$T/check.log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/check.log"; fail "check after the refusals"; }
[ "$(stat -c %s "$T/data/pool.img")" = $((2 << 30)) ] || fail "pool file size changed"

# Without --pool-size (default 16G) the 2G pool opens as it is; the size stays 128M.
"$SPD2" --data-dir "$T/data" --nbd-listen "127.0.0.1:$SPD_PORT" --metrics-listen off --quiet \
  --volume vol0:128M >>"$T/spd2.log" 2>&1 &
SPD_PID=$!
for _ in $(seq 200); do
  nbdinfo --size "$(uri)" >/dev/null 2>&1 && break
  kill -0 "$SPD_PID" 2>/dev/null || { cat "$T/spd2.log"; fail "spd2 exited without --pool-size"; }
  sleep 0.05
done
[ "$(nbdinfo --size "$(uri)")" = $((128 << 20)) ] || fail "size after a plain restart"
rm -f "$T/out"
nbdcopy "$(uri)" "$T/out"
cmp -n $((1 << 20)) "$T/out" "$T/blob" || fail "data lost"
stop_spd2

# The resync's flags: a region that is not a whole number of dirty-map units, values out of
# range, and either flag without a cluster (where it could not take effect) are refused.
run_refused "must be a multiple of 64" --cluster http://127.0.0.1:1 \
  --replication-resync-region-kib 100
run_refused "not in range 64 to 1024" --cluster http://127.0.0.1:1 \
  --replication-resync-region-kib 2048
run_refused "not in range 1 to 64" --cluster http://127.0.0.1:1 --replication-resync-inflight 0
run_refused "need --cluster" --replication-resync-inflight 8
run_refused "need --cluster" --replication-activity-window-mib 8
run_refused "not in range 0 to 127" --cluster http://127.0.0.1:1 --replication-activity-window-mib 128
run_refused "need --cluster" --replication-unbarriered-mib 8
run_refused "not in range 0 to 4096" --cluster http://127.0.0.1:1 --replication-unbarriered-mib 4097
run_refused "need --cluster" --replication-resync-region-kib 256
# A seed with no injected loss to choose seeds nothing.
run_refused "needs --replication-inject-loss-ppm" --cluster http://127.0.0.1:1 \
  --replication-inject-rtt-us 100 --replication-inject-seed 7
echo "ok"
