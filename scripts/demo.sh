#!/usr/bin/env bash
# The main job of the README: installs and builds what is needed, then runs the two scenes of
# `sluice demo`, each in a lab of network namespaces it removes again: the packet scene (a live view
# of what four clients send and what Sluice passes, a live limit change) and the web scene
# (`sluice demo --http`: a web server kept usable under a flood). Needs root.
#   ./scripts/demo.sh [ARGS]           both scenes; ARGS go to both (e.g. --plain, --json)
#   ./scripts/demo.sh packets [ARGS]   the packet scene only (e.g. --duration 10s)
#   ./scripts/demo.sh http [ARGS]      the web scene only (e.g. --round http, --page-cpu 2ms)
set -euo pipefail
cd "$(dirname "$0")/.."
scene=both
case "${1:-}" in
  packets|http) scene=$1; shift ;;
esac
./scripts/setup.sh
if [ "$scene" = packets ]; then exec node bin/sluice.js demo "$@"; fi
if [ "$scene" = http ]; then exec node bin/sluice.js demo --http "$@"; fi
node bin/sluice.js demo "$@"
echo
exec node bin/sluice.js demo --http "$@"
