# Shared by scripts/start_postgres.sh and scripts/start_docker.sh (sourced, not run): root, one
# caller at a time, and daemons that hold none of the caller's file descriptors.

# Messages go to stderr, prefixed with the script's name (stdout is for `export` lines).
log() { echo "$(basename "$0" .sh): $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Re-run the calling script as root through sudo, or die saying what needs root.
# Usage: need_root "installing and starting X" "$@"
need_root() {
  local why=$1
  shift
  [[ "$(id -u)" -eq 0 ]] && return 0
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E -- "$0" "$@"
  fi
  die "run as root (or install sudo): $why needs root"
}

# Several engineers (and CI steps) may call a start script at once: serialise on a lock file
# held on descriptor 9 until the script exits: $TMPDIR/mlops-start-<name>.lock.
serialise() {
  local lock
  lock="${TMPDIR:-/tmp}/mlops-$(basename "$0" .sh | tr _ -).lock"
  exec 9>"$lock"
  flock -w 300 9 || die "another $(basename "$0") held $lock for 300 s"
}

# Close every descriptor above 2 in the current (sub)shell. Call it in the subshell that execs
# a daemon: a daemon that inherits a lock descriptor (ours, 9, or a caller's such as
# `flock LOCK bash start_x.sh`, 3) holds that lock for its whole life.
close_inherited_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}
