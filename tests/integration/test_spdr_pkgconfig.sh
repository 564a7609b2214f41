# libspdr as a user gets it: cmake --install into a temporary prefix, then examples/ compiled
# against it with nothing but `pkg-config --cflags --libs spdr`, and run on a cache that
# spd_health_dump wrote from a fake sysfs tree.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$(dirname "${SPD2:-$src/build/spd2}")
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
[ -x "$build/spd_health_dump" ] || fail "build spdr and spd_health_dump in $build first"
T=$(mktemp -d /tmp/spd-spdr-pc.XXXXXX)
trap 'rm -rf "$T"' EXIT
cmake --install "$build" --prefix "$T/prefix" --component spdr >"$T/install.log" ||
  fail "cmake --install: $(cat "$T/install.log")"
pc=$(find "$T/prefix" -name spdr.pc)
[ -n "$pc" ] || fail "no spdr.pc installed"
[ -f "$T/prefix/include/spd/libspdr.h" ] || fail "no header installed"
ls "$T/prefix"/lib*/libspdr.so.0 >/dev/null 2>&1 || ls "$T"/prefix/lib*/*/libspdr.so.0 >/dev/null ||
  fail "no libspdr.so.0 installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir spdr)
# A sanitizer build's libspdr (CI's integration-asan stage) needs its runtime loaded first: the
# examples are built with the same sanitizers then. (grep -c reads all of ldd's output: grep -q
# leaving at the first match made ldd's next write a SIGPIPE, under pipefail a "no" now and then,
# and the examples were built without the runtime: "ASan runtime does not come first".)
san=()
if ldd "$libdir/libspdr.so" | grep -c libasan >/dev/null; then san=(-fsanitize=address,undefined); fi
# shellcheck disable=SC2046  # pkg-config's flags are meant to be split
cc -std=c11 -Wall -Wextra -Werror "${san[@]}" "$src/examples/sensor_read.c" $(pkg-config --cflags --libs spdr) \
  -Wl,-rpath,"$libdir" -o "$T/sensor_read" 2>&1 || fail "examples/sensor_read.c did not build"
# shellcheck disable=SC2046
c++ -std=c++17 -Wall -Wextra -Werror "${san[@]}" "$src/examples/snapshot.cpp" $(pkg-config --cflags --libs spdr) \
  -Wl,-rpath,"$libdir" -o "$T/snapshot" 2>&1 || fail "examples/snapshot.cpp did not build"
mkdir -p "$T/sys/class/hwmon/hwmon0"
echo spdfake >"$T/sys/class/hwmon/hwmon0/name"
echo 42500 >"$T/sys/class/hwmon/hwmon0/temp1_input"
echo CPU >"$T/sys/class/hwmon/hwmon0/temp1_label"
"$build/spd_health_dump" --sysfs-root "$T/sys" --cache "$T/cache" --keep >/dev/null
"$T/sensor_read" --cache "$T/cache" hwmon/spdfake/CPU >"$T/out" || fail "sensor_read failed"
grep -q '^hwmon/spdfake/CPU = 42.500 C' "$T/out" || fail "sensor_read printed: $(cat "$T/out")"
"$T/snapshot" "$T/cache" >"$T/out" || fail "snapshot failed"
grep -q 'hwmon/spdfake/CPU .* 42.500 C ' "$T/out" || fail "snapshot printed: $(cat "$T/out")"
echo PASS
