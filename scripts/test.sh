#!/usr/bin/env bash
# The test command of the README: installs and builds what is needed, then runs every test through
# the real kernel (BPF_PROG_TEST_RUN and network namespaces). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
node dist/scripts/gen-types.js --check
# `npm test` runs every test; `npm test -- test/limiter/units.test.ts …` the files given (sources
# or their compiled dist/test/…/*.test.js).
source scripts/test-files.sh
test_files scripts/test.sh dist/test "$@"
export SLUICE_TEST_RUN_ID="${SLUICE_TEST_RUN_ID:-sl$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-6)}"
# Settings, locks and the daemon lock of this run in a directory of its own, so that two runs side
# by side (or a daemon of the machine) never share a state directory.
export SLUICE_STATE_DIR="${SLUICE_STATE_DIR:-/run/sluice-test-$SLUICE_TEST_RUN_ID}"
trap 'rm -rf "$SLUICE_STATE_DIR"' EXIT
node --test --test-concurrency=1 "${files[@]}"
