#!/usr/bin/env bash
# Builds one configuration of SP Driver 2.0.
#   scripts/build.sh release   -> build/        (RelWithDebInfo: the daemon you run and benchmark)
#   scripts/build.sh asan      -> build-asan/   (Debug: ASan + UBSan, where unit tests run)
#   scripts/build.sh fuzz      -> build-fuzz/   (clang + libFuzzer targets)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
jobs=${SPD_JOBS:-$(nproc)}
case "$kind" in
  release) dir=build; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  fuzz) dir=build-fuzz; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPD_FUZZ=ON
                              -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++) ;;
  *) echo "usage: $0 release|asan|fuzz" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" -G Ninja "${args[@]}" >/dev/null
if [ "$kind" = fuzz ]; then
  cmake --build "$dir" -j "$jobs" --target nbd_fuzz nbd_conn_fuzz
else
  cmake --build "$dir" -j "$jobs"
fi
