"""What fastlr finds on this machine: CPU, cores, versions, backends, BLAS, threading layers.

Shared by ``fastlr info`` and the benchmark harness, so every benchmark table says what it ran on.
"""

import importlib.metadata
import platform
from pathlib import Path

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


# --- the memory this process may use ------------------------------------------------------------

#: A cgroup v1 limit at or above this means "no limit" (the kernel's default is a page-rounded
#: 2^63 - 1).
_NO_LIMIT = 1 << 62


def _read_int(path):
    """The integer in a one-line file; None if it is missing, unreadable or ``max``."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path, key):
    """One value of a ``memory.stat`` file (``key value`` lines); 0 if absent."""
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_dirs(root):
    """The directories of the memory cgroups this process is in, from its own up to the
    hierarchy's root: (directory, version) pairs, version 1 or 2."""
    root = Path(root)
    try:
        membership = (root / "proc/self/cgroup").read_text().splitlines()
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    where = {}  # version -> (mount point, the mount's root in the hierarchy)
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup" and "memory" in tail[2].split(","):
            where[1] = (fields[4], fields[3])
        elif tail[0] == "cgroup2":
            where.setdefault(2, (fields[4], fields[3]))
    dirs = []
    for line in membership:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        version = 2 if hierarchy == "0" and controllers == "" else \
            1 if "memory" in controllers.split(",") else None
        if version not in where:
            continue
        mount_point, mount_root = where[version]
        if path.startswith(mount_root):
            path = path[len(mount_root):]
        directory = root / mount_point.lstrip("/") / path.strip("/")
        top = root / mount_point.lstrip("/")
        while True:
            dirs.append((directory, version))
            if directory == top:
                break
            directory = directory.parent
    return dirs


def memory_available(root="/"):
    """The memory this process may still take, in bytes, and what sets it.

    The smallest of the machine's available memory (``MemAvailable`` of /proc/meminfo) and,
    for every memory cgroup the process is in (v1 or v2, its own and each above it), the
    cgroup's limit less its working set: what it uses less the file pages it could drop at
    once (``inactive_file``, as Kubernetes counts a working set).

    Parameters
    ----------
    root : str or Path
        Where /proc and /sys are found (a test gives a directory of fake ones).

    Returns
    -------
    available : int or None
        None if nothing could be read.
    bound : str
        What sets it, in words: "available memory" or "the memory cgroup's limit of X GiB".
    """
    root = Path(root)
    best, bound = None, "available memory"
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                best = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for directory, version in _cgroup_dirs(root):
        names = (("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
                 if version == 1 else ("memory.max", "memory.current", "inactive_file"))
        limit = _read_int(directory / names[0])
        if limit is None or limit >= _NO_LIMIT:
            continue
        used = (_read_int(directory / names[1]) or 0) - _stat_value(directory / "memory.stat",
                                                                     names[2])
        left = max(0, limit - max(0, used))
        if best is None or left < best:
            best, bound = left, f"the memory cgroup's limit of {limit / 2 ** 30:.2f} GiB"
    return best, bound
