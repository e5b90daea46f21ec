#!/usr/bin/env bash
# Build another commit's data path and control plane into DIR, for side-by-side benchmarks:
#   scripts/baseline.sh COMMIT DIR      then   npm run bench:decision -- --baseline-objects DIR
# DIR gets sluice.bpf.o, sluice_test.bpf.o, bench.bpf.o, that commit's compiled TypeScript (dist/:
# its Limiter writes its own maps, whose layouts may differ from this commit's) and COMMIT.
# Uses a temporary git worktree, removed again; node_modules are this checkout's (hard links).
set -euo pipefail
cd "$(dirname "$0")/.."
commit=${1:?usage: scripts/baseline.sh COMMIT DIR}
dir=${2:?usage: scripts/baseline.sh COMMIT DIR}
sha=$(git rev-parse --verify "$commit^{commit}")
tree=$(mktemp -d /tmp/sluice-baseline-XXXXXX)
cleanup() { git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"; }
trap cleanup EXIT
git worktree add -q --detach "$tree" "$sha"
cp -al node_modules "$tree/node_modules"
make -s -C "$tree/bpf"
(cd "$tree" && npx tsc -p tsconfig.json)
mkdir -p "$dir"
cp "$tree"/bpf/sluice.bpf.o "$tree"/bpf/sluice_test.bpf.o "$tree"/bpf/bench.bpf.o "$dir"/
rm -rf "$dir/dist" && cp -r "$tree/dist" "$dir/dist"
ln -sfn "$(pwd)/node_modules" "$dir/node_modules"   # what its dist/ requires (ipaddr.js …)
echo "$sha" > "$dir/COMMIT"
echo "baseline of ${sha:0:12} in $dir"
