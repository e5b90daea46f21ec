#!/usr/bin/env bash
# Installs what Sluice needs on a Debian 12 machine (as root) and builds it. Idempotent: packages
# already present are not reinstalled, npm ci runs only when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the console's browser tests (test/e2e/console.test.ts) drive Debian's build through
# playwright-core (pinned in package.json to the release whose protocol matches its major); no
# browser is downloaded. redis-server (with redis-tools' redis-cli): the fleet test and bench:fleet
# start their own on loopback ports (docs/fleet.md); the packaged service is not what they use.
# util-linux: setpriv, with which the unit tier drops root (scripts/test-unit.sh).
PKGS=(clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 make g++ python3 pkg-config iputils-ping procps util-linux chromium redis-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Installed here for the tests, not as a service of this machine: the package's own instance on
  # port 6379 is stopped and disabled again (where systemd runs; elsewhere it was never started).
  if [[ " ${missing[*]} " == *" redis-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi

# Pins live in the BPF filesystem.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# npm ci also builds the native addon (the package's install script runs node-gyp against the
# headers in /usr/include/node, see .npmrc).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ ! -f build/Release/sluice_native.node ]; then
  npm ci --no-audit --no-fund
elif [ -n "$(find native binding.gyp -newer build/Release/sluice_native.node 2>/dev/null)" ]; then
  npm run --silent build:native >/dev/null   # the addon's sources changed since it was built
fi
make -s -C bpf
make -s -C bpf/lab
npx tsc -p tsconfig.json
