#!/usr/bin/env bash
# `npm run test:unit [-- FILES]`: the unit tier, every dist/test/unit/**/*.test.js (or the files
# given: test/unit/x.test.ts or dist/test/unit/x.test.js), after a build (`npx tsc -p tsconfig.json`).
# These tests need no root, no kernel, no network and no /run, and write only to os.tmpdir(); run as
# root (as CI is), they run as uid/gid 65534 with no groups (setpriv, from util-linux), so a test that
# does need root fails here instead of passing unnoticed. The full suite (`npm test`) runs them too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-files.sh
test_files scripts/test-unit.sh dist/test/unit "$@"
# Nothing of a run of the full suite or of a daemon leaks in: a unit test chooses its own paths.
unset SLUICE_STATE_DIR SLUICE_PIN_ROOT SLUICE_LOCK_DIR SLUICE_TEST_RUN_ID
if (($(id -u) != 0)); then
  exec node --test "${files[@]}"
fi
drop=(setpriv --reuid=65534 --regid=65534 --clear-groups)
command -v setpriv >/dev/null || { echo "scripts/test-unit.sh: setpriv missing (apt-get install util-linux)" >&2; exit 2; }
root=$PWD
# uid 65534 must be able to read the tree; a checkout under a private directory (/root/…) is not, so
# the tests then run from a linked copy in a temporary directory (hard links where the file system
# allows them, else a copy), removed afterwards.
if ! "${drop[@]}" test -r "$root/${files[0]}" 2>/dev/null; then
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-unit-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp"
  for p in bin dist node_modules build package.json bpf examples docs deploy; do
    [[ -e "$p" ]] || continue
    cp -al "$p" "$tmp/" 2>/dev/null || cp -a "$p" "$tmp/"
  done
  root=$tmp
  echo "scripts/test-unit.sh: $PWD is not readable by uid 65534; running from a copy in $tmp" >&2
fi
cd "$root"
HOME=/tmp "${drop[@]}" node --test "${files[@]}"
