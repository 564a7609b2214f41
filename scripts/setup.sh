#!/usr/bin/env bash
# Installs every build and test dependency of SP Driver 2.0 from Debian packages.
# Idempotent: packages already present are skipped by apt-get. Run as root on Debian 12.
#   scripts/setup.sh    build, test and benchmark dependencies (bpftrace, promtool included;
#                       prometheus-cpp only for bench/exposer_compare; etcd for the cluster
#                       client's tests, nftables for tests/cluster's namespace harness)
set -euo pipefail

pkgs=(
  build-essential cmake ninja-build pkg-config git
  clang clang-format clang-tidy libclang-rt-14-dev
  liburing-dev libgtest-dev libgmock-dev
  libcli11-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  zlib1g-dev libcurl4-openssl-dev libsqlite3-dev libssl-dev libyaml-cpp-dev nlohmann-json3-dev
  python3-grpcio python3-protobuf python3-yaml openssl
  fio libnbd-bin libnbd-dev nbdkit qemu-utils python3-libnbd
  libfuse3-dev fuse3
  libgnutls28-dev gnutls-bin libmicrohttpd-dev
  iproute2 nftables procps curl python3-venv python3-pip
  lm-sensors
  systemtap-sdt-dev bpftrace prometheus
  prometheus-cpp-dev
  etcd-server etcd-client
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#pkgs[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Test-only Python packages from PyPI (tests/requirements-test.txt) go into a venv of the
# checkout, .venv-test/, never into the system Python. Debian's python3 makes it: the tests
# run it as .venv-test/bin/python3.
cd "$(dirname "$0")/.."
venv=.venv-test
req=tests/requirements-test.txt
if [ ! -x "$venv/bin/python3" ]; then
  /usr/bin/python3 -m venv "$venv"
fi
if ! cmp -s "$req" "$venv/requirements-installed.txt"; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements-installed.txt"
fi
echo "setup: test venv $venv ready"
