#!/usr/bin/env bash
# The Python package (python/, issue 13): installed the way its users install it
# (`pip install ./python` into a fresh virtual environment: maturin builds the release
# wheel through PEP 517), then its pytest suite and `mypy --strict` on examples/python.
# Needs only python3 (3.9+) with venv and pip, and the package registries.
set -euo pipefail
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target_dir/python-venv"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  pytest hypothesis mypy pydantic
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
  --no-deps ./python
echo "python: venv and wheel ready in $(( $(date +%s) - start ))s"
# The installed package, not the source tree (which has no compiled module).
(cd / && "$venv/bin/python" -c 'import statesafe; print("testing", statesafe.__file__, "BIG_INTS =", statesafe.BIG_INTS)')
# The `pytest` script (not `python -m pytest`), run from the repository's root: the
# tests' `python -c` children put their working directory first on sys.path, and in
# python/ that would import the source tree (which has no compiled module), not the
# installed package. Every skipped test appends `SKIPPED 70-python <test>: <why>` to
# $STATESAFE_SUMMARY (python/tests/conftest.py), printed in scripts/test's summary.
# Run by this venv's own interpreter: a venv copied with its `target/` (a git
# worktree's) keeps scripts whose `#!` names the original venv's interpreter, which
# would test the original checkout's installed package.
"$venv/bin/python" "$venv/bin/pytest" -q -rs --durations=8 -p no:cacheprovider python/tests 2>&1 | tee "$log"
"$venv/bin/python" "$venv/bin/mypy" --strict --no-incremental examples/python
echo "python: done in $(( $(date +%s) - start ))s"
if [ -n "${STATESAFE_COUNTS:-}" ]; then
  grep -Eo '[0-9]+ passed' "$log" | tail -1 | grep -Eo '[0-9]+' >> "$STATESAFE_COUNTS"
fi
