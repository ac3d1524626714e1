"""What fastlr finds on this machine: CPU, cores, versions, backends, BLAS, threading layers.

Shared by ``fastlr info`` and the benchmark harness, so every benchmark table says what it ran on.
"""

import importlib.metadata
import platform

import numpy as np

from .backends import available_backends, default_n_threads, get_backend, unavailable_reasons


def cpu_model():
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution):
    """The installed version of a distribution, without importing it (torch takes seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def numba_threading_layer():
    """The threading layer numba runs its parallel loops on (known once one has run)."""
    import numba
    backend = get_backend("numba")
    X = np.zeros((2, 1), dtype=np.float32)
    out = np.zeros((2, 1), dtype=np.float32)
    backend.predict_scores(X, np.zeros((1, 1), np.float32), np.zeros(1, np.float32), out, 1)
    try:
        return numba.threading_layer()
    except ValueError:
        return "unknown"


def blas_info():
    """The BLAS libraries NumPy (and anything else loaded) uses, with their thread counts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
            for p in threadpool_info() if p.get("user_api") == "blas"]


def machine_info():
    """Versions, backends, threads and CPU, as a JSON-ready dict."""
    from . import __version__
    versions = {"fastlr": __version__, "python": platform.python_version(),
                "numpy": np.__version__}
    for distribution in ("numba", "cython", "torch", "scikit-learn"):
        versions[distribution] = _version(distribution)
    backends = available_backends()
    info = {
        "versions": versions,
        "cpu": cpu_model(),
        "cores": default_n_threads(),
        "backends": backends,
        "unavailable": unavailable_reasons(),
        "default_backend": backends[0],
    }
    if "numba" in backends:
        info["numba_threading_layer"] = numba_threading_layer()
    if "cython" in backends:
        info["cython_openmp"] = bool(getattr(get_backend("cython"), "OPENMP_ENABLED", False))
    info["blas"] = blas_info()
    return info
