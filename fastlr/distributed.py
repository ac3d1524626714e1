"""Data-parallel training on a Dask cluster: synchronous model averaging.

Shapes: N samples, D features, C classes, P partitions (the row blocks of the Dask array X),
R rounds (``epochs``: one round is one pass over all N samples).

``SoftmaxRegression.fit`` hands Dask arrays to :func:`fit`. The partitions stay on the workers
that hold them; only weights move. One round:

1. The averaged weights W (C, D), b (C,) of the last round become one task on the cluster
   (zeros before the first round); each worker fetches one copy, C (D + 1) floats in.
2. Every partition p runs one epoch of the fused kernel from those weights, through the driver
   (:func:`fastlr.sgd.run_sgd`), with its own permutation and its slice of the learning-rate
   schedule, and sends its weights W_p, b_p back: C (D + 1) floats out.
3. The client averages them by sample count, ``W = sum_p n_p W_p / sum_p n_p`` (n_p: the
   partition's total sample weight, its number of samples without ``sample_weight``), in
   partition order and in float64.
4. Every partition scores the averaged weights; the history gets one record per round with
   their loss and accuracy on the training data (and on ``eval_set``, scored by the client),
   the rate of the round's last step, its wall time and the number of partitions.

The schedule runs over the rounds: partition p with S_p = ceil(n_p / batch_size) steps per
epoch takes steps ``r S_p .. (r + 1) S_p - 1`` of a schedule of ``R S_p`` steps in round r, so
a linear schedule decays to 0 over the whole fit as it does in one process. Momentum starts
from zero in every round: no worker keeps state between rounds.

Determinism and faults: a task is a pure function of its partition, the weights it starts from,
the round, the partition index and the seed. The permutation comes from
``default_rng([seed, round, partition])``, never from the worker that runs it, and the kernel
thread count is fixed for the whole fit (``n_threads``, default 1: Dask runs one task per
worker thread). So the same seed and partitioning give bitwise the same model, and when a
worker dies mid-round Dask itself recomputes what it lost, the partitions from their graph and
the round's tasks from the last averaged weights, with the same result.

A partition is whatever a block of the Dask array is: a block of an in-memory array cut by
``da.from_array`` (it travels to the workers inside the task graph), or a block each worker
reads from storage (``da.from_zarr``, ``da.from_npy_stack``, :func:`training_arrays`); a
streamed source only has to hand a worker its block's rows.
"""

import asyncio
import contextlib
import socket
import sys
import time
from pathlib import Path

import numpy as np

from . import sgd
from .backends import get_backend
from .data import load_dataset
from .errors import DataError, DivergenceError, MissingDependencyError
from .validation import (check_features, check_labels, check_sample_weight, encode_labels,
                         plain)
from .preprocess import apply_preprocessing

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


def is_dask_array(X):
    """Whether X is a Dask array. Never imports Dask: if it is not loaded, X is not one."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(X, dask_array.Array)


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
    """A data set's training images and labels as Dask arrays X (N, D) float32 and y (N,) int64
    of ``n_partitions`` row blocks, each read from disk by the worker that computes it.

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
        X_blocks.append(dask.array.from_delayed(images, (hi - lo, n_features), np.float32))
        y_blocks.append(dask.array.from_delayed(labels, (hi - lo,), np.int64))
    return dask.array.concatenate(X_blocks), dask.array.concatenate(y_blocks)


def _training_rows(name, data_dir, lo, hi):
    """Rows lo..hi-1 of a data set's training images and labels, read on the worker."""
    X_train, y_train, _, _ = load_dataset(name, data_dir).arrays()
    return np.ascontiguousarray(X_train[lo:hi]), y_train[lo:hi].astype(np.int64)


def fit(model, X, y, sample_weight=None, eval_set=None, on_epoch=None):
    """Train ``model`` (a SoftmaxRegression) on the Dask array X by synchronous model averaging.

    Parameters
    ----------
    model : SoftmaxRegression, trained in place from zero weights
    X : dask.array (N, D), chunked along the rows; each row block is a partition
    y : dask.array or array-like (N,), the labels
    sample_weight : dask.array or array-like (N,), optional
    eval_set : (X_eval, y_eval), optional; scored by the client after every round
    on_epoch : callable(record), optional; called after every round with its record

    Returns
    -------
    model

    Raises
    ------
    DataError
        For unusable data, or when no Dask client is running.
    DivergenceError
        If a partition's loss stops being finite; the model keeps the weights averaged at the
        end of the last round that finished.
    """
    dask, distributed = require_dask()
    try:
        client = distributed.get_client()
    except ValueError:
        raise DataError("fit got Dask arrays but no Dask client is running: start one with "
                        "dask.distributed.Client(...) first") from None
    model._check_hyperparameters()
    if model.early_stopping:
        raise DataError("early_stopping does not work on Dask arrays; pass eval_set to follow "
                        "the accuracy per round instead")
    if X.ndim != 2:
        raise DataError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if any(np.isnan(n) for n in X.shape):
        raise DataError("X has blocks of unknown size; call X.compute_chunk_sizes() first")
    partitions, classes, dtype = _partitions(client, dask, X, y, sample_weight,
                                             model.preprocessing)
    n_features = X.shape[1]

    validation = None
    if eval_set is not None:
        X_eval = apply_preprocessing(model.preprocessing, check_features(
            eval_set[0], dtype=dtype, n_features=n_features))
        y_eval = check_labels(eval_set[1], X_eval.shape[0])
        validation = (X_eval, encode_labels(y_eval, classes, "the training labels"))

    model._initialize(classes, n_features, dtype)
    model.n_threads_ = int(model.n_threads or 1)
    backend = get_backend(model.backend_)
    config = {"backend": model.backend_, "n_threads": model.n_threads_,
              "batch_size": int(model.batch_size), "learning_rate": float(model.learning_rate),
              "lr_schedule": model.lr_schedule, "momentum": float(model.momentum),
              "alpha": float(model.alpha), "n_rounds": int(model.epochs),
              "seed": int(model._rng.integers(2 ** 63))}

    weights = client.submit(_round_weights, model.coef_, model.intercept_)
    for round_index in range(config["n_rounds"]):
        start = time.perf_counter()
        n_partitions = len(partitions)
        trained = client.map(_train_partition, partitions, [weights] * n_partitions,
                             [round_index] * n_partitions, range(n_partitions),
                             [config] * n_partitions)
        try:
            results = client.gather(trained)
        except DivergenceError:
            lr = config["learning_rate"]
            raise DivergenceError(
                f"training diverged in round {round_index + 1} (the loss of a partition "
                f"stopped being finite): the learning rate {lr:g} is too high; try a smaller "
                f"one, e.g. --lr {lr / 10:g}. " + (
                    f"The weights averaged in round {round_index} are kept" if round_index
                    else "The weights are not trained")) from None
        coef, intercept, lr_last = _average(results, dtype)
        weights = client.submit(_round_weights, coef, intercept)
        scores = client.gather(client.map(_score_partition, partitions,
                                          [weights] * n_partitions, [config] * n_partitions))
        model.coef_, model.intercept_ = coef, intercept
        total = sum(weight for _, _, weight in scores)
        record = {"epoch": round_index + 1,
                  "train_loss": sum(loss * weight for loss, _, weight in scores) / total,
                  "train_accuracy": sum(acc * weight for _, acc, weight in scores) / total,
                  "lr": lr_last, "time_s": time.perf_counter() - start,
                  "partitions": len(partitions)}
        if validation is not None:
            val_loss, val_acc = sgd.evaluate(backend, validation[0], validation[1], coef,
                                             intercept, model.n_threads_)
            record.update(val_loss=val_loss, val_accuracy=val_acc)
        model.history_.append(record)
        if model.verbose:
            model._print_epoch(record)
        if on_epoch is not None:
            on_epoch(record)
    return model


def _partitions(client, dask, X, y, sample_weight, preprocessing):
    """The non-empty row blocks of X, y, sample_weight checked and converted on the workers
    (futures of :func:`_prepare_partition`), the sorted distinct labels of y, and the float
    dtype of training (float64 stays float64, anything else becomes float32).

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
    dtype = np.float64 if X.dtype == np.float64 else np.float32
    partitions = client.compute([
        dask.delayed(_prepare_partition)(x_block, y_block, sw_block, classes, preprocessing,
                                         dtype)
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

def _prepare_partition(X, y, sample_weight, classes, preprocessing, dtype):
    """One row block, checked and converted as ``fit`` does in one process: X (n_p, D) C-contiguous
    ``dtype``, y (n_p,) int64 indices into ``classes``, sample_weight (n_p,) ``dtype``."""
    X = apply_preprocessing(preprocessing, check_features(X, dtype=dtype))
    y = encode_labels(check_labels(y, X.shape[0]), classes, "the training labels")
    return X, y, check_sample_weight(sample_weight, X.shape[0], X.dtype)


def _round_weights(coef, intercept):
    """The weights every partition of a round starts from. Made a task rather than scattered
    so that a copy lost with a worker can be recomputed: scattered data has no lineage."""
    return coef, intercept


def _train_partition(partition, weights, round_index, partition_index, config):
    """One epoch over one partition from the round's weights; returns (W_p, b_p, n_p, lr)."""
    X, y, sample_weight = partition
    coef, intercept = weights[0].copy(), weights[1].copy()
    steps = -(-X.shape[0] // config["batch_size"])
    lr_steps = sgd.learning_rates(config["lr_schedule"], config["learning_rate"],
                                  steps * config["n_rounds"])
    lr_round = lr_steps[round_index * steps:(round_index + 1) * steps]
    rng = np.random.default_rng([config["seed"], round_index, partition_index])
    sgd.run_sgd(get_backend(config["backend"]), X, y, sample_weight, coef, intercept,
                epochs=1, batch_size=config["batch_size"],
                learning_rate=config["learning_rate"], momentum=config["momentum"],
                alpha=config["alpha"], n_threads=config["n_threads"], rng=rng,
                lr_steps=lr_round)
    return coef, intercept, float(sample_weight.sum(dtype=np.float64)), float(lr_round[-1])


def _score_partition(partition, weights, config):
    """Mean loss and accuracy of the weights on one partition, and its total sample weight."""
    X, y, sample_weight = partition
    loss, accuracy = sgd.evaluate(get_backend(config["backend"]), X, y, weights[0], weights[1],
                                  config["n_threads"], sample_weight)
    return loss, accuracy, float(sample_weight.sum(dtype=np.float64))


def _average(results, dtype):
    """The sample-weighted mean of the partitions' weights, summed in partition order in float64."""
    total = sum(n for _, _, n, _ in results)
    coef = sum(W.astype(np.float64) * (n / total) for W, _, n, _ in results)
    intercept = sum(b.astype(np.float64) * (n / total) for _, b, n, _ in results)
    return coef.astype(dtype), intercept.astype(dtype), results[0][3]
