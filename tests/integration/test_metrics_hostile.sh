# spd-it: alone (it times a scrape among silent clients)
# Hostile metrics clients: silent connections (connect, send nothing) must not keep a scraper
# out. More silent clients than the server keeps (MetricsServer's clients_max, 64) are opened and
# held; curl must still scrape within a bound, every time. Then the silent ones must be dropped by
# the request-header timeout, and spd2 must go back to sleeping once they are gone.
source "$(dirname "$0")/lib.sh"
mport=$((SPD_PORT + 1))
SPD_METRICS="127.0.0.1:$mport" start_spd2 --volume vol0:64M --cores 1
url="http://127.0.0.1:$mport/metrics"
metric() { curl -s --max-time 5 "$url" | awk -v m="$1" '$1 == m {print $2}'; }
curl -sf --max-time 5 "$url" >/dev/null || fail "no scrape before the silent clients"

silent=100
fds=()
for _ in $(seq "$silent"); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$mport" || fail "connect"
  fds+=("$fd")
done
# A scrape after every batch of silent clients: the newest connection is always served.
for round in 1 2 3; do
  start=$(date +%s.%N)
  curl -sf --max-time 5 "$url" -o "$T/scrape" || fail "scrape $round failed behind $silent silent clients"
  grep -q '^spd_metrics_scrapes_total ' "$T/scrape" || fail "scrape $round: not a metrics page"
  echo "scrape $round behind $silent silent clients: $(awk -v s="$start" -v e="$(date +%s.%N)" \
    'BEGIN {printf "%.3f", e - s}') s"
  for _ in $(seq 20); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$mport" || fail "connect"
    fds+=("$fd")
  done
done
evicted=$(metric spd_metrics_connections_dropped_evicted_total)
echo "evicted: ${evicted:-none}"
[ "${evicted:-0}" -ge $((silent - 64)) ] || fail "silent clients beyond the limit were not evicted"

# HTTP details: 404 for another path, 405 for another method on /metrics, keep-alive.
code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/other")
[ "$code" = 404 ] || fail "GET /other answered $code"
code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -X POST "$url")
[ "$code" = 405 ] || fail "POST /metrics answered $code"
n=$(curl -s --max-time 5 -w '%{num_connects}\n' "$url" "$url" -o /dev/null -o /dev/null |
  awk '{s += $1} END {print s}')
[ "$n" = 1 ] || fail "two scrapes took $n connections (no keep-alive)"

# The silent clients still held are dropped by the header timeout (5 s by default).
sleep 6
dropped=$(metric spd_metrics_connections_dropped_header_timeout_total)
echo "dropped by the header timeout: ${dropped:-none}"
[ "${dropped:-0}" -ge 60 ] || fail "silent clients were not dropped by the header timeout"
for fd in "${fds[@]}"; do exec {fd}<&-; done

# No connection left, no timer left: an idle spd2 sleeps.
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$SPD_PID/stat"; }
t0=$(ticks)
sleep 3
t1=$(ticks)
echo "idle: $((t1 - t0)) clock ticks in 3 s"
[ $((t1 - t0)) -le 6 ] || fail "spd2 used $((t1 - t0)) clock ticks in 3 idle seconds"
stop_spd2
