#!/usr/bin/env bash
# `npm run format -- FILES` formats the files given; `npm run format:check -- FILES` only reports the
# ones that are not formatted (exit 1). Without FILES: the files changed since the last commit
# (staged, unstaged, untracked). TypeScript, JavaScript, JSON and YAML go through prettier
# (.prettierrc; .prettierignore leaves out generated files, C and Markdown), C through clang-format
# (.clang-format; Debian's clang-format package). The rule (README, "Contributing"): format only
# what a commit touches; never reformat files the commit does not otherwise change.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [[ "${1:-}" == "--check" ]]; then check=1; shift; fi
files=("$@")
if ((${#files[@]} == 0)); then
  mapfile -t files < <({ git diff --name-only --diff-filter=ACMR HEAD; git ls-files --others --exclude-standard; } | sort -u)
fi
c=() other=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || { echo "format: no file ${f}" >&2; exit 2; }
  case "$f" in
    *.c|*.h) c+=("$f") ;;
    *) other+=("$f") ;;
  esac
done
rc=0
if ((${#other[@]})); then
  if ((check)); then npx prettier --check --ignore-unknown "${other[@]}" || rc=1
  else npx prettier --write --ignore-unknown "${other[@]}"; fi
fi
if ((${#c[@]})); then
  if ! command -v clang-format >/dev/null; then
    echo "format: clang-format is not installed (apt-get install clang-format) for ${c[*]}" >&2; exit 2
  fi
  if ((check)); then clang-format --dry-run --Werror "${c[@]}" || rc=1
  else clang-format -i "${c[@]}"; fi
fi
exit "$rc"
