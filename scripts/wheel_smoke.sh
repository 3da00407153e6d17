#!/usr/bin/env bash
# Checks what a user of the wheel gets, away from this checkout:
#   1. python -m build makes the sdist, then builds the wheel from that sdist (not from the
#      tree), so a wheel that builds only with files the sdist lacks fails here;
#   2. the sdist holds no build outputs and both carry LICENSE;
#   3. the wheel's binaries: _core exports PyInit__core and nothing else, and _core and
#      sandbox_exec_launcher need only the C and C++ runtime libraries, with no RPATH/RUNPATH
#      (a library they need that a plain machine lacks would fail to load there);
#   4. in a fresh venv outside the repo (no system site packages), from a directory outside
#      the repo, with /usr/include and the shared libseccomp, libfmt and libspdlog hidden in a
#      private mount namespace (a machine without the -dev packages): a session runs cells
#      (state across cells, stdout, a traceback) and the CLI runs the example notebook.
# Prints a summary; exits 1 on any finding. Needs root (unshare --mount) and the network
# (build's isolated environment and the fresh venv install from the package index).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}   # needs the build package (scripts/setup.sh installs it)

work=$(mktemp -d /tmp/sandbox_exec-wheel-XXXXXX)
trap 'rm -rf "$work"' EXIT
findings=()
finding() { findings+=("$1"); echo "wheel_smoke: FINDING: $1" >&2; }

# -- 1. sdist, then the wheel from it ------------------------------------------------------
echo "wheel_smoke: python -m build (sdist, then the wheel from the sdist) into $work/dist" >&2
if ! CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
     "$PY" -m build --outdir "$work/dist" "$REPO" >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log" >&2
  echo "wheel_smoke: FAILED: python -m build" >&2
  exit 1
fi
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)

# -- 2. contents -----------------------------------------------------------------------------
tar tzf "$sdist" >"$work/sdist.list"
leaked=$(grep -E '^[^/]+/(build|\.venv|out|dist)/|__pycache__/|\.so$' "$work/sdist.list" || true)
[ -z "$leaked" ] || finding "sdist holds build outputs: $(echo "$leaked" | head -5 | tr '\n' ' ')"
grep -qE '^[^/]+/LICENSE$' "$work/sdist.list" || finding "sdist lacks LICENSE"
"$PY" -m zipfile -e "$wheel" "$work/whl"
ls "$work"/whl/*.dist-info/licenses/LICENSE >/dev/null 2>&1 || finding "wheel lacks dist-info/licenses/LICENSE"

# -- 3. the binaries -------------------------------------------------------------------------
core=$(ls "$work"/whl/sandbox_exec/_core*.so)
launcher=$work/whl/sandbox_exec/sandbox_exec_launcher
exports=$(nm -D --defined-only "$core" | awk '{print $NF}' | sort -u | paste -sd' ')
[ "$exports" = "PyInit__core" ] \
  || finding "_core exports $(echo $exports | wc -w) symbols, not PyInit__core alone: $(echo "$exports" | cut -c1-200)..."
# The C and C++ runtimes: present on every glibc system that runs a C++ program.
runtime='^(libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1|ld-linux[-a-z0-9_.]*\.so\.[0-9]+)$'
declare -A needed
for bin in "$core" "$launcher"; do
  name=$(basename "$bin")
  needed[$name]=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd' ')
  extra=$(printf '%s\n' ${needed[$name]} | grep -vE "$runtime" || true)
  [ -z "$extra" ] || finding "$name needs more than the C/C++ runtime: $(echo $extra)"
  if readelf -d "$bin" | grep -E '\((RPATH|RUNPATH)\)' >/dev/null; then
    finding "$name has an RPATH/RUNPATH"
  fi
done

# -- 4. install into a fresh venv and run it on a machine without the -dev packages --------
"$PY" -m venv "$work/venv"   # same interpreter the wheel was built for; no system site packages
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel" >"$work/pip.log" 2>&1 \
  || { tail -20 "$work/pip.log" >&2; echo "wheel_smoke: FAILED: pip install of the wheel" >&2; exit 1; }
mkdir "$work/run"
cat >"$work/smoke.py" <<'EOF'
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import sandbox_exec
import sandbox_exec._core as core

# The installed copy, not the checkout: this runs from outside the repo in a venv of its own.
assert Path(sandbox_exec.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), sandbox_exec.__file__
versions = (sandbox_exec.__version__, importlib.metadata.version("sandbox_exec"), core.__version__)
assert len(set(versions)) == 1, versions

with sandbox_exec.Sandbox(root=Path("sessions").resolve()) as box:
    s = box.session("smoke")
    r = s.run("x = 41")
    assert r.status == "ok", r
    r = s.run("print('hello', x + 1)\nx + 1")
    assert r.status == "ok" and r.stdout == "hello 42\n", r
    assert r.outputs[-1]["output_type"] == "execute_result", r.outputs
    assert r.outputs[-1]["data"]["text/plain"] == "42", r.outputs
    r = s.run("def f():\n    return 1 / 0\nf()")
    assert r.status == "error" and r.error["ename"] == "ZeroDivisionError", r
    assert "f()" in "\n".join(r.error["traceback"]), r.error
    s.close()
print("smoke: session ok (state kept, stdout, execute_result, error traceback)")

# The example notebook shipped in the package, through the installed console script.
out = Path("demo.executed.ipynb").resolve()
cli = Path(sys.executable).with_name("sandbox-exec")
proc = subprocess.run([str(cli), "run", "-q", "-o", str(out)], capture_output=True, text=True, timeout=300)
assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
nb = json.loads(out.read_text())
code = [c for c in nb["cells"] if c["cell_type"] == "code"]
assert code and all(c["execution_count"] for c in code), "a code cell did not run"
assert "HELLO FROM THE SANDBOX" in json.dumps(code[0]["outputs"]), code[0]["outputs"]
print(f"smoke: example notebook ok ({len(code)} code cells through {cli.name} run)")
EOF

# Hide the -dev files: an empty /usr/include and /dev/null in place of each shared libseccomp,
# libfmt and libspdlog (the runtime .so.N too: the wheel links libseccomp statically and
# spdlog/fmt header-only, so nothing may load them). Mounts made in a private namespace only.
hide=$(for f in /usr/lib/*/libseccomp.so* /usr/lib/*/libfmt.so* /usr/lib/*/libspdlog* \
                /usr/local/lib/libseccomp.so* /usr/local/lib/libfmt.so* /usr/local/lib/libspdlog*; do
         if [ -e "$f" ]; then realpath "$f"; fi; done | sort -u | paste -sd' ')
cat >"$work/hidden.sh" <<'EOF'
set -eu
mount -t tmpfs -o ro,size=4k none /usr/include
for f in $HIDE; do mount --bind /dev/null "$f"; done
# The hiding took: a header and a library that were there read as absent or empty.
[ -z "$(ls -A /usr/include)" ] || { echo "smoke: /usr/include still visible" >&2; exit 1; }
for f in $HIDE; do [ ! -s "$f" ] || { echo "smoke: $f still readable" >&2; exit 1; }; done
exec "$VENV_PY" "$SMOKE"
EOF
if (cd "$work/run" && env -u PYTHONPATH -u PYTHONHOME HIDE="$hide" VENV_PY="$work/venv/bin/python" \
      SMOKE="$work/smoke.py" unshare --mount --propagation private sh "$work/hidden.sh") \
      >"$work/smoke.log" 2>&1; then
  smoke="ok"
else
  smoke="FAILED"
  finding "smoke test in the fresh venv (-dev files hidden) failed: $(tail -1 "$work/smoke.log")"
fi

echo "== wheel_smoke summary"
echo "sdist:     $(basename "$sdist") ($(wc -l <"$work/sdist.list") entries)"
echo "wheel:     $(basename "$wheel") (built from the sdist)"
echo "_core:     exports $(echo $exports | wc -w): $(echo "$exports" | cut -c1-100); NEEDED: ${needed[$(basename "$core")]}"
echo "launcher:  NEEDED: ${needed[sandbox_exec_launcher]}"
echo "hidden:    /usr/include and $(echo $hide | wc -w) shared libraries: $hide"
echo "smoke:     $smoke (a fresh venv and a run directory under $work, removed on exit)"
sed 's/^/           /' "$work/smoke.log"
if ((${#findings[@]})); then
  echo "wheel_smoke: ${#findings[@]} finding(s):"
  printf '  - %s\n' "${findings[@]}"
  exit 1
fi
echo "wheel_smoke: ok"
