#!/usr/bin/env bash
# Start a private Docker engine for image builds and container tests; safe to run again.
#
#   eval "$(scripts/start_docker.sh | grep '^export ')"   # installs if missing, starts, exports
#   scripts/start_docker.sh --stop                        # stops the engine this script started
#
# Installs Debian's docker.io when dockerd is missing, then starts a dockerd of its own: its
# own data root, exec root, socket and pid file, the overlay2 storage driver, no bridge and no
# iptables rules (containers run with --network host only: this workplace allows no bridge
# traffic). It waits until the engine answers, then prints `export DOCKER_HOST=...` on stdout
# (everything else goes to stderr). A running engine that this script started (its pid file)
# is reused; --stop stops only that process, by its pid, never another dockerd.
# Overrides: MLOPS_DOCKER_ROOT (/var/lib/mlops-docker), MLOPS_DOCKER_RUN (/run/mlops-docker),
# MLOPS_DOCKER_SOCK (/run/mlops-docker.sock), MLOPS_DOCKER_LOG (/var/log/mlops-docker.log).
set -euo pipefail

DATA_ROOT="${MLOPS_DOCKER_ROOT:-/var/lib/mlops-docker}"
RUN_DIR="${MLOPS_DOCKER_RUN:-/run/mlops-docker}"
SOCK="${MLOPS_DOCKER_SOCK:-/run/mlops-docker.sock}"
LOG_FILE="${MLOPS_DOCKER_LOG:-/var/log/mlops-docker.log}"
PID_FILE="$RUN_DIR/dockerd.pid"
HOST_URL="unix://$SOCK"

# shellcheck source=scripts/lib/daemons.sh
source "$(dirname "$0")/lib/daemons.sh"
need_root "installing and starting dockerd" "$@"

serialise

# The pid in our pid file, if that process is alive and is the dockerd on our socket.
our_pid() {
  local pid
  [[ -s "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "dockerd .*-H $HOST_URL" || return 1
  echo "$pid"
}

answers() { docker -H "$HOST_URL" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if [[ "${1:-}" == "--stop" ]]; then
  if pid="$(our_pid)"; then
    log "stopping dockerd (pid $pid; it stops its containers and its containerd)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd $pid still running after 30 s; sending SIGKILL"
      kill -KILL "$pid"
    fi
    rm -f "$PID_FILE"
  else
    log "no dockerd started by this script is running (pid file $PID_FILE)"
  fi
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "dockerd is not installed; installing docker.io from Debian (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 9>&-
  apt-get install -y -qq --no-install-recommends docker.io >&2 9>&-
fi
command -v dockerd >/dev/null 2>&1 || die "no dockerd after installing docker.io"
command -v docker >/dev/null 2>&1 || die "no docker client on PATH"

if pid="$(our_pid)"; then
  log "dockerd already running (pid $pid) on $HOST_URL"
else
  install -d -m 0711 "$DATA_ROOT"
  install -d -m 0755 "$RUN_DIR"
  rm -f "$PID_FILE" "$SOCK"
  log "starting dockerd on $HOST_URL (data root $DATA_ROOT, log $LOG_FILE)"
  # No inherited descriptor (lib/daemons.sh). setsid: it gets its own session, so a
  # caller's Ctrl-C or process-group kill does not reach it.
  (
    close_inherited_fds
    exec setsid dockerd \
      -H "$HOST_URL" \
      --data-root "$DATA_ROOT" \
      --exec-root "$RUN_DIR/exec" \
      --pidfile "$PID_FILE" \
      --storage-driver=overlay2 \
      --iptables=false \
      --ip-masq=false \
      --bridge=none \
      </dev/null >>"$LOG_FILE" 2>&1 &
  )
fi

for _ in $(seq 1 120); do
  if answers; then
    break
  fi
  sleep 0.5
done
answers || die "dockerd did not answer on $HOST_URL within 60 s (see $LOG_FILE)"
our_pid >/dev/null || die "something answers on $HOST_URL but it is not the dockerd in $PID_FILE"

driver="$(docker -H "$HOST_URL" info --format '{{.Driver}}')"
[[ "$driver" == "overlay2" ]] || die "dockerd runs with storage driver '$driver', not overlay2"
log "ready: Docker $(docker -H "$HOST_URL" version --format '{{.Server.Version}}') on $HOST_URL, pid $(our_pid), storage $driver"
echo "export DOCKER_HOST=$HOST_URL"
