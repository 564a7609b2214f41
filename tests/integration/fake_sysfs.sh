# A fake sysfs tree for the health tests (sourced; not a test itself): fake_sysfs ROOT builds
# three hwmon chips and a thermal zone under ROOT/class; fake_put ROOT FILE VALUE rewrites one
# attribute in place (same inode, as sysfs does: spd2 keeps the files open).
# fake_sysfs_many ROOT N: N temperature channels on ceil(N/16) chips (bench/health).
fake_put() {
  mkdir -p "$(dirname "$1/$2")"
  echo "$3" >"$1/$2"
}
fake_sysfs() {
  local r=$1 h=class/hwmon
  fake_put "$r" $h/hwmon0/name spdcpu
  fake_put "$r" $h/hwmon0/temp1_input 42500
  fake_put "$r" $h/hwmon0/temp1_label "Package id 0"
  fake_put "$r" $h/hwmon0/temp1_max 80000
  fake_put "$r" $h/hwmon0/temp1_crit 100000
  fake_put "$r" $h/hwmon0/temp2_input 38125
  fake_put "$r" $h/hwmon0/temp2_label "Core 0"
  fake_put "$r" $h/hwmon1/name spdboard
  fake_put "$r" $h/hwmon1/fan1_input 1234
  fake_put "$r" $h/hwmon1/fan1_min 300
  fake_put "$r" $h/hwmon1/in0_input 1104
  fake_put "$r" $h/hwmon1/in0_label Vcore
  fake_put "$r" $h/hwmon1/power1_input 45250000
  fake_put "$r" $h/hwmon1/curr1_input 2500
  fake_put "$r" $h/hwmon2/name spdpsu
  fake_put "$r" $h/hwmon2/temp1_input 51000
  fake_put "$r" $h/hwmon2/temp1_label "PSU inlet"
  fake_put "$r" $h/hwmon2/temp1_crit 70000
  fake_put "$r" class/thermal/thermal_zone0/type x86_pkg_temp
  fake_put "$r" class/thermal/thermal_zone0/temp 52000
}
fake_sysfs_many() {
  local r=$1 n=$2 i chip ch
  for ((i = 0; i < n; i++)); do
    chip=$((i / 16))
    ch=$((i % 16 + 1))
    [ -f "$r/class/hwmon/hwmon$chip/name" ] || fake_put "$r" "class/hwmon/hwmon$chip/name" "bench$chip"
    fake_put "$r" "class/hwmon/hwmon$chip/temp${ch}_input" $((30000 + i * 100))
    fake_put "$r" "class/hwmon/hwmon$chip/temp${ch}_max" 90000
  done
}
