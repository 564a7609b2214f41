#!/usr/bin/env bash
# First command of the README: installs dependencies (Debian 12, as root), builds, and starts
# spd2 in dev mode in the foreground (Ctrl-C stops it cleanly). Extra arguments go to spd2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
exec ./build/spd2 "$@"
