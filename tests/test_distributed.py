"""Data-parallel training on a Dask cluster (fastlr/distributed.py).

One LocalCluster of 2 worker processes of one thread each, started here and shut down after the
module, serves every test that needs a cluster; those tests are the extended tier (the cluster
and its trainings on MNIST take most of a minute). The partitions are read from MNIST's files by
the workers (``training_arrays``), so a worker that dies takes its partitions with it and
Dask must read them again.
"""

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("distributed")
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402

from fastlr import DataError, DivergenceError, SoftmaxRegression, load_mnist  # noqa: E402
from fastlr.distributed import training_arrays  # noqa: E402

N_WORKERS = 2

# Tests that build Dask arrays from NumPy arrays send them inside the task graph, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Sending large graph")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def partitions(client):
    return training_arrays(N_WORKERS)


@pytest.fixture(scope="module")
def undisturbed(client, partitions, mnist):
    """The reference run: the defaults, seed 0, two partitions, scored on the test set."""
    X, y = partitions
    return SoftmaxRegression(random_state=0).fit(X, y, eval_set=(mnist[2], mnist[3]))


@pytest.mark.extended
def test_local_cluster_trains_mnist_to_the_accuracy_of_one_process(undisturbed, mnist):
    assert undisturbed.score(mnist[2], mnist[3]) >= 0.923
    history = undisturbed.history_
    assert [record["epoch"] for record in history] == list(range(1, 11))
    # The schedule runs over the rounds: a linear decay from 1.0 towards 0 over the whole fit.
    rates = [record["lr"] for record in history]
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.01
    assert history[-1]["val_accuracy"] == pytest.approx(undisturbed.score(mnist[2], mnist[3]))
    assert history[-1]["train_accuracy"] > history[0]["train_accuracy"]


@pytest.mark.extended
def test_same_seed_and_partitioning_give_the_same_weights(undisturbed, partitions):
    X, y = partitions
    again = SoftmaxRegression(random_state=0, epochs=3).fit(X, y)
    first = SoftmaxRegression(random_state=0, epochs=3).fit(X, y)
    np.testing.assert_array_equal(again.coef_, first.coef_)
    np.testing.assert_array_equal(again.intercept_, first.intercept_)
    other_seed = SoftmaxRegression(random_state=1, epochs=3).fit(X, y)
    assert not np.array_equal(other_seed.coef_, first.coef_)


@pytest.mark.extended
def test_one_partition_averages_to_its_own_epoch(client, mnist):
    """With one partition, averaging is the identity: a round is one epoch of the driver on
    the partition's own permutation, so the weights after it match one process's."""
    X_small, y_small = mnist[0][:3000], mnist[1][:3000]
    on_cluster = SoftmaxRegression(epochs=1, n_threads=1).fit(
        da.from_array(X_small, chunks=(3000, 784)), y_small)
    seed = int(np.random.default_rng(0).integers(2 ** 63))
    in_process = SoftmaxRegression(epochs=1, n_threads=1,
                                   random_state=np.random.default_rng([seed, 0, 0]))
    in_process.fit(X_small, y_small)
    np.testing.assert_array_equal(on_cluster.coef_, in_process.coef_)


@pytest.mark.extended
def test_unit_sample_weights_change_nothing_and_bad_rows_are_reported(client, mnist):
    X = da.from_array(mnist[0][:4000], chunks=(2000, 784))
    y = da.from_array(mnist[1][:4000], chunks=2000)
    plain = SoftmaxRegression(epochs=2).fit(X, y)
    weighted = SoftmaxRegression(epochs=2).fit(X, y, sample_weight=da.ones(4000, chunks=1000))
    np.testing.assert_array_equal(weighted.coef_, plain.coef_)
    with pytest.raises(DataError, match="NaN"):
        SoftmaxRegression(epochs=1).fit(da.where(da.arange(4000)[:, None] == 3999, np.nan, X),
                                        y)


@pytest.mark.extended
def test_a_diverging_round_keeps_the_last_averaged_weights(client, mnist):
    X = da.from_array(mnist[0][:2000] * 1e18, chunks=(1000, 784))
    y = da.from_array(mnist[1][:2000], chunks=1000)
    model = SoftmaxRegression(learning_rate=1e20, epochs=3)
    with pytest.raises(DivergenceError, match="diverged in epoch 1"):
        model.fit(X, y)
    assert not model.coef_.any() and model.history_ == []


class KillWorkerMidRound(SchedulerPlugin):
    """Kills, with SIGKILL, the worker that runs the first training task of round
    ``round_index``, a moment after the scheduler hands the task to it."""

    def __init__(self, scheduler, round_index, n_partitions, delay_s=0.02):
        self.scheduler = scheduler
        self.tasks_before = round_index * n_partitions
        self.delay_s = delay_s
        self.killed_pid = None

    def transition(self, key, start, finish, *args, **kwargs):
        if finish != "processing" or not str(key).startswith("_train_partition"):
            return
        if self.tasks_before > 0:
            self.tasks_before -= 1
            return
        if self.killed_pid is None:
            self.killed_pid = self.scheduler.tasks[key].processing_on.pid
            threading.Timer(self.delay_s, os.kill, (self.killed_pid, signal.SIGKILL)).start()


@pytest.mark.extended
def test_a_worker_killed_mid_round_changes_nothing(cluster, client, partitions, undisturbed,
                                                   mnist):
    killer = KillWorkerMidRound(cluster.scheduler, round_index=3, n_partitions=N_WORKERS)
    cluster.scheduler.add_plugin(killer, name="kill-worker-mid-round")
    try:
        X, y = partitions
        model = SoftmaxRegression(random_state=0).fit(X, y, eval_set=(mnist[2], mnist[3]))
    finally:
        cluster.scheduler.remove_plugin(name="kill-worker-mid-round")
    assert killer.killed_pid is not None
    client.wait_for_workers(N_WORKERS, timeout=60)
    assert killer.killed_pid not in client.run(os.getpid).values()
    assert len(model.history_) == 10
    np.testing.assert_array_equal(model.coef_, undisturbed.coef_)
    np.testing.assert_array_equal(model.intercept_, undisturbed.intercept_)


@pytest.mark.extended
def test_dask_ml_incremental_drives_partial_fit_block_by_block(client, mnist):
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X_train, y_train, X_test, y_test = mnist
    n, block = 20000, 5000
    X = da.from_array(X_train[:n], chunks=(block, 784))
    y = da.from_array(y_train[:n], chunks=block)
    incremental = wrappers.Incremental(SoftmaxRegression(learning_rate=0.1, n_threads=1),
                                       shuffle_blocks=False)
    incremental.fit(X, y, classes=np.arange(10))
    by_hand = SoftmaxRegression(learning_rate=0.1, n_threads=1)
    for start in range(0, n, block):
        by_hand.partial_fit(X_train[start:start + block], y_train[start:start + block],
                            classes=np.arange(10))
    np.testing.assert_array_equal(incremental.estimator_.coef_, by_hand.coef_)
    predicted = incremental.predict(da.from_array(X_test, chunks=(block, 784))).compute()
    np.testing.assert_array_equal(predicted, by_hand.predict(X_test))
    assert incremental.score(da.from_array(X_test, chunks=(block, 784)),
                             da.from_array(y_test, chunks=block)) > 0.88


@pytest.mark.extended
def test_train_on_a_running_scheduler_from_the_command_line(cluster, capsys):
    from fastlr.cli import main
    assert main(["train", "--scheduler", cluster.scheduler_address, "--epochs", "2",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["epochs"] == 2 and summary["test_accuracy"] > 0.9
    assert summary["partitions"] == N_WORKERS


def test_pixels_stay_bytes_on_the_workers_and_mean_their_features(client, mnist):
    """Pixels of a uint8 Dask array train on X / 255, as Pixels do in memory, with the bytes
    themselves in the partitions the kernels read; a plain uint8 Dask array means its values,
    as a plain uint8 array does in memory."""
    from fastlr import Pixels
    from fastlr.distributed import _prepare_partition
    images = load_mnist(dtype=np.uint8)[0][:6000]
    labels = mnist[1][:6000]
    X = da.from_array(images, chunks=(3000, 784))
    y = da.from_array(labels, chunks=3000)
    on_bytes = SoftmaxRegression(epochs=2).fit(Pixels(X), y)
    on_features = SoftmaxRegression(epochs=2).fit(X / np.float32(255), y)
    assert on_bytes.coef_.dtype == np.float32
    np.testing.assert_allclose(on_bytes.coef_, on_features.coef_, atol=1e-4)
    as_numbers = SoftmaxRegression(epochs=1, learning_rate=1e-5).fit(X, y)
    in_memory = SoftmaxRegression(epochs=1, learning_rate=1e-5).fit(images, labels)
    assert as_numbers.score(images, labels) == pytest.approx(
        in_memory.score(images, labels), abs=0.02)
    partition = _prepare_partition(images[:10], labels[:10], None, np.arange(10), None,
                                   np.float32, True)
    assert isinstance(partition[0], Pixels) and partition[0].data.dtype == np.uint8


def test_many_classes_fit_and_score_inside_a_worker_memory_limit():
    """345 classes on 400,000 rows in one partition: scoring it at once would need several GB
    of scores and temporaries; in blocks it fits a 1 GiB worker (which Dask kills at 95%)."""
    rng = np.random.default_rng(0)
    n, d, c = 400_000, 8, 345
    centers = rng.standard_normal((c, d)).astype(np.float32) * 3
    labels = rng.integers(0, c, n)
    X = centers[labels] + rng.standard_normal((n, d)).astype(np.float32)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit="1GiB",
                      dashboard_address=None) as small, Client(small):
        model = SoftmaxRegression(epochs=2, batch_size=1024, learning_rate=0.5).fit(
            da.from_array(X, chunks=(n, d)), da.from_array(labels, chunks=n),
            score_train=True)
    assert len(model.classes_) == c and len(model.history_) == 2
    assert model.history_[-1]["end_train_accuracy"] > 0.5


def test_dask_arrays_need_a_client(monkeypatch):
    import distributed

    def no_client():
        raise ValueError("No clients found")

    monkeypatch.setattr(distributed, "get_client", no_client)
    with pytest.raises(DataError, match="no Dask client is running"):
        SoftmaxRegression(epochs=1).fit(da.zeros((4, 3), chunks=2), np.array([0, 1, 0, 1]))


def test_without_dask_the_error_says_how_to_get_it(tmp_path):
    code = ("import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
            "from fastlr.cli import main\n"
            "sys.exit(main(['train', '--local-cluster', '2']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        'fastlr: error: training on a Dask cluster needs Dask: pip install "fastlr[dask]"']
