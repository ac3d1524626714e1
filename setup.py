"""Build fastlr's Cython kernels (``fastlr/_kernels.pyx`` and the C in ``fastlr/csrc``); the
metadata is in pyproject.toml.

Flags: ``-O3``, and ``-fopenmp`` when the compiler has OpenMP (probed by compiling and linking
nothing more than a tiny program); without it the kernels are built serial and
``fastlr._kernels.OPENMP_ENABLED`` is False.

Package data: the bundled MNIST (the checkout's ``data/mnist``, 11 MB) goes into the wheel as
``fastlr/_data/mnist``, where ``fastlr.data`` looks first, so an installed copy trains offline.

Instruction set: no ``-march`` flag at all, so the module itself is baseline x86-64 and imports
on any x86-64 CPU. The loops that do the arithmetic (``fastlr/csrc/tiles_impl.h``) are compiled
three times, by ``tiles_v4.c`` and ``tiles_v3.c`` (each under ``#pragma GCC target``, for
x86-64-v4 and x86-64-v3) and ``tiles_base.c``; ``fastlr/csrc/dispatch.c`` picks at import the
best one the CPU and its operating system support (``__builtin_cpu_supports``). Where the
compiler takes the AMX targets (probed, as OpenMP is), ``tiles_amx.c`` adds the AMX level: bf16
tile products for uint8 pixels, used when the CPU has AMX-BF16 and Linux grants the process the
tile registers.
``-march=native`` would be as fast on the build machine but could crash (SIGILL) on an older
CPU. Other compilers, GCC before 12, or GCC off x86-64 Linux build the baseline kernels only.
"""

import glob
import os
import shutil
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n == omp_get_max_threads() ? 0 : 1;
}
"""


def _compiler_accepts(compiler, source, extra_compile_args, extra_link_args):
    """True if ``compiler`` compiles and links ``source`` with these flags."""
    tmp = tempfile.mkdtemp(prefix="fastlr-probe-")
    try:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as handle:
            handle.write(source)
        objects = compiler.compile([path], output_dir=tmp, extra_postargs=extra_compile_args)
        compiler.link_executable(objects, "probe", output_dir=tmp,
                                 extra_postargs=extra_link_args)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# The AMX tiles (fastlr/csrc/tiles_amx.c) need a compiler that takes the amx-tile and
# amx-bf16 targets in a pragma, their intrinsics, and their names in __builtin_cpu_supports
# (GCC 12 does), and an assembler that knows the instructions.
AMX_PROBE = r"""
#pragma GCC target("arch=x86-64-v4,amx-tile,amx-bf16")
#include <immintrin.h>
int main(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16"))
        return 1;
    _tile_zero(0);
    _tile_dpbf16ps(0, 1, 2);
    _tile_release();
    return 0;
}
"""


class BuildKernels(build_ext):
    """build_ext that adds OpenMP when the compiler has it, and builds a serial kernel if not."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            compile_args, link_args = ["/O2", "/openmp"], []
            openmp = True
        else:
            compile_args = ["-O3"]
            openmp = _compiler_accepts(self.compiler, OPENMP_PROBE, ["-fopenmp"], ["-fopenmp"])
            link_args = ["-fopenmp"] if openmp else []
            if openmp:
                compile_args.append("-fopenmp")
        if not openmp:
            print("fastlr: the C compiler has no OpenMP; building the serial Cython kernel",
                  file=sys.stderr)
        amx = (self.compiler.compiler_type != "msvc"
               and _compiler_accepts(self.compiler, AMX_PROBE, [], []))
        for ext in self.extensions:
            if amx:
                ext.define_macros.append(("FASTLR_COMPILER_HAS_AMX", "1"))
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


C_SOURCES = ["kernels.c", "dispatch.c", "tiles_amx.c", "tiles_v4.c", "tiles_v3.c",
             "tiles_base.c"]

extensions = [
    Extension(
        "fastlr._kernels",
        ["fastlr/_kernels.pyx"] + [f"fastlr/csrc/{name}" for name in C_SOURCES],
        include_dirs=["fastlr/csrc"],
        # The headers, so that a change to one rebuilds the extension.
        depends=glob.glob("fastlr/csrc/*.h"),
        # Extra flags for experiments, e.g. FASTLR_CFLAGS="-fopt-info-vec-optimized".
        extra_compile_args=os.environ.get("FASTLR_CFLAGS", "").split(),
    )
]

setup(
    # fastlr.page_assets holds no Python: the explain page's HTML, CSS and JS, shipped as data.
    packages=find_packages(include=["fastlr", "fastlr.*"]) + ["fastlr.page_assets",
                                                              "fastlr._data", "fastlr._data.mnist"],
    package_dir={"fastlr._data": "data"},
    package_data={"fastlr._data.mnist": ["*.gz", "SHA256SUMS", "README.md"],
                  "fastlr.page_assets": ["*.html", "*.css", "*.js"]},
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildKernels},
)
