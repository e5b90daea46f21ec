#!/usr/bin/env bash
# The main job of the README: installs and builds what is needed, then runs `sluice demo` (a lab in
# network namespaces, Sluice protecting its server, a live view). Needs root. Extra arguments go to
# `sluice demo` (e.g. --duration 10s, --plain).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec node bin/sluice.js demo "$@"
