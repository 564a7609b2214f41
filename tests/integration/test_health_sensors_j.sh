# lm-sensors and spd2's health collector read the same fake hwmon tree and must agree: every
# input and threshold `sensors -j` prints has the same value (to its 3 decimals) in
# spd_health_dump --json, and neither reports a channel the other lacks. sensors only reads
# /sys, so it runs in a private mount namespace with the fake class/ bound over /sys/class.
# Needs root (unshare -m). Run twice, with values changed in between.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DUMP=${SPD_HEALTH_DUMP:-$(dirname "${SPD2:-$here/../../build/spd2}")/spd_health_dump}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
[ -x "$DUMP" ] || fail "no spd_health_dump at $DUMP (cmake --build build --target spd_health_dump)"
if ! command -v sensors >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lm-sensors \
    >/dev/null || fail "lm-sensors is not installed and could not be"
fi
T=$(mktemp -d /tmp/spd-health-it.XXXXXX)
trap 'rm -rf "$T"' EXIT
root=$T/sys

put() { # put FILE VALUE: in place, as sysfs attributes change
  mkdir -p "$(dirname "$root/$1")"
  echo "$2" >"$root/$1"
}
build_tree() { # build_tree OFFSET: the same chips, values shifted by OFFSET
  local o=$1 h=class/hwmon
  put $h/hwmon0/name spdcpu
  put $h/hwmon0/temp1_input $((42500 + o))
  put $h/hwmon0/temp1_label "Package id 0"
  put $h/hwmon0/temp1_max 80000
  put $h/hwmon0/temp1_crit 100000
  put $h/hwmon0/temp2_input $((38125 + o))
  put $h/hwmon0/temp2_label "Core 0"
  put $h/hwmon0/temp2_max 80000
  put $h/hwmon0/temp3_input $((39000 + o))
  put $h/hwmon1/name spdboard
  put $h/hwmon1/fan1_input $((1234 + o))
  put $h/hwmon1/fan1_min 300
  put $h/hwmon1/fan2_input $((987 + o))
  put $h/hwmon1/in0_input $((1104 + o))
  put $h/hwmon1/in0_label Vcore
  put $h/hwmon1/in0_min 800
  put $h/hwmon1/in0_max 1500
  put $h/hwmon1/in1_input $((12096 + o))
  put $h/hwmon1/in1_lcrit 10800
  put $h/hwmon1/in1_crit 13200
  put $h/hwmon1/curr1_input $((2500 + o))
  put $h/hwmon1/curr1_max 10000
  put $h/hwmon1/power1_input $((45250000 + o * 1000))
  put $h/hwmon1/power1_max 120000000
  put $h/hwmon1/energy1_input $((123456789 + o))
  put $h/hwmon2/name spdpsu
  put $h/hwmon2/temp1_input $((51000 + o))
  put $h/hwmon2/temp1_label "PSU inlet"
  put $h/hwmon2/temp1_crit 70000
  put class/thermal/thermal_zone0/type x86_pkg_temp
  put class/thermal/thermal_zone0/temp $((52000 + o))
}

compare() {
  unshare -m sh -c "mount --make-rprivate / && mount --bind '$root/class' /sys/class &&
                    sensors -j -c /dev/null" >"$T/sensors.json" || fail "sensors -j failed"
  "$DUMP" --sysfs-root "$root" --json >"$T/spd.json" || fail "spd_health_dump failed"
  /usr/bin/python3 - "$T/sensors.json" "$T/spd.json" <<'PY'
import json, sys
lm = json.load(open(sys.argv[1]))
spd = json.load(open(sys.argv[2]))
ours = {}
for s in spd:
    parts = s["name"].split("/")
    if parts[0] == "hwmon":
        ours[(parts[1], s["channel"])] = s
seen, checked = set(), 0
for chip_key, features in lm.items():
    chip = chip_key.split("-")[0]
    for feature, subs in features.items():
        if not isinstance(subs, dict):
            continue  # "Adapter"
        for sub, value in subs.items():
            channel, _, what = sub.partition("_")
            s = ours.get((chip, channel))
            if s is None:
                sys.exit(f"FAIL: sensors has {chip} {sub}, spd2 has no {chip}/{channel}")
            seen.add((chip, channel))
            mine = s["value"] if what == "input" else s.get(what)
            if mine is None:
                sys.exit(f"FAIL: {chip} {sub}: sensors {value}, spd2 none")
            if abs(mine - value) > 0.0006:
                sys.exit(f"FAIL: {chip} {sub}: sensors {value}, spd2 {mine}")
            checked += 1
missing = set(ours) - seen
if missing:
    sys.exit(f"FAIL: spd2 has channels sensors does not: {sorted(missing)}")
print(f"{checked} values of {len(seen)} channels agree")
PY
}

build_tree 0
compare || fail "first pass"
build_tree 777
compare || fail "after the values changed"
grep -q '"name": "thermal/x86_pkg_temp"' "$T/spd.json" || fail "no thermal zone in the dump"
echo "PASS"
