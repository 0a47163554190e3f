#!/usr/bin/env bash
# Build the project images without a registry (docker/README.md). Run from anywhere:
#   bash docker/build.sh base                      # mlops/debian:bookworm + mlops/python:3.11-bookworm
#   bash docker/build.sh runtime                   # mlops/runtime:0.1.0 (platform, ~7 GB)
#   bash docker/build.sh serving-runtime           # mlops/serving-runtime:0.1.0 (torch CPU)
#   bash docker/build.sh postgres                  # mlops/postgres:15 (Debian's PostgreSQL)
#   bash docker/build.sh prometheus                # mlops/prometheus:2.42 (Debian's Prometheus)
#   bash docker/build.sh stack                     # everything docker-compose.yml runs
# Per-model images: `mlops package VERSION` (mlops_assets/packaging.py), on serving-runtime.
# Environment: PY (python with pip, default .venv/bin/python), VERSION (0.1.0),
# DEBIAN_MIRROR (for debootstrap), PIP_FIND_LINKS (where torch==2.13.0+cpu lives: /opt/wheels
# on this machine, or the PyTorch CPU wheel index; it is not on PyPI). The base images are built
# only when missing (FORCE=1 builds them again); DOCKER_HOST is the engine
# (scripts/start_docker.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
VERSION=${VERSION:-0.1.0}
WHEELHOUSE=docker/runtime/wheelhouse
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "build.sh: $*"; }

# The wheelhouse is made on the host (the only step that reaches a package index); image
# builds then run with --network none and `pip install --no-index --find-links`.
wheelhouse() {
  local requirements=$1
  rm -rf "$WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  say "building the project wheel into $WHEELHOUSE"
  "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$WHEELHOUSE" .
  say "downloading the wheels of docker/runtime/$requirements"
  # The platform resolves at the lock's versions; the serving pins are checked against the
  # lock by tests/unit/test_lock.py (its torch is the CPU build, which the lock cannot name).
  if [[ "$requirements" == requirements-platform.txt ]]; then
    # Ludwig, gpustat and a few more are published as sdists only: `pip wheel` downloads the
    # wheels and builds those, at the lock's versions.
    "$PY" -m pip wheel --quiet --wheel-dir "$WHEELHOUSE" --find-links "$WHEELHOUSE" \
      -c requirements.lock -r "docker/runtime/$requirements" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    du -sh "$WHEELHOUSE"
    return
  fi
  local constraints=()
  "$PY" -m pip download --quiet --only-binary=:all: --dest "$WHEELHOUSE" \
    --find-links "$WHEELHOUSE" "${constraints[@]}" -r "docker/runtime/$requirements" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  du -sh "$WHEELHOUSE"
}

case "${1:-}" in
  base)
    if [ -z "${FORCE:-}" ] && docker image inspect mlops/python:3.11-bookworm >/dev/null 2>&1; then
      say "mlops/python:3.11-bookworm exists (FORCE=1 builds it again)"
      exit 0
    fi
    if [ -z "${FORCE:-}" ] && docker image inspect mlops/debian:bookworm >/dev/null 2>&1; then
      say "mlops/debian:bookworm exists"
    else
      rootfs=$(mktemp -d)
      say "debootstrap --variant=minbase bookworm $rootfs"
      debootstrap --variant=minbase bookworm "$rootfs" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >/dev/null
      # mktemp -d makes a 0700 folder; as the image's / it would lock every non-root user out.
      chmod 0755 "$rootfs"
      tar -C "$rootfs" -c . | docker import - mlops/debian:bookworm
      rm -rf "$rootfs"
    fi
    # --network host: apt-get inside the build reaches the Debian mirror.
    docker build --network host -t mlops/python:3.11-bookworm docker/base
    ;;
  runtime)
    wheelhouse requirements-platform.txt
    docker build --network none -t "mlops/runtime:$VERSION" docker/runtime
    ;;
  serving-runtime)
    wheelhouse requirements-serving.txt
    docker build --network none \
      --build-arg REQUIREMENTS=requirements-serving.txt --build-arg PROJECT_NO_DEPS=1 \
      -t "mlops/serving-runtime:$VERSION" docker/runtime
    ;;
  postgres)
    bash "$0" base
    # --network host: apt-get inside the build reaches the Debian mirror.
    docker build --network host -t mlops/postgres:15 docker/postgres
    ;;
  prometheus)
    bash "$0" base
    docker build --network host -t mlops/prometheus:2.42 docker/prometheus
    ;;
  stack)
    # The platform runtime is rebuilt only when missing (FORCE=1 rebuilds it): ~7 GB.
    bash "$0" postgres
    bash "$0" prometheus
    if [ -n "${FORCE:-}" ] || ! docker image inspect "mlops/runtime:$VERSION" >/dev/null 2>&1; then
      bash "$0" runtime
    else
      say "mlops/runtime:$VERSION exists (FORCE=1 builds it again)"
    fi
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
