#!/usr/bin/env bash
# Builds one configuration of SP Driver 2.0.
#   scripts/build.sh release   -> build/        (RelWithDebInfo: the daemon you run and benchmark)
#   scripts/build.sh tools     -> build/        (the same, only what the integration tests and
#                                               the crash sweep run: spd2, spdctl, spd_crash,
#                                               powercut_fs)
#   scripts/build.sh asan      -> build-asan/   (Debug: ASan + UBSan, where unit tests run;
#                                               the unit tests and the tools, no benches)
#   scripts/build.sh fuzz      -> build-fuzz/   (clang + libFuzzer targets)
#   scripts/build.sh tsan      -> build-tsan/   (ThreadSanitizer: the unit tests labelled
#                                               "threads", those that cross reactors/threads)
# Warnings are errors here (CI and development); a plain cmake build leaves SPD_WERROR off.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
jobs=${SPD_JOBS:-$(nproc)}
case "$kind" in
  release | tools) dir=build; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan) dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  fuzz) dir=build-fuzz; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPD_FUZZ=ON
                              -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++) ;;
  tsan) dir=build-tsan; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPD_TSAN=ON) ;;
  *) echo "usage: $0 release|tools|asan|fuzz|tsan" >&2; exit 2 ;;
esac
# Faster from-scratch builds (CMakeLists.txt says why): precompiled headers and unity batches.
# SPD_FAST_BUILD=0 turns both off (e.g. to check that every file includes what it uses).
if [ "${SPD_FAST_BUILD:-1}" = 1 ]; then
  args+=(-DSPD_PCH=ON -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8)
else
  args+=(-DSPD_PCH=OFF -DCMAKE_UNITY_BUILD=OFF)
fi
cmake -S . -B "$dir" -G Ninja -DSPD_WERROR=ON "${args[@]}" >/dev/null
if [ "$kind" = fuzz ]; then
  cmake --build "$dir" -j "$jobs" --target nbd_fuzz nbd_conn_fuzz apply_fuzz control_fuzz
elif [ "$kind" = tools ]; then
  cmake --build "$dir" -j "$jobs" --target integration_tools
elif [ "$kind" = asan ]; then
  # What the unit stage and the ASan integration pass run (the benches are not run there).
  cmake --build "$dir" -j "$jobs" --target unit_tests integration_tools
elif [ "$kind" = tsan ]; then
  cmake --build "$dir" -j "$jobs" --target threaded_tests
else
  cmake --build "$dir" -j "$jobs"
fi
