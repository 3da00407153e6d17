#!/usr/bin/env bash
# Installs whatever is missing for building and testing sandbox_exec, then (re)builds the
# package into .venv in editable mode. Safe to run again: it only installs what is absent.
#
#   Debian packages: a C++ compiler, Boost (Interprocess), spdlog, GoogleTest, libseccomp,
#                    nlohmann-json (the supervisor's check of the worker's JSON)
#                    clang-format, clang-tidy (the C++ gates of scripts/lint_cpp.sh)
#                    clang-14, libclang-rt-14-dev (libFuzzer: scripts/fuzz.sh)
#   .venv:           sandbox_exec (editable) with the test extra (pytest, ruff, mypy, ...),
#                    the benchmark extra, the fuzz extra (atheris: scripts/fuzz.sh), the ray
#                    extra (sandbox_exec.ray and its tests on a local Ray cluster), and
#                    build (python -m build: scripts/wheel_smoke.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(g++ make pkg-config libboost-dev libspdlog-dev libgtest-dev libseccomp-dev nlohmann-json3-dev python3-venv
              clang-format clang-tidy clang-14 libclang-rt-14-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# Build dependencies are installed up front so the editable build can run without build
# isolation (faster rebuilds, same compiler flags every time); build makes the sdist and
# the wheel (python -m build, scripts/wheel_smoke.sh).
.venv/bin/python -m pip install -q "scikit-build-core>=0.11" "pybind11>=2.12" cmake ninja build
echo "setup: building sandbox_exec into .venv" >&2
.venv/bin/python -m pip install -q --no-build-isolation -e ".[test,bench,fuzz,ray]"
