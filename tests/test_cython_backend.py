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
from fastlr.backends.contract import SGDState, Samples, Steps, Threads, make_threads

pytestmark = pytest.mark.skipif("cython" not in available_backends(),
                                reason="the Cython extension is not built")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, **environ):
    """Run ``code`` in a fresh interpreter with the checkout importable and the variables
    ``environ`` set; return its stdout parsed as JSON."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **environ)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=REPO, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_explicit_cython_backend_trains_and_predicts():
    backend = get_backend("cython")
    assert backend.name == "cython"
    from fastlr import SoftmaxRegression
    rng = np.random.default_rng(0)
    X = rng.random((200, 20)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.int64)
    model = SoftmaxRegression(backend="cython", n_threads=2, epochs=20, batch_size=16,
                              learning_rate=0.5)
    model.fit(X, y)
    assert model.backend_ == "cython"
    assert (model.predict(X) == y).mean() > 0.9


def test_max_threads_follows_openmp_and_is_one_without_it():
    got = run_python("""
import json
from fastlr.backends import get_backend
backend = get_backend('cython')
print(json.dumps({'openmp': backend.OPENMP_ENABLED, 'max_threads': backend.MAX_THREADS}))
""", OMP_NUM_THREADS="3")
    assert got["max_threads"] == (3 if got["openmp"] else 1)


# One epoch and one loss_and_grad at T = 3, printed as digests of the bytes of the results.
RUN_AT_T3 = """
import hashlib, json
import numpy as np
from fastlr.backends import get_backend
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
backend = get_backend('cython')
rng = np.random.default_rng(5)
n, d, c, T = 250, 70, 7, 3
X = rng.random((n, d), dtype=np.float32)
y = rng.integers(0, c, n).astype(np.int64)
sw = rng.uniform(0.5, 2.0, n).astype(np.float32)
W = (rng.standard_normal((c, d)) * 0.05).astype(np.float32)
b = np.zeros(c, np.float32)
threads = make_threads(T, c, d, np.float32)
grad_W, grad_b = np.empty_like(W), np.empty_like(b)
loss = backend.loss_and_grad(Samples(X, y, sw), W, b, grad_W, grad_b, threads)
epoch_loss = backend.sgd_epoch(Samples(X, y, sw),
                               SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                               Steps(rng.permutation(n).astype(np.int64), np.full(25, 0.3), 10,
                                     0.9, 1e-3), threads)
digest = hashlib.sha256(b''.join(np.asarray(a).tobytes()
                                 for a in (loss, grad_W, grad_b, epoch_loss, W, b)))
print(json.dumps({'digest': digest.hexdigest(), 'openmp': backend.OPENMP_ENABLED}))
"""


def test_a_team_smaller_than_t_gives_the_same_bits():
    """Under OMP_THREAD_LIMIT=1 every parallel region gets one thread, which takes the T = 3
    chunks in turn: the chunks depend on T alone, so the results are bitwise those of a team
    of three."""
    full_team = run_python(RUN_AT_T3)
    if not full_team["openmp"]:
        pytest.skip("built without OpenMP: every team has one thread")
    assert run_python(RUN_AT_T3, OMP_THREAD_LIMIT="1")["digest"] == full_team["digest"]


AUTO_SCRIPT = """
import json, sys, warnings
for blocked in sys.argv[1:]:
    sys.modules[blocked] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    from fastlr.backends import get_backend
    first = get_backend('auto').name
    second = get_backend('auto').name
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
print(json.dumps({'first': first, 'second': second, 'warnings': messages,
                  'numba_imported': 'numba' in sys.modules and sys.modules['numba'] is not None}))
"""


@pytest.mark.parametrize("blocked,expected,warns", [
    ((), "cython", False), (("numba",), "cython", False), (("fastlr._kernels",), "numba", False),
    (("numba", "fastlr._kernels"), "numpy", True)])
def test_auto_takes_cython_then_numba_and_warns_only_when_it_lands_on_numpy(blocked, expected,
                                                                           warns):
    done = subprocess.run([sys.executable, "-c", AUTO_SCRIPT, *blocked], capture_output=True,
                          text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["first"] == got["second"] == expected
    assert len(got["warnings"]) == (1 if warns else 0)
    if warns:
        assert "numba" in got["warnings"][0] and "cython" in got["warnings"][0]
    if expected == "cython":
        assert not got["numba_imported"]  # auto imports only the backend it takes


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


def _isa_problem(rng, X, c, weight_scale, lr):
    """A problem on the float64 features X (n, d) with c classes, and the reference's answers:
    labels, weights, the permutation and rates of one epoch at batch 40 (momentum 0.5, L2
    1e-3), the loss and gradient at W, b and the weights after that epoch."""
    from fastlr.backends import reference
    n, d = X.shape
    y = rng.integers(0, c, n).astype(np.int64)
    sw = rng.uniform(0.5, 2.0, n)
    W = rng.standard_normal((c, d)) * weight_scale
    b = rng.standard_normal(c) * 0.05
    perm = rng.permutation(n).astype(np.int64)
    lr_steps = np.full(-(-n // 40), lr)
    ref_grad_W, ref_grad_b = np.empty_like(W), np.empty_like(b)
    ref_loss = reference.loss_and_grad(Samples(X, y, sw), W, b, ref_grad_W, ref_grad_b,
                                       Threads(1, None, None))
    ref_W, ref_b = W.copy(), b.copy()
    reference.sgd_epoch(Samples(X, y, sw),
                        SGDState(ref_W, ref_b, np.zeros_like(W), np.zeros_like(b)),
                        Steps(perm, lr_steps, 40, 0.5, 1e-3), Threads(1, None, None))
    return y, sw, W, b, perm, lr_steps, ref_loss, ref_grad_W, ref_grad_b, ref_W, ref_b


# Classes not a multiple of the tiles: 3, 6 and 2 classes left over for the tiles of 10, and
# 3, 1 and 2 for the score tiles of 5.
LEFTOVER_CLASSES = [13, 26, 62]


@pytest.mark.parametrize("c", LEFTOVER_CLASSES)
def test_every_instruction_set_level_matches_the_reference(c):
    """The kernels of each ISA level this CPU runs (the best one is picked at import; the
    others would run on older CPUs) agree with the reference, on a batch that exercises the
    short tiles: odd samples, classes not a multiple of the tile, D not a multiple of the
    vector."""
    from fastlr.backends.check import TOLERANCE, TRAJECTORY_TOLERANCE, scaled_error
    backend = get_backend("cython")
    best = backend.isa_level()
    levels = [level for level in (1, 3, 4) if level <= best]
    rng = np.random.default_rng(3)
    n, d = 131, 795
    X = rng.random((n, d))
    y, sw, W, b, perm, lr_steps, ref_loss, ref_grad_W, ref_grad_b, ref_W, ref_b = \
        _isa_problem(rng, X, c, weight_scale=0.05, lr=0.2)
    try:
        for level in levels:
            backend.set_isa_level(level)
            for dtype in (np.float32, np.float64):
                cast = [a.astype(dtype) for a in (X, sw, W, b)]
                Xd, swd, Wd, bd = cast
                grad_W, grad_b = np.empty_like(Wd), np.empty_like(bd)
                threads = make_threads(2, c, d, dtype)
                loss = backend.loss_and_grad(Samples(Xd, y, swd), Wd, bd, grad_W, grad_b,
                                             threads)
                tol = TOLERANCE[np.dtype(dtype)]
                assert scaled_error(loss, ref_loss) <= tol, (level, dtype)
                assert scaled_error(grad_W, ref_grad_W) <= tol, (level, dtype)
                assert scaled_error(grad_b, ref_grad_b) <= tol, (level, dtype)
                W1, b1 = Wd.copy(), bd.copy()
                backend.sgd_epoch(Samples(Xd, y, swd),
                                  SGDState(W1, b1, np.zeros_like(Wd), np.zeros_like(bd)),
                                  Steps(perm, lr_steps, 40, 0.5, 1e-3), threads)
                tol = TRAJECTORY_TOLERANCE[np.dtype(dtype)]
                assert scaled_error(W1, ref_W) <= tol, (level, dtype)
                assert scaled_error(b1, ref_b) <= tol, (level, dtype)
                scores = np.empty((n, c), dtype)
                backend.predict_scores(Xd, Wd, bd, scores, 2)
                assert scaled_error(scores, X @ W.T + b) <= TOLERANCE[np.dtype(dtype)]
    finally:
        backend.set_isa_level(best)


@pytest.mark.parametrize("c", LEFTOVER_CLASSES)
def test_every_instruction_set_level_takes_pixels_as_their_features(c):
    """uint8 X at each ISA level (the tiles convert the bytes and scale each sum by 1/255)
    against the reference on the float features X / 255, with float32 and float64 weights;
    float X of the other dtype than W's is refused."""
    from fastlr.backends.check import TOLERANCE, TRAJECTORY_TOLERANCE, scaled_error
    backend = get_backend("cython")
    best = backend.isa_level()
    rng = np.random.default_rng(7)
    n, d = 131, 795
    pixels = rng.integers(0, 256, size=(n, d)).astype(np.uint8)
    pixels[0] = 255
    X = pixels / 255.0
    y, sw, W, b, perm, lr_steps, ref_loss, ref_grad_W, ref_grad_b, ref_W, ref_b = \
        _isa_problem(rng, X, c, weight_scale=0.01, lr=0.05)
    try:
        for level in [level for level in (1, 3, 4) if level <= best]:
            backend.set_isa_level(level)
            for dtype in (np.float32, np.float64):
                swd, Wd, bd = (a.astype(dtype) for a in (sw, W, b))
                grad_W, grad_b = np.empty_like(Wd), np.empty_like(bd)
                threads = make_threads(2, c, d, dtype)
                loss = backend.loss_and_grad(Samples(pixels, y, swd), Wd, bd, grad_W, grad_b,
                                             threads)
                tol = TOLERANCE[np.dtype(dtype)]
                assert scaled_error(loss, ref_loss) <= tol, (level, dtype)
                assert scaled_error(grad_W, ref_grad_W) <= tol, (level, dtype)
                assert scaled_error(grad_b, ref_grad_b) <= tol, (level, dtype)
                scores = np.empty((n, c), dtype)
                backend.predict_scores(pixels, Wd, bd, scores, 2)
                assert scaled_error(scores, X @ W.T + b) <= tol, (level, dtype)
                W1, b1 = Wd.copy(), bd.copy()
                backend.sgd_epoch(Samples(pixels, y, swd),
                                  SGDState(W1, b1, np.zeros_like(Wd), np.zeros_like(bd)),
                                  Steps(perm, lr_steps, 40, 0.5, 1e-3), threads)
                tol = TRAJECTORY_TOLERANCE[np.dtype(dtype)]
                assert scaled_error(W1, ref_W) <= tol, (level, dtype)
                assert scaled_error(b1, ref_b) <= tol, (level, dtype)
    finally:
        backend.set_isa_level(best)
    with pytest.raises(TypeError):
        backend.predict_scores(X.astype(np.float32), W, b, np.empty((n, c)), 1)


def test_set_isa_level_switches_the_kernels():
    """Each level runs its own tiles: its vector width sums the lanes of the scores in
    another order, so the scores of the best level and of the baseline differ in their last
    bits (and agree within the tolerance, tested above)."""
    backend = get_backend("cython")
    best = backend.isa_level()
    if best == 1:
        pytest.skip("this build or CPU runs the baseline kernels only")
    rng = np.random.default_rng(4)
    X, W = rng.random((64, 795), dtype=np.float32), rng.random((13, 795), dtype=np.float32)
    b = np.zeros(13, np.float32)
    scores = {}
    try:
        for level in (1, best):
            backend.set_isa_level(level)
            assert backend.isa_level() == level
            scores[level] = np.empty((64, 13), np.float32)
            backend.predict_scores(X, W, b, scores[level], 1)
    finally:
        backend.set_isa_level(best)
    assert not np.array_equal(scores[1], scores[best])


def test_set_isa_level_refuses_a_level_the_cpu_cannot_run():
    backend = get_backend("cython")
    with pytest.raises(ValueError):
        backend.set_isa_level(2)
    if backend.isa_level() < 4:
        with pytest.raises(ValueError):
            backend.set_isa_level(4)


def test_every_score_span_gives_the_same_bits():
    """The span in which the score tile walks D is chosen for the CPU's L1 (whole rows where
    they fit, else 1 KB); forcing any other, as on a CPU with another L1, changes the speed
    only: the same sums in the same order at every ISA level."""
    backend = get_backend("cython")
    best = backend.isa_level()
    rng = np.random.default_rng(6)
    n, d, c = 150, 795, 13
    X = rng.random((n, d), dtype=np.float32)
    y = rng.integers(0, c, n).astype(np.int64)
    sw = np.ones(n, np.float32)
    perm = rng.permutation(n).astype(np.int64)

    def epoch():
        W, b = np.zeros((c, d), np.float32), np.zeros(c, np.float32)
        backend.sgd_epoch(Samples(X, y, sw), SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                          Steps(perm, np.full(-(-n // 40), 0.3), 40, 0.5, 1e-3),
                          make_threads(2, c, d, np.float32))
        scores = np.empty((n, c), np.float32)
        backend.predict_scores(X, W, b, scores, 2)
        return W, b, scores

    try:
        for level in [level for level in (1, 3, 4) if level <= best]:
            backend.set_isa_level(level)
            backend.set_score_span(0)
            chosen = epoch()
            for span in (16, 64, 1024, 1 << 20):
                backend.set_score_span(span)
                for got, want in zip(epoch(), chosen):
                    assert np.array_equal(got, want), (level, span)
    finally:
        backend.set_score_span(0)
        backend.set_isa_level(best)
