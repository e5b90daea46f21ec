#!/usr/bin/env bash
# `npm run typecheck`: tsc --noEmit on every tsconfig of the project (today tsconfig.json, which covers
# src, test, bench and scripts); exits non-zero at the first one with a type error.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t configs < <(find . -name 'tsconfig*.json' -not -path './node_modules/*' -not -path './dist/*' -not -path './build/*' | sort)
for c in "${configs[@]}"; do
  echo "typecheck: ${c#./}"
  npx tsc --noEmit -p "$c"
done
