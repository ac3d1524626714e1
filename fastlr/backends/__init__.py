"""Backend registry: name -> backend module, and the order ``auto`` tries them in.

Shapes: N samples, D features, C classes, B batch, S steps in an epoch, T threads.

A backend implements the kernel contract of ``contract.py``: three functions taking named
records (:class:`~fastlr.backends.contract.Samples`, ``SGDState``, ``Steps``, ``Threads``),
checked against the NumPy reference (``reference.py``) within the tolerances of ``check.py``.

The registry
------------
``backend="auto"`` takes the first of ``AUTO_ORDER`` that imports; ``numpy`` always does. The
compiled extension comes first: its epoch is close to Numba's (docs/bench.json), and a process
that uses it pays neither for importing Numba and loading its cached kernels nor, on the first
run, for compiling them, which for the defaults' short run is most of the time. Only the
backend a command uses is imported.
"""

import importlib
import os
import warnings

from ..errors import BackendError

AUTO_ORDER = ("cython", "numba", "numpy")

_MODULES = {
    "numpy": "fastlr.backends.reference",
    "numba": "fastlr.backends.numba",
    "cython": "fastlr.backends.cython",
}

_HOW_TO_FIX = {
    "numba": "install it with `pip install numba`, and leave NUMBA_DISABLE_JIT unset",
    "cython": ("build it with `pip install -e .`, or `python setup.py build_ext --inplace` in a "
               "source checkout (needs a C compiler)"),
    "numpy": "",
}

_loaded = {}
_failures = {}
_auto_warned = False


def _load(name):
    """Import backend ``name``; remember the module or the reason it failed."""
    if name in _loaded:
        return _loaded[name]
    if name in _failures:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        _failures[name] = str(exc) or type(exc).__name__
        return None
    _loaded[name] = module
    return module


def default_n_threads():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def available_backends():
    """Names of the backends that import on this machine, fastest first.

    Returns
    -------
    list of str
        A subset of ``AUTO_ORDER``, always ending with ``"numpy"``.
    """
    return [name for name in AUTO_ORDER if _load(name) is not None]


def unavailable_reasons():
    """Map each backend that does not import to the reason, for ``fastlr info``."""
    available_backends()
    return {name: f"{_failures[name]}; {_HOW_TO_FIX[name]}" for name in _failures}


def get_backend(name="auto"):
    """Return the backend module for ``name``, one of ``auto``, ``numba``, ``cython``, ``numpy``.

    ``auto`` picks the first of cython, numba, numpy that imports; when it has to fall back
    to numpy, the slow one, it says so once, as a warning.

    Raises
    ------
    BackendError
        If ``name`` is unknown, or names a backend that is not available here.
    """
    global _auto_warned
    if name == "auto":
        for candidate in AUTO_ORDER:
            module = _load(candidate)
            if module is not None:
                if candidate == "numpy" and not _auto_warned:
                    _auto_warned = True
                    missing = "; ".join(f"{fast}: {_failures[fast]}"
                                        for fast in AUTO_ORDER[:-1])
                    warnings.warn(
                        f"fastlr: no fast backend is available ({missing}); using the numpy "
                        f"backend", RuntimeWarning, stacklevel=2)
                return module
    if name not in _MODULES:
        raise BackendError(
            f"unknown backend {name!r}; choose one of auto, {', '.join(AUTO_ORDER)}")
    module = _load(name)
    if module is None:
        raise BackendError(
            f"the {name} backend is not available ({_failures[name]}); {_HOW_TO_FIX[name]}")
    return module


def get_backend_or_auto(name):
    """The backend ``name`` if it imports here, else ``auto``'s choice: for a model trained on
    another machine, which predicts just as well with any backend. Imports nothing else."""
    if name in _MODULES and _load(name) is not None:
        return _loaded[name]
    return get_backend("auto")
