#!/usr/bin/env bash
# Build the images offline: a Debian base bootstrapped from packages (no registry needed),
# and images installed from a wheelhouse that `pip download` fills on this host
# (pip inside the build never reaches the network).
#
#   images/build.sh base        bootstrap $BASE_IMAGE with debootstrap + docker import
#   images/build.sh wheels      fill the wheelhouse (needs PyPI, here only)
#   images/build.sh stage-cpu   stage image with tensorflow-cpu         (default)
#   images/build.sh stage-gpu   stage image with CUDA TensorFlow (large)
#   images/build.sh airflow     Airflow 3.3 + providers + this package
#   images/build.sh postgres    PostgreSQL 15 from Debian packages (for POSTGRES_IMAGE)
#   images/build.sh redis       Redis from Debian packages (for REDIS_IMAGE)
#   images/build.sh all         base, wheels, stage-cpu, airflow
#   images/build.sh stack       all, plus postgres and redis: docker-compose.yaml offline
#
# Environment: BASE_IMAGE (any Debian/Ubuntu image with python3.11 and python3-venv, e.g. a
# registry's python:3.11-slim-bookworm), TAG, WHEELS (wheelhouse dir), MIRROR (Debian).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${TAG:-0.1.0}
BASE_IMAGE=${BASE_IMAGE:-stylegan-airflow/base:bookworm}
WHEELS=${WHEELS:-$ROOT/images/.wheelhouse}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PY=${PY:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# One build at a time per wheelhouse: a second one (another test session, a second shell)
# would delete this one's wheel under it and tag half-built images.
mkdir -p "$WHEELS"
exec 9>"$WHEELS/.build.lock"
flock 9

base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base image $BASE_IMAGE exists"; return
  fi
  command -v debootstrap >/dev/null || { echo "debootstrap is needed (apt-get install debootstrap)" >&2; exit 2; }
  local rootfs; rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' RETURN
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,git,tini \
    bookworm "$rootfs" "$MIRROR" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE"
}

wheels() {  # $1: extras; fills $WHEELS/deps-$1 (the closure) and $WHEELS/self (this package)
  local deps="$WHEELS/deps-$1"
  mkdir -p "$deps" "$WHEELS/self"
  rm -f "$WHEELS"/self/*.whl
  "$PY" -m pip wheel -q --no-deps -w "$WHEELS/self" "$ROOT"
  local whl; whl=$(ls "$WHEELS"/self/stylegan_airflow-*.whl)
  # Wheels for the image's Python (Debian bookworm: CPython 3.11.2, glibc 2.36, x86_64).
  # pip evaluates python_full_version markers with this host's Python, not the target's:
  # redis needs async-timeout below 3.11.3 (Celery's broker fails without it), so it is named.
  local platforms=() n
  for n in $(seq 5 36); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  # Into a fresh directory, reusing the wheels already here: a dependency whose pin changed
  # must not leave its old wheel beside the new one (the images install every file here).
  # setuptools and wheel too, so `pip install .` builds offline from this wheelhouse.
  local fresh="$deps.new"
  rm -rf "$fresh"
  "$PY" -m pip download -q -d "$fresh" --find-links "$deps" --only-binary=:all: \
    --python-version 3.11 \
    --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64 \
    --platform any "${whl}[$1]" "setuptools>=77" wheel "async-timeout>=4.0.3"
  rm -f "$fresh"/stylegan_airflow-*.whl
  rm -rf "$deps"
  mv "$fresh" "$deps"
}

image() {  # $1: dockerfile dir, $2: tag, $3: extras
  # Context: the wheelhouse. Dependencies form their own layer, cached until they change;
  # only this package's wheel is reinstalled when the code changes.
  docker build -q -f "$ROOT/images/$1/Dockerfile" --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg DEPS="deps-$3" -t "$2" "$WHEELS" >/dev/null
  echo "built $2"
}

service_image() {  # $1: images/ dir (postgres, redis); context: that dir
  docker build -q --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg MIRROR="$MIRROR" \
    -t "stylegan-airflow/$1:$TAG" "$ROOT/images/$1" >/dev/null
  echo "built stylegan-airflow/$1:$TAG"
}

case "${1:-stage-cpu}" in
  base) base ;;
  wheels) wheels tf; wheels "airflow,celery" ;;
  stage-cpu) base; wheels tf; image stage "stylegan-airflow/stage-cpu:$TAG" tf ;;
  stage-gpu) base; wheels tf-gpu; image stage "stylegan-airflow/stage-gpu:$TAG" tf-gpu ;;
  airflow) base; wheels "airflow,celery"; image airflow "stylegan-airflow/airflow:$TAG" "airflow,celery" ;;
  postgres|redis) base; service_image "$1" ;;
  all|stack)
       base; wheels tf; image stage "stylegan-airflow/stage-cpu:$TAG" tf
       wheels "airflow,celery"; image airflow "stylegan-airflow/airflow:$TAG" "airflow,celery"
       if [ "$1" = stack ]; then service_image postgres; service_image redis; fi ;;
  *) echo "usage: images/build.sh [base|wheels|stage-cpu|stage-gpu|airflow|postgres|redis|all|stack]" >&2
     exit 2 ;;
esac
