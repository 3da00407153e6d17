#!/usr/bin/env bash
# Every test: sets up what is missing, runs the gates (ruff, mypy; clang-format, clang-tidy),
# the C++ suite (GoogleTest via ctest: plain, under AddressSanitizer+UBSan and under
# ThreadSanitizer; each run includes real sessions with the real Python worker through that
# build's supervisor and launcher, tests_cpp/supervisor/python_worker_test.cc), the fuzz
# targets for a short bound (scripts/fuzz.sh: libFuzzer and atheris), the Python
# suite (pytest, ladders A, B and C, on warm sessions; the isolation suites once more on cold
# ones) and the wheel smoke test (scripts/wheel_smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"   # cmake and ninja from the venv
bash scripts/lint_python.sh
bash scripts/lint_cpp.sh

# The sanitizer presets stop at the first report (CMakePresets.json's test environments:
# halt_on_error, -fno-sanitize-recover); docs/reliability.md, "Sanitizers".
for preset in dev asan tsan; do
  echo "== C++ tests ($preset)" >&2
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" >/dev/null
  ctest --preset "$preset"
done
echo "== fuzz targets, 25 s each (docs/reliability.md, \"Fuzzing\")" >&2
bash scripts/fuzz.sh 25

echo "== Python tests" >&2
# A fresh base directory for tmp_path: pytest's own cleanup of older numbered directories
# recurses and would stop on a deep tree a failed run left there.
basetemp=$(mktemp -d /tmp/sandbox_exec-pytest-XXXXXX)
trap 'rm -rf "$basetemp" 2>/dev/null || true' EXIT
.venv/bin/python -m pytest tests_py -q -p no:cacheprovider --basetemp="$basetemp/warm"
echo "== Python isolation tests again, every session started cold (the path without a zygote)" >&2
.venv/bin/python -m pytest tests_py/test_adversarial.py tests_py/test_layers.py tests_py/test_lifecycle.py \
  tests_py/test_boundary_uids.py -q -p no:cacheprovider --basetemp="$basetemp/cold" --cold
bash scripts/wheel_smoke.sh   # the wheel, built from the sdist, installed and run away from this checkout
