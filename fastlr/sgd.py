"""The training engine: one loop of epochs for every place the data lives.

Shapes: N samples, D features, C classes, B batch, M samples visited in an epoch, S steps in an
epoch, T threads, K chunks of a batch.

Whatever holds the data (an array in memory, files streamed from disk, the partitions of a Dask
cluster), training is the same loop, :func:`train`: each epoch asks a *source* to train one
epoch on a :class:`TrainingState`, then checks the result, rolls back a diverged epoch, records
the epoch's history, evaluates, calls back, and stops early if asked. Sources differ only in
where their minibatches come from:

- a :class:`Source` on this machine hands :func:`run_blocks` its *blocks*, each a
  :class:`~fastlr.backends.contract.Samples` with the order to visit them in: an array in memory
  (:class:`ArraySource`) is one block per epoch, a stream from disk
  (:class:`fastlr.streaming.StreamingSource`) one block per shuffle buffer;
- a cluster (:class:`fastlr.distributed.DaskSource`) runs :func:`run_blocks` on every
  partition, each an :class:`ArraySource` on its worker, and averages the weights.

The engine owns everything a kernel must not do: it checks dtypes, contiguity and shapes,
allocates every buffer, draws the permutations from the state's seeded generator, checks that
the loss stays finite and raises the errors. The kernels (``fastlr/backends``) only compute.

Memory is bounded by settings, never by N, C or the number of epochs: the schedule makes each
epoch's rates as the epoch starts (:class:`Schedule`), and scoring works in blocks of rows sized
in bytes (:func:`score_blocks`), so it holds O(block x C) scores whatever N is.

The threads are the engine's too (:mod:`fastlr.threads`): every batch is cut into K chunks
fixed by the batch size and the shape, so the thread count never changes a model's bits, and
the engine runs each epoch on the cores other processes leave idle, going on with fewer
threads from the step where the kernel's threads stopped because they waited for each other.
"""

import dataclasses
import time

import numpy as np

from .backends import reference
from .backends.contract import SGDState, Samples, Steps, make_threads
from .errors import DivergenceError
from .pixels import for_kernels
from .threads import PATIENCE_STEPS, ThreadPlan, chunks_per_batch

LR_SCHEDULES = ("constant", "linear")

#: The bytes of float64 scores one block of rows holds while it is scored: the score matrix
#: of a block stays this size at any N and C (a few temporaries of its size come and go).
SCORING_BLOCK_BYTES = 4 << 20


class Schedule:
    """The learning rate of every step of a run, made one epoch at a time.

    ``constant``: ``lr_t = learning_rate``. ``linear``: ``lr_t = learning_rate * (1 - t / T)``
    for the steps t = 0..T-1 of the whole run, T = ``epochs`` x the source's steps per epoch,
    decaying towards 0 over the run.

    Parameters
    ----------
    kind : {"constant", "linear"}
    learning_rate : float
    epochs : int, the epochs the run is planned for (an early stop ends it sooner)
    """

    def __init__(self, kind, learning_rate, epochs):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {kind!r}; choose constant or "
                             f"linear")
        self.kind = kind
        self.learning_rate = float(learning_rate)
        self.epochs = int(epochs)

    def rates(self, epoch, steps_per_epoch):
        """The rates (S,) float64 of the S = ``steps_per_epoch`` steps of epoch ``epoch``
        (0-based): O(S) memory, whatever the number of epochs."""
        if self.kind == "constant":
            return np.full(steps_per_epoch, self.learning_rate)
        total = steps_per_epoch * self.epochs
        first = epoch * steps_per_epoch
        return self.learning_rate * (1.0 - np.arange(first, first + steps_per_epoch) / total)


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What every step of a run shares: the batch size B, the momentum, the L2 strength
    ``alpha``, the kernels' thread count T (the most, with ``adapt_threads``: then fewer
    while other processes take cores, see :mod:`fastlr.threads`)."""

    batch_size: int
    momentum: float
    alpha: float
    n_threads: int
    adapt_threads: bool = False


@dataclasses.dataclass
class TrainingState:
    """Everything training carries from one epoch, and one call, to the next.

    Attributes
    ----------
    W : (C, D), b : (C,) the weights, updated in place
    vel_W : (C, D), vel_b : (C,) the momentum buffers, updated in place
    rng : numpy.random.Generator, draws every permutation
    history : list of dict, one record per epoch, appended as epochs end
    threads : :class:`~fastlr.threads.ThreadPlan` or None, the threads of the run, made at
        its first epoch on this machine
    """

    W: np.ndarray
    b: np.ndarray
    vel_W: np.ndarray
    vel_b: np.ndarray
    rng: np.random.Generator
    history: list = dataclasses.field(default_factory=list)
    threads: ThreadPlan = None

    @classmethod
    def zeros(cls, n_classes, n_features, dtype, rng):
        """Zero weights and momentum for C classes and D features, an empty history."""
        W = np.zeros((n_classes, n_features), dtype=dtype)
        b = np.zeros(n_classes, dtype=dtype)
        return cls(W, b, np.zeros_like(W), np.zeros_like(b), rng)

    def sgd_state(self):
        """The weights and velocities as the kernels' :class:`SGDState` record."""
        return SGDState(self.W, self.b, self.vel_W, self.vel_b)

    def thread_plan(self, settings):
        """The run's :class:`~fastlr.threads.ThreadPlan` for ``settings``: the one it has,
        or a new one if it has none or the settings ask for other threads."""
        wanted = (max(1, int(settings.n_threads)), bool(settings.adapt_threads))
        if self.threads is None or (self.threads.most, self.threads.adapt) != wanted:
            self.threads = ThreadPlan(*wanted)
        return self.threads


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A labelled set scored after every epoch; its figures go into the history as
    ``{name}_loss`` and ``{name}_accuracy``. X (N, D) float or Pixels; y (N,) int64 class
    indices."""

    name: str
    X: object
    y: np.ndarray


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when the evaluation's accuracy has not risen by ``tol`` for ``n_iter_no_change``
    epochs, and keep the weights of the best epoch."""

    n_iter_no_change: int
    tol: float = 1e-4


@dataclasses.dataclass
class Outcome:
    """How a call of :func:`train` ended: the epochs it ran, and with early stopping the epoch
    (1-based, in the history's numbering) whose weights were kept, or None if it ran out of
    epochs first."""

    epochs_run: int
    best_epoch: int = None


def divergence_error(epoch, learning_rate, became_nan):
    """The DivergenceError of epoch ``epoch`` (0-based) whose loss became NaN (``became_nan``)
    or infinite, saying which weights are kept and what rate to try."""
    became = "NaN" if became_nan else "infinite"
    kept = (f"The weights from the end of epoch {epoch} are kept" if epoch
            else "The weights are not trained")
    return DivergenceError(
        f"training diverged in epoch {epoch + 1} (the loss became {became}): the learning rate "
        f"{learning_rate:g} is too high; try a smaller one, e.g. --lr "
        f"{min(learning_rate / 10, 1.0):g}. {kept}")


# --- sources --------------------------------------------------------------------------------------

class Source:
    """Where a run's samples come from. A subclass says how many steps an epoch has, hands
    out the blocks of an epoch and scores weights on its samples; :meth:`train_epoch` is the
    same for every source on this machine."""

    #: The sum of the training samples' weights (their number without weights): the running
    #: metrics of an epoch are divided by it.
    weight_total = 1.0

    def steps_per_epoch(self, batch_size):
        """S, the SGD steps of one epoch at ``batch_size``; the same for every epoch."""
        raise NotImplementedError

    def epoch_blocks(self, rng):
        """The blocks of one epoch, in order: pairs of a :class:`Samples` and the order
        ``perm`` (M_k,) int64 to visit its rows in, drawn from ``rng``. A block's rows may be
        a buffer that the next block overwrites."""
        raise NotImplementedError

    def score(self, backend, W, b, n_threads):
        """The (weighted) mean loss and accuracy of (W, b) on the training samples."""
        raise NotImplementedError

    def train_epoch(self, backend, state, schedule, epoch, settings):
        """Train one epoch on ``state``; returns its running sums (loss, correct) and the rate
        of its last step."""
        rates = schedule.rates(epoch, self.steps_per_epoch(settings.batch_size))
        loss_sum, correct_sum = run_blocks(backend, self.epoch_blocks(state.rng), state,
                                           rates, settings, epoch)
        return loss_sum, correct_sum, float(rates[-1])


def run_blocks(backend, blocks, state, rates, settings, epoch=0):
    """Epoch ``epoch`` (0-based over the run) of SGD over ``blocks`` (see
    :meth:`Source.epoch_blocks`): the backend's ``sgd_epoch`` once per block, each with the
    next slice of the epoch's ``rates``, on the threads of the state's
    :class:`~fastlr.threads.ThreadPlan`. Where the kernel's threads stop early (they waited
    for each other), the block goes on from the next step on the threads the plan gives: the
    same steps in the same order, so the same bits.

    Returns the epoch's running sums of ``s_i l_i`` and of ``s_i`` over the samples scored
    right; they are not finite if training diverged, and then the epoch stops at that block.
    """
    batch_size = settings.batch_size
    chunks = chunks_per_batch(batch_size, *state.W.shape, state.W.itemsize)
    plan = state.thread_plan(settings)
    n_threads = plan.start_epoch(epoch, chunks)
    threads = make_threads(n_threads, *state.W.shape, state.W.dtype, chunks)
    sgd_state = state.sgd_state()
    loss_sum = correct_sum = 0.0
    first = 0
    for samples, perm in blocks:
        samples = samples._replace(X=for_kernels(samples.X, backend, state.W.dtype))
        n_steps = -(-len(perm) // batch_size)
        done = 0
        while done < n_steps and np.isfinite(loss_sum):
            # Threads that may stop count their long waits over at most PATIENCE_STEPS
            # steps, so a long epoch's rare hiccups do not add up to a fall.
            patience = plan.patience()
            end = min(n_steps, done + PATIENCE_STEPS) if patience else n_steps
            steps = Steps(perm[done * batch_size:end * batch_size],
                          np.ascontiguousarray(rates[first + done:first + end]),
                          batch_size, settings.momentum, settings.alpha)
            threads = threads._replace(n_threads=n_threads, patience=patience)
            threads.seen[0] = 0
            # Divergence is detected by the caller, with a clearer message than NumPy's
            # warnings.
            with np.errstate(over="ignore", invalid="ignore"):
                block_loss, block_correct = backend.sgd_epoch(samples, sgd_state, steps,
                                                              threads)
            loss_sum += block_loss
            correct_sum += block_correct
            ran = int(threads.seen[0])
            if not 1 <= ran <= end - done:
                raise RuntimeError(f"the {backend.name} kernel says it ran {ran} of "
                                   f"{end - done} steps")
            done += ran
            if done < end:
                n_threads = plan.stopped(epoch, first + done)
        first += n_steps
        if not np.isfinite(loss_sum):
            break
    return loss_sum, correct_sum


def check_contract(backend, samples, W, b):
    """The kernel contract's preconditions on a block; a failure here is a bug in the caller,
    not bad user input (the model validates that)."""
    X, y, sample_weight = samples
    dtype = W.dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"weights must be float32 or float64, got {dtype}")
    pixels = X.dtype == np.uint8 and getattr(backend, "takes_pixels", False)
    if not (X.dtype == dtype or pixels) or not X.flags.c_contiguous:
        raise TypeError(f"X must be C-contiguous {dtype} (or uint8 for a backend that takes "
                        f"pixels), got {X.dtype}")
    for name, array in (("sample_weight", sample_weight), ("W", W), ("b", b)):
        if array.dtype != dtype or not array.flags.c_contiguous:
            raise TypeError(f"{name} must be C-contiguous {dtype}, got {array.dtype}")
    if y.dtype != np.int64 or not y.flags.c_contiguous:
        raise TypeError(f"y must be C-contiguous int64, got {y.dtype}")
    n, d = X.shape
    c = W.shape[0]
    if W.shape != (c, d) or b.shape != (c,) or y.shape != (n,) or sample_weight.shape != (n,):
        raise ValueError(f"inconsistent shapes X {X.shape}, y {y.shape}, "
                         f"sample_weight {sample_weight.shape}, W {W.shape}, b {b.shape}")


class ArraySource(Source):
    """Samples in memory: one block per epoch, the rows visited in a new random order.

    Parameters
    ----------
    backend : the backend that will train on them (it decides whether Pixels stay bytes)
    X : (N, D) float of W's dtype, or :class:`~fastlr.pixels.Pixels`
    y : (N,) int64 class indices; sample_weight : (N,) of W's dtype
    W : (C, D) the weights the run starts from (their dtype and shape are checked)
    rows : (M,) int64, optional; the rows to train on (default all: a held-out validation
        set is simply never visited)
    """

    def __init__(self, backend, X, y, sample_weight, W, b, rows=None):
        self.samples = Samples(for_kernels(X, backend, W.dtype), y, sample_weight)
        check_contract(backend, self.samples, W, b)
        self.rows = rows
        self.n_samples = self.samples.X.shape[0] if rows is None else len(rows)
        weights = sample_weight if rows is None else sample_weight[rows]
        total = float(np.sum(weights, dtype=np.float64))
        # All weights zero: means over the samples, as ``evaluate`` does.
        self.weight_total = total if total > 0 else float(self.n_samples)

    def steps_per_epoch(self, batch_size):
        return -(-self.n_samples // batch_size)

    def epoch_blocks(self, rng):
        order = rng.permutation(self.samples.X.shape[0] if self.rows is None else self.rows)
        yield self.samples, order.astype(np.int64, copy=False)

    def score(self, backend, W, b, n_threads):
        X, y, sample_weight = self.samples
        return evaluate(backend, X, y, W, b, n_threads, sample_weight, rows=self.rows)


# --- scoring in blocks ----------------------------------------------------------------------------

def scoring_rows(n_classes):
    """Rows of a scoring block: ``SCORING_BLOCK_BYTES`` of float64 scores, at least one."""
    return max(1, SCORING_BLOCK_BYTES // (8 * n_classes))


def score_blocks(backend, X, W, b, n_threads, rows=None):
    """The scores ``X W^T + b`` block by block: yields (start, stop, scores (stop - start, C)
    float64) for consecutive blocks of ``scoring_rows(C)`` rows of X (N, D) float or Pixels,
    or of ``X[rows]`` with ``rows`` (M,) given. Memory: O(block x C), never N x C."""
    n = X.shape[0] if rows is None else len(rows)
    block = scoring_rows(W.shape[0])
    out = np.empty((min(block, n), W.shape[0]), dtype=W.dtype)
    for start in range(0, n, block):
        stop = min(start + block, n)
        part = X[start:stop] if rows is None else X[rows[start:stop]]
        part = for_kernels(part, backend, W.dtype)
        if part.dtype != np.uint8 or not getattr(backend, "takes_pixels", False):
            part = np.ascontiguousarray(part, dtype=W.dtype)
        scores = out[:stop - start]
        backend.predict_scores(np.ascontiguousarray(part), W, b, scores, n_threads)
        yield start, stop, scores.astype(np.float64)


def evaluate_sums(backend, X, y, W, b, n_threads, sample_weight=None, rows=None):
    """The sums behind :func:`evaluate`: (sum of s_i l_i, sum of s_i over the samples scored
    right, sum of s_i), float64 (3,); s_i = 1 without ``sample_weight``."""
    sums = np.zeros(3)
    for start, stop, scores in score_blocks(backend, X, W, b, n_threads, rows):
        labels = y[start:stop] if rows is None else y[rows[start:stop]]
        losses = reference.cross_entropy(scores, labels)
        correct = scores.argmax(axis=1) == labels
        if sample_weight is None:
            sums += (losses.sum(), correct.sum(), stop - start)
        else:
            weights = np.asarray(sample_weight[start:stop] if rows is None
                                 else sample_weight[rows[start:stop]], dtype=np.float64)
            # Elementwise products, not ``weights @ losses``: a BLAS call between epochs
            # leaves OpenBLAS's threads spinning for a while, and they take the cores from
            # the next epoch's kernel threads.
            sums += ((weights * losses).sum(), (weights * correct).sum(), weights.sum())
    return sums


def evaluate(backend, X, y, W, b, n_threads, sample_weight=None, rows=None):
    """Mean (weighted) cross-entropy and accuracy of the model (W, b) on X (N, D) float or
    Pixels, y (N,) class indices, or on their rows ``rows``, scored in blocks
    (:func:`score_blocks`). With all weights zero, the means are over the samples."""
    sums = evaluate_sums(backend, X, y, W, b, n_threads, sample_weight, rows)
    if not sums[2] > 0:
        sums = evaluate_sums(backend, X, y, W, b, n_threads, None, rows)
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


# --- the loop -------------------------------------------------------------------------------------

def train(backend, source, state, schedule, settings, *, epochs, first_epoch=0,
          evaluation=None, early_stopping=None, score_train=False, on_epoch=None):
    """Train ``state`` on ``source`` for epochs ``first_epoch .. epochs - 1`` of ``schedule``.

    The training loss and accuracy of each epoch are running metrics, counted by the kernel
    at no extra pass: every sample's loss, and whether its highest score is its label, at the
    weights of the step that trained on it (what Keras and Vowpal Wabbit report). They lag the
    weights at the end of the epoch a little; ``score_train`` adds an exact score of the
    training samples at those weights, at the price of one more pass.

    Parameters
    ----------
    backend : module implementing the kernel contract (``fastlr/backends/contract.py``)
    source : :class:`Source` (or a cluster's source with the same ``train_epoch`` and
        ``score``)
    state : :class:`TrainingState`, trained in place; records go to ``state.history`` as
        epochs end, so a caller keeps them if training is interrupted
    schedule : :class:`Schedule`
    settings : :class:`StepSettings`
    epochs : int, the end of the range of epochs to run; first_epoch : int, its start
    evaluation : :class:`Evaluation`, optional; scored after every epoch
    early_stopping : :class:`EarlyStopping`, optional; needs ``evaluation``
    score_train : bool; on_epoch : callable(record), optional, called after every epoch

    Returns
    -------
    Outcome

    Raises
    ------
    DivergenceError
        If the loss or the weights stop being finite. The weights are restored to those at the
        start of the failing epoch, the last finite ones; the momentum buffers are zeroed.
    """
    if early_stopping is not None and evaluation is None:
        raise ValueError("early stopping needs an evaluation set")
    W, b = state.W, state.b
    best = None
    outcome = Outcome(epochs_run=0)
    for epoch in range(first_epoch, epochs):
        start = time.perf_counter()
        last_W, last_b = W.copy(), b.copy()
        loss_sum, correct_sum, last_rate = source.train_epoch(backend, state, schedule, epoch,
                                                              settings)
        elapsed = time.perf_counter() - start
        record = {"epoch": len(state.history) + 1,
                  "train_loss": loss_sum / source.weight_total,
                  "train_accuracy": correct_sum / source.weight_total, "lr": last_rate,
                  "time_s": elapsed}
        # Scoring shares the cores as the epoch's last step did.
        n_threads = settings.n_threads
        if state.threads is not None and state.threads.threads is not None:
            n_threads = record["threads"] = state.threads.threads
        if score_train:
            with np.errstate(over="ignore", invalid="ignore"):
                record["end_train_loss"], record["end_train_accuracy"] = source.score(
                    backend, W, b, n_threads)
        # Weights can stay finite while their scores overflow: the losses count too.
        losses = [loss_sum, record.get("end_train_loss", 0.0)]
        if not (np.isfinite(losses).all() and np.isfinite(W).all() and np.isfinite(b).all()):
            W[...] = last_W
            b[...] = last_b
            state.vel_W[...] = 0
            state.vel_b[...] = 0
            raise divergence_error(epoch, schedule.learning_rate, np.isnan(losses).any())
        if evaluation is not None:
            loss, accuracy = evaluate(backend, evaluation.X, evaluation.y, W, b, n_threads)
            record[f"{evaluation.name}_loss"] = loss
            record[f"{evaluation.name}_accuracy"] = accuracy
        state.history.append(record)
        outcome.epochs_run += 1
        if on_epoch is not None:
            on_epoch(record)
        if early_stopping is not None:
            accuracy = record[f"{evaluation.name}_accuracy"]
            if best is None or accuracy > best[0] + early_stopping.tol:
                best = (accuracy, epoch, W.copy(), b.copy(), record["epoch"])
            elif epoch - best[1] >= early_stopping.n_iter_no_change:
                W[...] = best[2]
                b[...] = best[3]
                outcome.best_epoch = best[4]
                break
    return outcome
