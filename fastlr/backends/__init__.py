"""Backend registry and the kernel contract every backend implements.

Shapes: N samples, D features, C classes, B batch, S steps in an epoch, T threads.

The contract
------------
A backend is a module with a ``name``, a ``takes_pixels`` flag (True if its kernels accept
uint8 X) and three functions. They only compute: they validate
nothing, print nothing, draw no random numbers, and write their results into arrays the
driver (``fastlr/sgd.py``) allocated. The driver guarantees:

- every array is C-contiguous;
- ``X``, ``sample_weight``, ``W``, ``b``, ``vel_*``, ``grad_*``, ``parts_*`` and ``out`` share
  one float dtype, float32 (the fast path) or float64; or X is uint8 pixels, whose features
  are ``X / 255`` (``reference.features``), and the others share the float dtype;
- ``y`` and ``perm`` are int64; labels lie in ``0..C-1``; ``lr_steps`` is float64;
- the thread count T is ``parts_W.shape[0]``, at least 1.

``predict_scores(X, W, b, out, n_threads)``
    X (N, D), W (C, D), b (C,) -> out (N, C) = X W^T + b, on ``n_threads`` threads.

``loss_and_grad(X, y, sample_weight, W, b, grad_W, grad_b, parts_W, parts_b) -> float``
    One batch X (B, D), y (B,), sample_weight (B,). Returns the mean weighted cross-entropy
    ``(1/B) sum_i s_i l_i`` and writes its gradient into grad_W (C, D), grad_b (C,).
    parts_W (T, C, D), parts_b (T, C) are per-thread partial sums, reduced in a fixed order.

``sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
alpha, parts_W, parts_b) -> (loss_sum, correct_sum)``
    One epoch of minibatch SGD: step t takes the samples ``perm[t*batch_size:(t+1)*batch_size]``
    (the last batch may be smaller), computes the gradient of that whole batch at the current
    weights and applies ``v = momentum v + (grad + alpha W); W -= lr_steps[t] v`` (the bias the
    same, without alpha). Returns two floats, the running metrics of the epoch at no extra
    pass: the sum of ``s_i l_i`` over the epoch, each loss taken at the weights of its step,
    and the sum of ``s_i`` over the samples whose highest score at those weights (the first
    one on a tie, as ``argmax``) is their label.

The math is specified, and checked, in ``reference.py``. A backend must agree with it within
the tolerances of ``tests/test_backends.py``, and, for a given T, give bitwise the same result on
every run.

The registry
------------
``backend="auto"`` takes the first of ``AUTO_ORDER`` that imports; ``numpy`` always does. The
compiled extension comes first: its epoch is within ~15% of Numba's (docs/bench.json), and a
process that uses it does not pay for importing Numba and loading its cached kernels (about
1 s) or, on the first run, compiling them; for the defaults' 10 epochs of ~20 ms that start-up
is most of the run. Only the backend a command uses is imported.
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
