#!/usr/bin/env bash
# Build the sdist, check what it carries, then install it from source in a fresh venv
# (`pip install --no-binary deepshift-edge`, the path piwheels and every platform
# without a wheel take) and run the test suite against that install.
#
#   usage: .ci/check_sdist.sh [OUTDIR]      (default OUTDIR: dist)
#   env:   PYTHON (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-dist}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== build the sdist, and a wheel from it"
$PY -m venv "$WORK/build-venv"
"$WORK/build-venv/bin/python" -m pip install -q --upgrade pip build
# Without --sdist/--wheel, build makes the sdist and then the wheel from that sdist.
"$WORK/build-venv/bin/python" -m build --outdir "$WORK/dist" .
SDIST=$(echo "$WORK"/dist/deepshift_edge-*.tar.gz)
WHEEL=$(echo "$WORK"/dist/deepshift_edge-*.whl)
mkdir -p "$OUT" && cp "$SDIST" "$OUT/"
echo "sdist: $OUT/$(basename "$SDIST")"

echo "== check their contents"
tar tzf "$SDIST" > "$WORK/files"
for need in src/deepshift_edge/engine/_kernels.pyx src/deepshift_edge/engine/_gemv.h setup.py \
            pyproject.toml MANIFEST.in tests/strategies.py LICENSE LICENSE-BasicMotions; do
  grep -q "^deepshift_edge-[^/]*/$need\$" "$WORK/files" || { echo "FAIL: sdist lacks $need"; exit 1; }
done
"$WORK/build-venv/bin/python" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for need in ("licenses/LICENSE", "licenses/LICENSE-BasicMotions"):
    assert any(n.endswith(".dist-info/" + need) for n in names), f"FAIL: wheel lacks {need}"
meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
text = zipfile.ZipFile(sys.argv[1]).read(meta).decode()
assert "License-Expression: MIT" in text, "FAIL: wheel METADATA has no License-Expression: MIT"
print("ok: wheel carries LICENSE and LICENSE-BasicMotions, License-Expression: MIT")
EOF
if grep -E '\.(c|so|o|pyd)$' "$WORK/files"; then
  echo "FAIL: sdist carries generated C or binaries (above); they must be rebuilt from the .pyx"
  exit 1
fi
echo "ok: .pyx and header present, no generated .c or binaries ($(wc -l < "$WORK/files") entries)"

echo "== install it from source (--no-binary) in a fresh venv"
$PY -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
# Cython comes from the sdist's build requirements (isolated build), NumPy as a wheel.
"$WORK/venv/bin/python" -m pip install -v --no-binary deepshift-edge "$SDIST" > "$WORK/install.log" 2>&1 \
  || { tail -40 "$WORK/install.log"; echo "FAIL: source install"; exit 1; }
grep -E "Cythonizing|Compiling src/deepshift_edge/_kernels.pyx|gcc|cc " "$WORK/install.log" | head -n 3 || true
"$WORK/venv/bin/python" -m pip install -q pytest hypothesis

echo "== run the suite from the unpacked sdist against the installed package"
tar xzf "$SDIST" -C "$WORK"
SRC=$(ls -d "$WORK"/deepshift_edge-*/)
# The unpacked sdist keeps the package under src/, which is not on sys.path: the tests
# import the installed copy (checked below), and read docs/, examples/, bench/ from here.
cd "$SRC"
"$WORK/venv/bin/python" - <<'EOF'
import numpy, deepshift_edge, os
assert "site-packages" in deepshift_edge.__file__, deepshift_edge.__file__
assert not deepshift_edge.debug_build()
print("installed:", os.path.dirname(deepshift_edge.__file__), "| numpy", numpy.__version__)
EOF
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider tests
