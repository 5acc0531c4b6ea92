"""Build the compiled core of deepshift_edge.

Environment switches (local builds only; wheels use the defaults):
  DSE_DEBUG=1   bounds checking + wraparound checks on, -O0 -g: CI runs the suite once in it.
  DSE_NATIVE=1  add -march=native for a build that only runs on this machine. Never for wheels.
"""
import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError as exc:  # a missing Cython must fail the build loudly
    raise SystemExit("deepshift_edge needs Cython>=3.0 to build: pip install Cython") from exc

DEBUG = os.environ.get("DSE_DEBUG", "0") not in ("", "0")
NATIVE = os.environ.get("DSE_NATIVE", "0") not in ("", "0")

# -O3 lets GCC vectorise the channel loops; no -ffast-math (it can flip the whole
# process into flush-to-zero) and no host-CPU flags unless asked for explicitly.
# -falign-loops=32: the kernels' hot loops start on a 32-byte boundary. Without it the
# baseline (SSE2) push_many loop landed mid-line in the run-time dispatch build and ran 25%
# slower (kws 4.1 vs 3.2 us/frame, same instructions); AVX2/AVX-512 unchanged (measured).
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-falign-loops=32"]
if NATIVE:
    compile_args.append("-march=native")
if sys.platform == "win32":
    compile_args = ["/Od"] if DEBUG else ["/O2"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        "deepshift_edge.engine._kernels",
        ["src/deepshift_edge/engine/_kernels.pyx"],
        include_dirs=["src/deepshift_edge/engine"],
        depends=["src/deepshift_edge/engine/_gemv.h", "src/deepshift_edge/engine/_pool.h",
                 "src/deepshift_edge/engine/_qgemv.h", "src/deepshift_edge/engine/_qops.pxi"],
        extra_compile_args=compile_args,
        define_macros=[("DSE_DEBUG_BUILD", "1" if DEBUG else "0")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        compile_time_env={"DSE_DEBUG": DEBUG},
        force=DEBUG,
    )
)
