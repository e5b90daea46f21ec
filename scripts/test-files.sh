# Sourced by scripts/test.sh and scripts/test-unit.sh: test_files NAME DIR [FILE...] sets the array
# `files` to the files given (test/…/x.test.ts stands for its compiled dist/test/…/x.test.js), or,
# with none, to every *.test.js under DIR, sorted. A file that does not exist, or no test at all,
# ends the calling script with status 2 and says what to give (NAME is the calling script).
test_files() {
  local name=$1 dir=$2 f
  shift 2
  files=()
  if (($#)); then
    for f in "$@"; do
      case "$f" in
        test/*.ts) f="dist/${f%.ts}.js" ;;
      esac
      if [[ ! -f "$f" ]]; then
        echo "$name: no test file ${f} (give test/…/x.test.ts or dist/test/…/x.test.js, after npx tsc -p tsconfig.json)" >&2
        exit 2
      fi
      files+=("$f")
    done
  elif [[ -d "$dir" ]]; then
    mapfile -t files < <(find "$dir" -name '*.test.js' | sort)
  fi
  if ((${#files[@]} == 0)); then
    echo "$name: no test in $dir (build first: npx tsc -p tsconfig.json)" >&2
    exit 2
  fi
}
