#!/usr/bin/env bash
# Fuzz a running model server from its own OpenAPI document with schemathesis.
#
#   bash scripts/fuzz_serving.sh URL [--cases N] [--spec FILE] [--seed S] [--checks LIST]
#                                    [--report-dir DIR] [--workers W]
#   bash scripts/fuzz_serving.sh --install-only      # just create or check the venv
#
# URL is the server's base (http://127.0.0.1:8000); the spec is URL/openapi.json unless --spec
# names a file. --cases is the number of generated cases to aim for across all endpoints
# (default 10000): schemathesis's per-operation fuzzing budget is set from it, and its coverage
# phase adds a few hundred deterministic edge cases on top. The count actually sent is read back
# from the NDJSON report (bench/fuzz.py), with every 5xx and the request that caused it.
#
# schemathesis lives in its own venv (~/.cache/mlops-fuzz-venv, pinned below): it needs
# rich>=13.9 and Ludwig pins rich~=12.4, so it cannot share the project's venv.
# A /feedback bearer token is sent when MLOPS_FEEDBACK_TOKEN is set (so bodies reach the label
# checks); /admin/reload is fuzzed without a token (each authorised call would redeploy).
# Exit status: 0 when no answer was a 5xx and every selected check passed.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
VENV="${MLOPS_FUZZ_VENV:-$HOME/.cache/mlops-fuzz-venv}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"

install() {
  # Created once, reused while it holds the pinned version.
  if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION"; then
    echo "fuzz: installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION" >&2
  fi
}

url="${1:?usage: fuzz_serving.sh URL|--install-only [--cases N] [--spec FILE] [--seed S]}"
shift
if [ "$url" = "--install-only" ]; then
  install
  exit 0
fi
cases=10000
spec=""
seed=""
checks="not_a_server_error,status_code_conformance,content_type_conformance"
checks+=",response_schema_conformance,positive_data_acceptance"
report_dir=""
workers=1
while [ $# -gt 0 ]; do
  case "$1" in
    --cases) cases="$2"; shift 2 ;;
    --spec) spec="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --checks) checks="$2"; shift 2 ;;
    --report-dir) report_dir="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    *) echo "fuzz_serving.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
url="${url%/}"

install

report_dir="${report_dir:-$(mktemp -d -t mlops-fuzz.XXXXXX)}"
mkdir -p "$report_dir"
location="${spec:-$url/openapi.json}"

# Three operations take bodies; GETs without parameters yield one fuzzing case each.
per_op=$(( (cases + 2) / 3 ))
# The checks go in the config file, not on the command line: a check named there cannot be
# turned off for one operation. A spec-valid body must get a 2xx (413 is fair: the byte bound
# is not in the spec), except on /feedback, where a well-formed label for an unknown request id
# is rightly refused.
config="$report_dir/schemathesis.toml"
{
  echo "[checks]"
  echo "enabled = false"
  for check in ${checks//,/ }; do
    echo "$check.enabled = true"
    if [ "$check" = positive_data_acceptance ]; then
      echo "$check.expected-statuses = [\"2xx\", \"401\", \"403\", \"413\"]"
    fi
  done
  echo
  echo "[[operations]]"
  echo 'include-path = "/feedback"'
  echo "checks = { positive_data_acceptance = { enabled = false } }"
  if [ -n "${MLOPS_FEEDBACK_TOKEN:-}" ]; then
    echo "headers = { Authorization = \"Bearer ${MLOPS_FEEDBACK_TOKEN}\" }"
  fi
} > "$config"

args=(run "$location" --max-examples "$per_op" --workers "$workers"
      --continue-on-failure --no-color --generation-database none
      --report ndjson --report-ndjson-path "$report_dir/events.ndjson"
      --request-timeout 60 --wait-for-schema 60)
[ -n "$spec" ] && args+=(--url "$url")
[ -n "$seed" ] && args+=(--seed "$seed")

echo "fuzz: $location, ~$cases cases ($per_op per operation), checks $checks" >&2
started=$(date +%s)
set +e
(cd "$report_dir" && "$VENV/bin/st" --config-file "$config" "${args[@]}") > "$report_dir/st.log" 2>&1
st_rc=$?
set -e
elapsed=$(( $(date +%s) - started ))
# schemathesis's own summary (failures with reproducing curl commands) and its case count.
awk '/= (FAILURES|SUMMARY) =/{p=1} p' "$report_dir/st.log" | cut -c1-2000 | tail -n 200
generated=$(grep -Eo '[0-9]+ generated' "$report_dir/st.log" | tail -1 | grep -Eo '[0-9]+' || true)
echo "fuzz: schemathesis generated ${generated:-0} cases in ${elapsed}s (exit $st_rc)"
set +e
"$VENV/bin/python" "$HERE/bench/fuzz.py" "$report_dir/events.ndjson" \
  --json "$report_dir/summary.json"
sum_rc=$?
set -e
echo "fuzz: report in $report_dir"
if [ "$st_rc" -ne 0 ] || [ "$sum_rc" -ne 0 ] || [ "${generated:-0}" -eq 0 ]; then
  exit 1
fi
