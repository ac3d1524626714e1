"""Data-parallel training on a Dask cluster: synchronous model averaging.

Shapes: N samples, D features, C classes, P partitions (the row blocks of the Dask array X),
R rounds (``epochs``: one round is one pass over all N samples).

``SoftmaxRegression.fit`` turns Dask arrays into a :class:`DaskSource` and trains on it with
the one engine, :func:`fastlr.sgd.train`, as it would an array in memory: one round is one of
its epochs. The partitions stay on the workers that hold them; only weights move. One round:

1. The weights W (C, D), b (C,) of the last round become one task on the cluster (zeros
   before the first round); each worker fetches one copy, C (D + 1) floats in.
2. Every partition p runs one epoch from those weights through the engine's own epoch
   (:meth:`fastlr.sgd.Source.train_epoch` of an :class:`~fastlr.sgd.ArraySource` on the
   worker), with its own permutation and its slice of the learning-rate schedule, and sends
   back its weights W_p, b_p and its running loss and accuracy sums: C (D + 1) floats out.
3. The client averages them by sample weight, ``W = sum_p n_p W_p / sum_p n_p`` (n_p: the
   partition's total sample weight, its number of samples without ``sample_weight``), in
   partition order and in float64.

The engine then does what it does for every source: the history record (running loss and
accuracy summed over the partitions, as in one process), the check for divergence, the
evaluation set (scored by the client), the callback; ``score_train`` scores the averaged
weights on every partition in a wave of tasks that each score their rows in blocks
(:func:`fastlr.sgd.evaluate_sums`), so a worker's memory for scoring is O(block x C).

The schedule runs over the rounds: partition p with S_p = ceil(n_p / batch_size) steps per
epoch takes steps ``r S_p .. (r + 1) S_p - 1`` of a schedule of ``R S_p`` steps in round r, so
a linear schedule decays to 0 over the whole fit as it does in one process. Momentum starts
from zero in every round: no worker keeps state between rounds.

Pixels: ``Pixels(X)`` of a uint8 Dask array means the features ``X / 255``, as in memory; the
partitions stay bytes on the workers, and the kernels read them so. A plain uint8 Dask array
means its values as numbers, as a plain uint8 array does in memory.

Determinism and faults: a task is a pure function of its partition, the weights it starts from,
the round, the partition index and the seed. The permutation comes from
``default_rng([seed, round, partition])``, never from the worker that runs it, and the kernel
thread count is fixed for the whole fit (``n_threads``, default 1: Dask runs one task per
worker thread). So the same seed and partitioning give bitwise the same model, and when a
worker dies mid-round Dask itself recomputes what it lost, the partitions from their graph and
the round's tasks from the last averaged weights, with the same result.

A partition is whatever a block of the Dask array is: a block of an in-memory array cut by
``da.from_array`` (it travels to the workers inside the task graph), or a block each worker
reads from storage (``da.from_zarr``, ``da.from_npy_stack``, :func:`training_arrays`).
"""

import asyncio
import contextlib
import socket
from pathlib import Path

import numpy as np

from .backends import get_backend
from .data import load_dataset
from .errors import DataError, MissingDependencyError
from .pixels import Pixels, is_dask_array
from .preprocess import apply_preprocessing
from .sgd import ArraySource, Schedule, TrainingState, evaluate_sums
from .validation import (check_features, check_labels, check_sample_weight, encode_labels,
                         plain)

DASK_MISSING = 'training on a Dask cluster needs Dask: pip install "fastlr[dask]"'


def require_dask():
    """Import Dask and ``distributed``; returns the two modules.

    Raises
    ------
    MissingDependencyError
        If Dask is not installed, with the one line that says how to install it.
    """
    try:
        import dask
        import dask.array
        import distributed
    except ImportError:
        raise MissingDependencyError(DASK_MISSING) from None
    except Exception as exc:  # noqa: BLE001 - e.g. a broken Dask configuration file
        raise MissingDependencyError(f"Dask is installed but cannot be imported "
                                     f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return dask, distributed


def is_dask_input(X):
    """Whether X is a Dask array, or Pixels of one. Never imports Dask."""
    return is_dask_array(X.data if isinstance(X, Pixels) else X)


# How long a cluster may take to answer: to connect and greet (a listener that accepts and
# never answers is given up), and to have a worker (a scheduler without workers would leave
# every task waiting).
CLUSTER_TIMEOUT_S = 30.0
DEFAULT_SCHEDULER_PORT = 8786


@contextlib.contextmanager
def cluster_client(scheduler=None, n_workers=None, timeout=None):
    """A ``distributed.Client`` on the running scheduler at address ``scheduler``, or on a new
    local cluster of ``n_workers`` worker processes of one thread each, shut down on exit.

    Every wait has a deadline of ``timeout`` seconds (default :data:`CLUSTER_TIMEOUT_S`): an
    address in the wrong form is refused at once; the scheduler must answer a greeting (a
    listener that is no Dask scheduler, or never answers, is given up) and have at least one
    worker within it.

    Raises
    ------
    DataError
        Naming the address, for each of those.
    """
    _, distributed = require_dask()
    timeout = CLUSTER_TIMEOUT_S if timeout is None else timeout
    if scheduler is None:
        with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                      processes=True, dashboard_address=None) as cluster, \
                distributed.Client(cluster, timeout=timeout) as client:
            yield client
        return
    address = scheduler_address(scheduler)
    _greet_scheduler(address, timeout)
    try:
        client = distributed.Client(address, timeout=timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise DataError(f"--scheduler {scheduler}: cannot connect: {exc}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise DataError(f"--scheduler {scheduler}: the scheduler has no worker (none "
                            f"joined within {timeout:g} s); start one with dask worker "
                            f"{address}") from None
        yield client


def scheduler_address(text):
    """The scheduler address ``text`` as ``scheme://host:port`` (``tcp`` and port 8786 by
    default), checked for its form without any network access.

    Raises
    ------
    DataError
        For an unknown scheme, no host, or a port that is not a number in 1-65535.
    """
    from distributed.comm import registry
    from distributed.comm.addressing import parse_host_port, unparse_host_port

    problem = None
    scheme, _, location = str(text).rpartition("://")
    scheme = scheme or "tcp"
    if scheme not in registry.backends:
        problem = f"unknown scheme {scheme!r}"
    elif scheme != "inproc":
        try:
            host, port = parse_host_port(location, default_port=DEFAULT_SCHEDULER_PORT)
        except ValueError as exc:
            problem = str(exc)
        else:
            if not host or any(c in host for c in "/@ ?#"):
                problem = f"no host name in {location!r}"
            elif not 1 <= port <= 65535:
                problem = f"the port {port} is not in 1-65535"
            else:
                location = unparse_host_port(host, port)
    if problem is not None:
        raise DataError(f"--scheduler {text}: not a Dask scheduler address ({problem}); give "
                        f"tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786")
    return f"{scheme}://{location}"


def _greet_scheduler(address, timeout):
    """Connect to ``address`` and ask who it is, all within ``timeout`` seconds: a listener
    that accepts and never answers, or answers as no Dask scheduler, is refused. (The Client's
    own connect timeout does not cover the greeting: such a listener held it forever.)"""
    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme == "tcp":  # a closed port says so at once (distributed retries until timeout)
        try:
            socket.create_connection(parse_host_port(location), timeout=timeout).close()
        except OSError as exc:
            raise DataError(f"--scheduler {address}: cannot connect: "
                            f"{exc.strerror or exc}") from None

    async def greet():
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def greet_by_deadline():
        return await asyncio.wait_for(greet(), timeout)

    try:
        reply = asyncio.run(greet_by_deadline())
    except (asyncio.TimeoutError, TimeoutError):
        raise DataError(f"--scheduler {address}: no answer within {timeout:g} s (is a Dask "
                        f"scheduler listening there?)") from None
    except Exception as exc:  # noqa: BLE001 - whatever the listener did, one line
        raise DataError(f"--scheduler {address}: not a Dask scheduler, or it cannot be "
                        f"reached ({type(exc).__name__}: {str(exc)[:160]})") from None
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise DataError(f"--scheduler {address}: answered, but not as a Dask scheduler")


def training_arrays(n_partitions, n_samples=60000, n_features=784, name=None, data_dir=None):
    """A data set's training images and labels as ``Pixels`` of a Dask array X (N, D) uint8
    and a Dask array y (N,) int64, of ``n_partitions`` row blocks, each read from disk by the
    worker that computes it; the images stay bytes on the workers.

    The data never travels through the client, and a block lost with a worker is read again.
    ``name`` (a known data set) or ``data_dir`` (default: where :func:`fastlr.load_dataset`
    looks) must be there on every worker's machine; a known data set that is not is found or
    downloaded by each worker into its own cache.
    """
    dask, _ = require_dask()
    data_dir = None if data_dir is None else str(Path(data_dir).resolve())
    bounds = np.linspace(0, n_samples, n_partitions + 1).astype(int)
    X_blocks, y_blocks = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        images, labels = dask.delayed(_training_rows, nout=2, pure=True)(name, data_dir, lo, hi)
        X_blocks.append(dask.array.from_delayed(images, (hi - lo, n_features), np.uint8))
        y_blocks.append(dask.array.from_delayed(labels, (hi - lo,), np.int64))
    return Pixels(dask.array.concatenate(X_blocks)), dask.array.concatenate(y_blocks)


def _training_rows(name, data_dir, lo, hi):
    """Rows lo..hi-1 of a data set's training images (uint8) and labels, read on the worker."""
    X_train, y_train, _, _ = load_dataset(name, data_dir, dtype=np.uint8,
                                          progress=False).arrays()
    X_train = X_train.reshape(len(X_train), -1)
    return np.ascontiguousarray(X_train[lo:hi]), y_train[lo:hi].astype(np.int64)


class DaskSource:
    """The partitions of Dask arrays on their cluster, as a source of the engine
    (:func:`fastlr.sgd.train`): :meth:`train_epoch` is one round of model averaging.

    Make one with :meth:`from_arrays`; ``SoftmaxRegression.fit`` does, for Dask input.

    Attributes
    ----------
    classes : (C,) the sorted distinct labels; dtype : the float dtype of training;
    n_features : D; weight_total : the sum of the sample weights (N without them)
    """

    def __init__(self, client, partitions, classes, dtype, n_features, weight_total):
        self.client = client
        self.partitions = partitions
        self.classes = classes
        self.dtype = dtype
        self.n_features = n_features
        self.weight_total = weight_total
        self.config = None

    @classmethod
    def from_arrays(cls, X, y, sample_weight=None, preprocessing=None):
        """Check and convert Dask arrays on their cluster: X (N, D), or Pixels of uint8 X;
        y and sample_weight (N,) Dask arrays or array-likes.

        Raises
        ------
        DataError
            For unusable data, or when no Dask client is running.
        """
        dask, distributed = require_dask()
        try:
            client = distributed.get_client()
        except ValueError:
            raise DataError("fit got Dask arrays but no Dask client is running: start one "
                            "with dask.distributed.Client(...) first") from None
        pixels = isinstance(X, Pixels)
        X = X.data if pixels else X
        if X.ndim != 2:
            raise DataError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if any(np.isnan(n) for n in X.shape):
            raise DataError("X has blocks of unknown size; call X.compute_chunk_sizes() first")
        if pixels and X.dtype != np.uint8:
            raise DataError(f"Pixels needs uint8 images (bytes 0-255), got dtype {X.dtype}")
        partitions, classes, dtype = _partitions(client, dask, X, y, sample_weight,
                                                 preprocessing, pixels)
        weights = client.gather(client.map(_partition_weight, partitions))
        total = float(sum(weights))
        return cls(client, partitions, classes, dtype, int(X.shape[1]),
                   total if total > 0 else float(X.shape[0]))

    def start(self, backend_name, settings, schedule, seed):
        """Fix what every round's tasks share: the backend, the step settings, the schedule
        and the seed their permutations are drawn from."""
        self.config = {"backend": backend_name, "settings": settings,
                       "schedule": (schedule.kind, schedule.learning_rate, schedule.epochs),
                       "seed": int(seed)}

    def train_epoch(self, backend, state, schedule, epoch, settings):
        """One round: every partition trains one epoch from ``state``'s weights, and the
        client averages theirs into ``state`` (W and b, in place)."""
        n = len(self.partitions)
        weights = self.client.submit(_round_weights, state.W, state.b)
        results = self.client.gather(self.client.map(
            _train_partition, self.partitions, [weights] * n, [epoch] * n, range(n),
            [self.config] * n))
        total = sum(result[2] for result in results)
        state.W[...] = _average([result[0] for result in results], results, total)
        state.b[...] = _average([result[1] for result in results], results, total)
        return (sum(result[3] for result in results), sum(result[4] for result in results),
                results[0][5])

    def score(self, backend, W, b, n_threads):
        """The weighted mean loss and accuracy of (W, b) on every partition: one wave of
        tasks, each scoring its rows in blocks."""
        n = len(self.partitions)
        weights = self.client.submit(_round_weights, W, b)
        sums = sum(self.client.gather(self.client.map(
            _score_partition, self.partitions, [weights] * n, [self.config] * n)))
        if not sums[2] > 0:
            return float("nan"), float("nan")
        return float(sums[0] / sums[2]), float(sums[1] / sums[2])


def _partitions(client, dask, X, y, sample_weight, preprocessing, pixels):
    """The non-empty row blocks of X, y, sample_weight checked and converted on the workers
    (futures of :func:`_prepare_partition`), the sorted distinct labels of y, and the float
    dtype of training (float64 stays float64, anything else becomes float32; ``pixels``
    keep their bytes and train in float32).

    The blocks are read once: persisted, their labels counted, then converted. The raw blocks
    are released when the partitions are made; Dask keeps their lineage."""
    X = X.rechunk({1: -1})
    row_chunks = X.chunks[0]
    y = _rows_like_X(dask.array, y, row_chunks, "y")
    if sample_weight is None:
        X, y = client.persist([X, y])
        sw_blocks = [None] * len(row_chunks)
    else:
        sample_weight = _rows_like_X(dask.array, sample_weight, row_chunks, "sample_weight")
        X, y, sample_weight = client.persist([X, y, sample_weight])
        sw_blocks = sample_weight.to_delayed()
    classes = np.unique(dask.array.unique(y).compute())
    if len(classes) < 2:
        raise DataError(f"y holds one class only ({plain(classes)[1:-1]}); a classifier "
                        f"needs at least two classes")
    dtype = np.float64 if X.dtype == np.float64 and not pixels else np.float32
    partitions = client.compute([
        dask.delayed(_prepare_partition)(x_block, y_block, sw_block, classes, preprocessing,
                                         dtype, pixels)
        for x_block, y_block, sw_block, rows in zip(X.to_delayed().ravel(), y.to_delayed(),
                                                    sw_blocks, row_chunks) if rows > 0])
    return partitions, classes, dtype


def _rows_like_X(dask_array, values, row_chunks, name):
    """The 1-D ``values`` (a Dask array or array-like) as a Dask array cut like X's rows."""
    values = dask_array.asarray(values)
    if values.ndim != 1 or values.shape[0] != sum(row_chunks):
        raise DataError(f"X has {sum(row_chunks)} samples but {name} has shape {values.shape}")
    return values.rechunk((row_chunks,))


# --- the tasks: pure functions of their arguments, so Dask may rerun any of them anywhere --------

def _prepare_partition(X, y, sample_weight, classes, preprocessing, dtype, pixels):
    """One row block, checked and converted as ``fit`` does in one process: X (n_p, D)
    C-contiguous ``dtype`` (Pixels of its bytes if ``pixels``), y (n_p,) int64 indices into
    ``classes``, sample_weight (n_p,) ``dtype``."""
    X = apply_preprocessing(preprocessing, check_features(Pixels(X) if pixels else X,
                                                          dtype=dtype))
    y = encode_labels(check_labels(y, X.shape[0]), classes, "the training labels")
    return X, y, check_sample_weight(sample_weight, X.shape[0], dtype)


def _partition_weight(partition):
    """The total sample weight of one partition."""
    return float(partition[2].sum(dtype=np.float64))


def _round_weights(coef, intercept):
    """The weights every partition of a round starts from. Made a task rather than scattered
    so that a copy lost with a worker can be recomputed: scattered data has no lineage."""
    return coef, intercept


def _train_partition(partition, weights, round_index, partition_index, config):
    """One epoch of the engine over one partition from the round's weights; returns (W_p, b_p,
    n_p, the running loss sum, the running correct sum, the rate of the last step)."""
    X, y, sample_weight = partition
    backend = get_backend(config["backend"])
    W, b = weights[0].copy(), weights[1].copy()
    state = TrainingState(W, b, np.zeros_like(W), np.zeros_like(b),
                          np.random.default_rng([config["seed"], round_index,
                                                 partition_index]))
    source = ArraySource(backend, X, y, sample_weight, W, b)
    loss_sum, correct_sum, last_rate = source.train_epoch(
        backend, state, Schedule(*config["schedule"]), round_index, config["settings"])
    return (W, b, float(sample_weight.sum(dtype=np.float64)), loss_sum, correct_sum,
            last_rate)


def _score_partition(partition, weights, config):
    """The sums of s_i l_i, of s_i over the samples scored right and of s_i, of the weights on
    one partition, scored in blocks."""
    X, y, sample_weight = partition
    return evaluate_sums(get_backend(config["backend"]), X, y, weights[0], weights[1],
                         config["settings"].n_threads, sample_weight)


def _average(arrays, results, total):
    """The sample-weighted mean of the partitions' ``arrays``, summed in partition order in
    float64 (``results``: the partitions' results, their weights at index 2)."""
    return sum(array.astype(np.float64) * (result[2] / total)
               for array, result in zip(arrays, results))
