"""Numba's on-disk cache for the production kernels, keyed by all of their sources.

Numba keys a function's cache entry by its own bytecode and the content of its own file, so an
edit to a callee in another file (a tile in ``tiles.py`` called from ``epoch.py``) would load a
stale ``sgd_epoch``. For every function defined in this package, the source stamp that Numba
checks is instead a hash of every ``.py`` file of the package: any edit to a production kernel
file recompiles the production kernels at the next use. Functions defined anywhere else (the
lab, ``numba_ladder``, whose rungs are self-contained files) keep Numba's own keys. The stamp
also holds the CPU tuning (``tuning.py``): the tiles are compiled
with its values as constants, so a kernel compiled under one tuning is never loaded under
another. Where the cache lives is Numba's own choice, kept: ``NUMBA_CACHE_DIR`` if
set, else ``__pycache__`` next to the source, else the user cache directory when the package
directory is not writable.
"""

import functools
import hashlib
import os

from numba.core import caching

from .tuning import TUNING

PRODUCTION = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _hash_sources(stamps):
    """sha256 over the names and contents of the files in ``stamps`` ((path, mtime, size)
    each: the mtime and size make an edit during the process hash again)."""
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        digest.update(os.path.relpath(path, os.path.dirname(PRODUCTION)).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def sources_stamp(directories):
    """The stamp of the kernel sources in ``directories`` (a tuple of paths)."""
    stamps = []
    for directory in directories:
        for name in sorted(os.listdir(directory)):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                st = os.stat(path)
                stamps.append((path, st.st_mtime_ns, st.st_size))
    return _hash_sources(tuple(stamps))


def _kernel_directories(py_file):
    """The directories whose sources a function of ``py_file`` depends on, or None if it is
    not one of the production kernels."""
    if os.path.dirname(os.path.abspath(py_file)) == PRODUCTION:
        return (PRODUCTION,)
    return None


class _KernelSourcesMixin:
    """Numba's locator, with the source stamp of the whole kernel package."""

    def get_source_stamp(self):
        return sources_stamp(self._kernel_directories) + repr(TUNING)

    @classmethod
    def from_function(cls, py_func, py_file):
        directories = _kernel_directories(py_file)
        if directories is None:
            return None
        self = super().from_function(py_func, py_file)
        if self is not None:
            self._kernel_directories = directories
        return self


class _UserProvidedLocator(_KernelSourcesMixin, caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR``, when it is set."""


class _InTreeLocator(_KernelSourcesMixin, caching.InTreeCacheLocator):
    """``__pycache__`` next to the source, when it is writable."""


class _UserWideLocator(_KernelSourcesMixin, caching.UserWideCacheLocator):
    """The user cache directory otherwise."""


def register():
    """Put the kernel-package locators first in Numba's list (once); every other function
    keeps Numba's own locators."""
    ours = [_UserProvidedLocator, _InTreeLocator, _UserWideLocator]
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # _CacheImpl in older Numba
    classes = impl._locator_classes
    if classes[:len(ours)] != ours:
        classes[:0] = ours


def first_run_compiles(dispatchers):
    """True if any of the Numba ``dispatchers`` has no fresh entry in the on-disk cache (its
    first call will compile). False when this Numba's cache cannot be read this way."""
    try:
        return any(not d._cache._cache_file._load_index() for d in dispatchers)
    except AttributeError:
        return False
