#!/usr/bin/env bash
# The benchmark program (crates/statesafe-bench), once in --quick mode into a temporary
# output, so that it cannot rot. The committed docs/benchmarks.{md,svg} come from a full
# run and are never overwritten here. The run itself takes well under a minute.
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$(dirname "$0")/../.."
scripts/release-build
target_dir="${CARGO_TARGET_DIR:-target}"
args=(--quick --out-md "$out/benchmarks.md" --out-svg "$out/benchmarks.svg")
# The CLI section runs the release `statesafe` that scripts/release-build made with the
# bench (the binary users run; the debug build's timings and memory say little).
# Skips and missed targets go to the closing summary of scripts/test.
summary() { if [ -n "${STATESAFE_SUMMARY:-}" ]; then echo "$1" >> "$STATESAFE_SUMMARY"; fi; }
if [ -x "$target_dir/release/statesafe" ]; then
  args+=(--statesafe-bin "$target_dir/release/statesafe")
  sections=('## 5. Whole-process CLI timings')
else
  echo "SKIPPED: CLI timings (no $target_dir/release/statesafe)" >&2
  summary "SKIPPED 60-bench CLI timings: no $target_dir/release/statesafe"
  args+=(--only update,contended,load,memory)
  sections=()
fi
start=$(date +%s)
"$target_dir/release/statesafe-bench" "${args[@]}" 2>&1 | tee "$out/run.log"
elapsed=$(( $(date +%s) - start ))
# `cli: SKIPPED: hyperfine is not installed` and the like; `[MISSED] goal: figure`.
while IFS= read -r line; do
  summary "SKIPPED 60-bench ${line%%: SKIPPED*}: ${line#*SKIPPED: }"
done < <(grep -E '^[a-z-]+: SKIPPED: ' "$out/run.log" || true)
while IFS= read -r line; do
  summary "MISSED 60-bench target: ${line#*\[MISSED\] }"
done < <(grep -F '[MISSED]' "$out/run.log" || true)
for section in '## 1. Durable update' '## 2. Contended updates' '## 3. Load latency' \
  '## 4. Peak memory' "${sections[@]}"; do
  grep -qF "$section" "$out/benchmarks.md" || { echo "benchmark report lacks: $section" >&2; exit 1; }
done
grep -q '<svg' "$out/benchmarks.svg" || { echo "benchmark chart is not an SVG" >&2; exit 1; }
echo "bench --quick: ${elapsed}s"
if [ "$elapsed" -gt 60 ]; then
  echo "WARNING: bench --quick took ${elapsed}s (meant to stay under a minute)" >&2
fi
