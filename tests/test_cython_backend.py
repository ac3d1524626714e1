"""The Cython backend and the registry around it: explicit use, auto's fallback when numba is
missing, and the message when the extension is not built.

The fallback cases run in a fresh interpreter, where ``sys.modules[name] = None`` makes
``import name`` fail as if the module were not installed.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastlr.backends import available_backends, get_backend

pytestmark = pytest.mark.skipif("cython" not in available_backends(),
                                reason="the Cython extension is not built")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code):
    """Run ``code`` in a fresh interpreter with the checkout importable; return its stdout
    parsed as JSON."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=REPO, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_explicit_cython_backend_trains_and_predicts():
    backend = get_backend("cython")
    assert backend.name == "cython"
    assert isinstance(backend.OPENMP_ENABLED, bool)
    assert backend.MAX_THREADS >= 1
    from fastlr import SoftmaxRegression
    rng = np.random.default_rng(0)
    X = rng.random((200, 20)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.int64)
    model = SoftmaxRegression(backend="cython", n_threads=2, epochs=20, batch_size=16,
                              learning_rate=0.5)
    model.fit(X, y)
    assert model.backend_ == "cython"
    assert (model.predict(X) == y).mean() > 0.9


def test_auto_falls_back_to_cython_with_one_warning_when_numba_is_missing():
    got = run_python("""
import json, sys, warnings
sys.modules['numba'] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    from fastlr.backends import get_backend
    first = get_backend('auto').name
    second = get_backend('auto').name
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
print(json.dumps({'first': first, 'second': second, 'warnings': messages}))
""")
    assert got["first"] == got["second"] == "cython"
    assert len(got["warnings"]) == 1
    assert "numba" in got["warnings"][0] and "cython" in got["warnings"][0]


def test_missing_extension_says_how_to_build_it():
    got = run_python("""
import json, sys, warnings
sys.modules['numba'] = None
sys.modules['fastlr._kernels'] = None
from fastlr.backends import available_backends, get_backend, unavailable_reasons
from fastlr.errors import BackendError
try:
    get_backend('cython')
    message = None
except BackendError as exc:
    message = str(exc)
with warnings.catch_warnings(record=True):
    warnings.simplefilter('always')
    auto = get_backend('auto').name
print(json.dumps({'message': message, 'available': available_backends(), 'auto': auto,
                  'reason': unavailable_reasons().get('cython')}))
""")
    assert got["message"] is not None
    assert "not built" in got["message"]
    assert "pip install -e ." in got["message"]
    assert "build_ext --inplace" in got["message"]
    assert got["available"] == ["numpy"]
    assert got["auto"] == "numpy"
    assert "pip install -e ." in got["reason"]
