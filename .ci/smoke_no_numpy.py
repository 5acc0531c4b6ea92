"""NumPy-free smoke test of an installed deepshift_edge wheel.

For wheels whose platform has no NumPy wheel on PyPI (manylinux armv7l: installing the
test suite's NumPy there means compiling it from source under emulation). cibuildwheel
installs the wheel with PIP_NO_DEPS=1 for those, and this script then checks what can be
checked without NumPy:

  * the compiled core loads on this interpreter/CPU (no missing symbols, no illegal
    instruction in module init), straight from the installed file, without running the
    package's __init__ (which imports NumPy);
  * it is the release build (bounds checks off), and its Python face is there;
  * nothing imported NumPy along the way (a NumPy import fails loudly here).

The full suite on armv7l runs in the workflow's Debian armhf job (apt's NumPy) and in
shared/tools/arm-check.sh. Usage: python smoke_no_numpy.py  (exit 0 = pass)
"""
import importlib.machinery
import importlib.util
import os
import platform
import sys


class _NoNumPy:
    """Meta-path hook: any attempt to import numpy is a test failure."""

    def find_spec(self, name, path=None, target=None):
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError(f"smoke test must not import NumPy (tried {name!r})")
        return None


def _find_extension():
    for entry in sys.path:
        pkg = os.path.join(entry or os.curdir, "deepshift_edge", "engine")
        if not os.path.isdir(pkg):
            continue
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = os.path.join(pkg, "_kernels" + suffix)
            if os.path.isfile(candidate):
                return candidate
    raise SystemExit("FAIL: no installed deepshift_edge/engine/_kernels extension on sys.path")


def main():
    sys.meta_path.insert(0, _NoNumPy())
    path = _find_extension()
    loader = importlib.machinery.ExtensionFileLoader("deepshift_edge.engine._kernels", path)
    spec = importlib.util.spec_from_file_location("deepshift_edge.engine._kernels", path, loader=loader)
    kernels = importlib.util.module_from_spec(spec)
    loader.exec_module(kernels)

    assert kernels.debug_build() is False, "a release wheel must not be the DSE_DEBUG build"
    core = kernels.StreamCore()  # allocation + __cinit__ / dealloc of an empty core
    for name in ("_setup", "push", "_run_block", "_reset_rows"):
        assert callable(getattr(core, name)), name
    del core
    assert "numpy" not in sys.modules, "NumPy was imported"
    print(f"OK: {os.path.basename(path)} loads and runs its NumPy-free checks on "
          f"{platform.machine()} / Python {platform.python_version()}")


if __name__ == "__main__":
    main()
