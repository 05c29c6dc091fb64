#!/usr/bin/env bash
# Evaluate and gate a candidate in any CI system; writes gate.xml (JUnit), gate.json and gate.md
# (for a PR comment) to $OUT and exits like the gate: 0 promote, 1 reject, 2 error.
#
#   examples/ci/gate.sh [PLAN]           (from the repository root; PLAN defaults to examples/ci/plan.yaml)
#
# Environment: TUNEGATE_STORE (store path or URL, e.g. postgresql+psycopg://ci@db/tunegate for a shared
# store), POLICY (default examples/ci/gate.yaml), CANDIDATE (default ci/lora: RUN/TRIAL, t<id> or a
# model name), BASELINE (optional), OUT (default gate-report), SKIP_RUN=1 to gate results already in
# the store, TUNEGATE (the command, default `tunegate`).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plan="${1:-$here/plan.yaml}"
policy="${POLICY:-$here/gate.yaml}"
candidate="${CANDIDATE:-ci/lora}"
out="${OUT:-gate-report}"
tunegate="${TUNEGATE:-tunegate}"

mkdir -p "$out"
rm -f "$out/gate.xml" "$out/gate.json" "$out/gate.md"

if [ -z "${SKIP_RUN:-}" ]; then
  "$tunegate" run "$plan"
  rc=$?
  # exit 1 = some trial failed: the gate below reports it (a failed candidate is exit 2 there)
  if [ "$rc" -ge 2 ]; then
    echo "gate.sh: tunegate run failed (exit $rc)" >&2
    exit 2
  fi
fi

args=(gate --policy "$policy" --candidate "$candidate"
      --junit "$out/gate.xml" --json "$out/gate.json" --markdown "$out/gate.md")
if [ -n "${BASELINE:-}" ]; then
  args+=(--baseline "$BASELINE")
fi
"$tunegate" "${args[@]}"
code=$?

# Trust the exit code only when the decision file agrees: a crash also exits 1, and must not read as
# a mere rejection (nor anything else as a promotion).
verdict="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["verdict"])' "$out/gate.json" \
           2>/dev/null || echo missing)"
case "$verdict:$code" in
  promote:0) echo "gate.sh: PROMOTE" ;;
  reject:1)  echo "gate.sh: REJECT" ;;
  *)         echo "gate.sh: ERROR (verdict $verdict, exit $code)" >&2; code=2 ;;
esac
exit "$code"
