"""Build fastlr's Cython kernels (``fastlr/_kernels.pyx``); the metadata is in pyproject.toml.

Flags: ``-O3``, and ``-fopenmp`` when the compiler has OpenMP (probed by compiling and running
nothing more than a tiny program); without it the kernels are built serial and
``fastlr._kernels.OPENMP_ENABLED`` is False.

Package data: the bundled MNIST (the checkout's ``data/mnist``, 11 MB) goes into the wheel as
``fastlr/_data/mnist``, where ``fastlr.data`` looks first, so an installed copy trains offline.

Instruction set: no ``-march`` flag at all, so the module itself is baseline x86-64 and imports
on any x86-64 CPU. The loops that do the arithmetic are compiled three times inside the source
(GCC ``target("arch=x86-64-v4")`` and ``target("arch=x86-64-v3")`` function attributes, plus
the baseline, see ``fastlr/_kernels.pyx``) and the module picks at import the best one the CPU
and its operating system support (``__builtin_cpu_supports``). Measured on the build machine
(AMD EPYC Zen 4, MNIST epoch, wall ms): batch 64 one thread v4 29, v3 34, baseline 76; batch
1024 one thread 26, 31, 72. ``-march=native`` would match here but could crash (SIGILL) on an
older CPU. Other compilers, GCC before 12, or GCC off x86-64 Linux build the baseline kernels only.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
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
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


extensions = [
    Extension(
        "fastlr._kernels",
        ["fastlr/_kernels.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # Extra flags for experiments, e.g. FASTLR_CFLAGS="-fopt-info-vec-optimized".
        extra_compile_args=os.environ.get("FASTLR_CFLAGS", "").split(),
    )
]

setup(
    packages=find_packages(include=["fastlr", "fastlr.*"]) + ["fastlr._data",
                                                              "fastlr._data.mnist"],
    package_dir={"fastlr._data": "data"},
    package_data={"fastlr._data.mnist": ["*.gz", "SHA256SUMS", "README.md"]},
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildKernels},
)
