#!/usr/bin/env bash
# Create or reuse the project's virtual environment and point .venv at it.
#
# The venv is about 7 GB (torch, Ludwig, Ray, Dagster, MLflow), so it lives outside the clone in
# ${MLOPS_VENV_CACHE:-~/.cache/mlops-venvs}/<key>, where <key> hashes the dependency lists in
# pyproject.toml, requirements.lock and the Python version. Every package is installed at the
# version requirements.lock names (pip constraints), so two fresh machines get the same venv. A new key builds a new venv from scratch; an
# unchanged key reuses the finished one. `.venv` in the repo root is a symlink to it.
# Idempotent: safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

key=$("$PY" - <<'PYEOF'
import hashlib, sys, tomllib
with open("pyproject.toml", "rb") as fh:
    project = tomllib.load(fh)["project"]
extras = sorted((k, sorted(v)) for k, v in project.get("optional-dependencies", {}).items())
with open("requirements.lock", "rb") as fh:
    lock = hashlib.sha256(fh.read()).hexdigest()
blob = repr((sorted(project["dependencies"]), extras, lock, sys.version_info[:2])).encode()
print(hashlib.sha256(blob).hexdigest()[:16])
PYEOF
)
cache=${MLOPS_VENV_CACHE:-$HOME/.cache/mlops-venvs}
venv="$cache/$key"

if [ ! -f "$venv/.complete" ]; then
  echo "==> building a new virtual environment $venv (first time: several minutes)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install --progress-bar off -c requirements.lock -e '.[dev]'
  "$venv/bin/pip" check
  touch "$venv/.complete"
else
  echo "==> reusing virtual environment $venv"
fi

# Point the editable install at *this* clone (the cached venv may have been built by another).
"$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e . >/dev/null
if [ -e .venv ] && [ ! -L .venv ]; then
  echo "==> .venv exists and is not a link; moving it aside to .venv.old"
  rm -rf .venv.old && mv .venv .venv.old
fi
ln -sfn "$venv" .venv

# Keep the two newest environments; they are large.
ls -1dt "$cache"/*/ 2>/dev/null | tail -n +3 | while read -r old; do
  [ "${old%/}" = "$venv" ] || rm -rf "$old"
done
