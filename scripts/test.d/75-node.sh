#!/usr/bin/env bash
# The Node package (node/): npm dependencies from the registry, the addon in release
# mode, `node --test` (API, every error code, processes, worker threads, the CLI and
# Python on one file, SIGKILL, event-loop liveness, fast-check), and `tsc --strict` on
# examples/node. The CLI test uses the workspace's statesafe binary (built here if
# missing); the Python part runs with stage 70's venv (or $STATESAFE_PYTHON, else
# python3) when it can import statesafe, and must run under CI=true.
set -euo pipefail
venv_python="${CARGO_TARGET_DIR:-$PWD/target}/python-venv/bin/python"
if [ -z "${STATESAFE_PYTHON:-}" ] && [ -x "$venv_python" ]; then
  export STATESAFE_PYTHON="$venv_python"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "!!! 75-node: SKIPPED LOUDLY: node and npm are not installed (Node 20 or later is needed)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "!!! 75-node: Node $(node --version) is too old; statesafe needs Node 20 or later" >&2
  exit 1
fi
cd node
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
[ -x ../target/debug/statesafe ] || [ -x ../target/release/statesafe ] || cargo build -p statesafe-cli --locked --quiet
npx --no-install tsc -p ../examples/node/tsconfig.json --noEmit
log=$(mktemp)
trap 'rm -f "$log"' EXIT
node --test --test-reporter=tap test/*.test.mjs 2>&1 | tee "$log"
# Every skipped test, loudly, in the run's summary: TAP marks it `ok N - name # SKIP why`.
if [ -n "${STATESAFE_SUMMARY:-}" ]; then
  sed -nE 's/^ *ok [0-9]+ - (.*) # SKIP ?(.*)$/SKIPPED 75-node test "\1": \2/p' "$log" >> "$STATESAFE_SUMMARY"
  # A part of a test that could not run (the test itself passes): `*** X part SKIPPED: why ***`.
  sed -nE 's/^(# )?\*\*\* (.+ part) SKIPPED: (.*) \*\*\*$/SKIPPED 75-node \2: \3/p' "$log" >> "$STATESAFE_SUMMARY"
fi
if [ -n "${STATESAFE_COUNTS:-}" ]; then
  # tsc on the examples counts as one test.
  echo $(( $(grep -Eo '^# pass [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+') + 1 )) >> "$STATESAFE_COUNTS"
fi
