"""``fastlr train``: fit the model on a data set's training images and report its test accuracy."""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..backends import get_backend
from ..data import max_idx_bytes
from ..errors import DataError, WriteError
from ..history import check_history_path, write_history
from ..machine import memory_available
from ..model import SoftmaxRegression
from ..pixels import Pixels
from ..streaming import (DEFAULT_BUFFER_SIZE, DEFAULT_CHUNK_SIZE, DEFAULT_TEST_SIZE,
                         is_streaming_dir, open_source, why_stream)
from ..threads import describe_changes
from .common import (EXIT_INTERRUPTED, UsageError, add_backend, add_data_dir, add_seed,
                     load_data, param_choices, param_type, positive_int)


def add_command(commands):
    """Add ``train`` to the subcommands ``commands``."""
    defaults = SoftmaxRegression()
    train = commands.add_parser(
        "train", help="train on MNIST (or another data set in its format) and report the test "
                      "accuracy",
        description="Train softmax regression on a data set's training images with minibatch "
                    "SGD and report its accuracy on the test images. By default the data set "
                    "is MNIST; --dataset names another (fashion-mnist, kmnist), "
                    "--data-dir reads any in MNIST's format.")
    add_data_dir(train)
    train.add_argument("--epochs", type=param_type("epochs"), default=defaults.epochs,
                       help="passes over the training data (default: %(default)s)")
    train.add_argument("--batch-size", type=param_type("batch_size"),
                       default=defaults.batch_size,
                       help="images per SGD step (default: %(default)s)")
    train.add_argument("--lr", type=param_type("learning_rate"),
                       default=defaults.learning_rate,
                       help="learning rate at the first step (default: %(default)s)")
    train.add_argument("--lr-schedule", choices=param_choices("lr_schedule"),
                       default=defaults.lr_schedule,
                       help="'linear' decays the rate to 0 over the run; 'constant' keeps it "
                            "(default: %(default)s)")
    train.add_argument("--momentum", type=param_type("momentum"), default=defaults.momentum,
                       help="SGD momentum in [0, 1) (default: %(default)s)")
    train.add_argument("--l2", type=param_type("alpha"), default=defaults.alpha,
                       help="L2 penalty on the weights (default: %(default)s)")
    add_backend(train)
    add_seed(train, help="seed of the shuffling; the same seed gives the same model, on any "
                         "number of threads (default: %(default)s)")
    train.add_argument("--early-stopping", action="store_true",
                       help="hold out 10%% of the training images and stop when their accuracy "
                            "stops improving")
    train.add_argument("--out", metavar="MODEL.npz",
                       help="save the trained model there (also on Ctrl-C once an epoch has "
                            "finished)")
    train.add_argument("--deskew", action="store_true",
                       help="shear each image upright before the model sees it (also in "
                            "evaluate, explain and predict: the model file records it); with "
                            "a linear model gains accuracy on MNIST")
    train.add_argument("--history", metavar="FILE",
                       help="write the per-epoch loss and accuracy there, as .csv or .json "
                            "(with the test set scored after every epoch)")
    train.add_argument("--score-train", action="store_true",
                       help="also score the whole training set after every epoch (one more "
                            "pass each); without it the train loss and accuracy are running "
                            "figures counted during the epoch")
    train.add_argument("--json", action="store_true",
                       help="print the summary as one JSON object on the last line")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    stream = train.add_argument_group(
        "data larger than memory",
        "Stream the training images from --data-dir a shuffle buffer at a time instead of "
        "loading them: uncompressed IDX files, or one uint8 .npy file of images "
        "per class, named by its class (Quick, Draw!'s layout; such a directory always "
        "streams). Memory use is bounded by the buffer, not the data set.")
    stream.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                        help="stream the IDX files of --data-dir instead of loading them, or "
                             "(--no-stream) load them; by default they stream when loading "
                             "them would not fit in the memory this process may use (its "
                             "memory cgroup's limit or the available memory), and train says "
                             "so")
    stream.add_argument("--chunk-size", type=positive_int, default=DEFAULT_CHUNK_SIZE,
                        metavar="ROWS", help="images of a file read front to back; every epoch "
                                             "visits a file's chunks in a new random order "
                                             "(default: %(default)s)")
    stream.add_argument("--shuffle-buffer", type=positive_int, default=DEFAULT_BUFFER_SIZE,
                        metavar="ROWS",
                        help="images in the shuffle buffer: drawn from every file in proportion "
                             "to what it has left and trained on in a random order; two "
                             "buffers are held (the next one is read while this one trains), "
                             "about 2 bytes of memory per pixel of them (default: "
                             "%(default)s)")
    stream.add_argument("--test-size", type=positive_int, default=DEFAULT_TEST_SIZE,
                        metavar="ROWS",
                        help="for .npy class files: images held out from the end of the files "
                             "as the test set (default: %(default)s)")
    cluster = train.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="train on the Dask cluster whose scheduler listens at ADDRESS "
                              "(e.g. tcp://10.0.0.5:8786): one partition of the training "
                              "images per worker thread, each worker reads its own from "
                              "the data set's files, and the weights are averaged after every "
                              "epoch; needs pip install \"fastlr[dask]\"")
    cluster.add_argument("--local-cluster", metavar="N", type=positive_int,
                         help="start a Dask cluster of N worker processes on this machine and "
                              "train on it as --scheduler does")
    train.set_defaults(handler=cmd_train)


def cmd_train(args):
    if args.history:
        check_history_path(args.history)
        if args.out and Path(args.history).resolve() == Path(args.out).resolve():
            raise UsageError(f"fastlr train: --history and --out both name {args.out}; the "
                             f"history would overwrite the model (see --help)")
    streams = _streams(args)
    if args.scheduler or args.local_cluster:
        from ..distributed import cluster_client
        with cluster_client(args.scheduler, args.local_cluster) as client:
            return _train(args, client, streams)
    return _train(args, None, streams)


def _streams(args):
    """True if the training data streams: ``--stream``, a directory that only streams (class
    files), or IDX files of ``--data-dir`` too large to load (said in one line), unless
    ``--no-stream``."""
    streams = args.stream or bool(args.data_dir and is_streaming_dir(args.data_dir))
    if streams and not args.data_dir:
        raise DataError("--stream needs --data-dir DIR")
    cluster = args.scheduler or args.local_cluster
    if streams and cluster:
        raise DataError("a streamed data set trains in this process, not on a Dask cluster")
    if args.stream is None and not streams and args.data_dir and not cluster:
        why = why_stream(args.data_dir, *memory_available(), max_idx_bytes())
        if why is not None:
            print(f"fastlr: {why}", file=sys.stderr, flush=True)
            streams = True
    return streams


def _train(args, client, streams):
    """``train`` in this process, or, with a Dask ``client``, on its cluster; with
    ``streams``, from the data on disk a shuffle buffer at a time."""
    if streams:
        dataset = open_source(args.data_dir, chunk_size=args.chunk_size,
                              buffer_size=args.shuffle_buffer, test_size=args.test_size)
        X_train, y_train, (X_test, y_test) = dataset, None, dataset.test
        n_train = dataset.n_samples
    else:
        # The images as they are stored, bytes: a backend that takes pixels reads them so
        # (a quarter of float32's traffic), any other gets their features X / 255 (pixels.py).
        dataset = load_data(args, pixels=True)
        X_train, y_train, X_test, y_test = dataset.arrays()
        X_train, X_test = Pixels(X_train), Pixels(X_test)
        n_train = len(y_train)
    if client is not None:
        from ..distributed import training_arrays
        # A known data set is looked up by name on each worker, any other by its directory.
        where = ({"name": dataset.name} if dataset.name else {"data_dir": dataset.directory})
        X_train, y_train = training_arrays(sum(client.nthreads().values()), *X_train.shape,
                                           **where)
    model = SoftmaxRegression(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        lr_schedule=args.lr_schedule, momentum=args.momentum, alpha=args.l2,
        backend=args.backend, n_threads=args.threads, random_state=args.seed,
        early_stopping=args.early_stopping, preprocessing="deskew" if args.deskew else None)
    if _compiles_on_first_run(get_backend(args.backend)):
        # How long it takes: bench/numba_compile.py (the probe, the float32 epoch and
        # predict_scores).
        hint = ("; the Cython backend needs no compiling: build it with `pip install -e .`"
                if args.backend == "auto" else "")
        print(f"fastlr: compiling the Numba kernels for this machine (once, and it takes a "
              f"while; later runs load them from the cache){hint}", file=sys.stderr,
              flush=True)
    show_progress = not args.no_progress and not args.json
    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.epochs, desc="training", unit="epoch", file=sys.stderr,
                   dynamic_ncols=True)

    def on_epoch(record):
        if bar is not None:
            postfix = {"loss": f"{record['train_loss']:.4f}",
                       "train": f"{record['train_accuracy']:.2%}"}
            for name in ("test", "val"):
                if f"{name}_accuracy" in record:
                    postfix[name] = f"{record[name + '_accuracy']:.2%}"
            bar.set_postfix(postfix)
            bar.update(1)

    # The test set is scored after every epoch only where the score is seen: the bar, the
    # history file.
    test_each_epoch = not args.early_stopping and (show_progress or args.history)
    eval_set = (X_test, y_test) if test_each_epoch else None
    start = time.perf_counter()
    try:
        model.fit(X_train, y_train, eval_set=eval_set, on_epoch=on_epoch,
                  score_train=args.score_train, eval_name="test")
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        return _save_interrupted(args, model, dataset)
    finally:
        if bar is not None:
            bar.close()
    train_time = time.perf_counter() - start

    test_accuracy = model.score(X_test, y_test)
    last = model.history_[-1]
    summary = {
        "test_accuracy": test_accuracy,
        "train_accuracy": last["train_accuracy"],
        "train_loss": last["train_loss"],
        "train_time_s": train_time,
        "epoch_time_s": float(np.median([r["time_s"] for r in model.history_])),
        "epochs": len(model.history_),
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "backend": model.backend_,
        "threads": model.n_threads_,
        "thread_changes": getattr(model, "thread_changes_", None),
        "model": args.out,
        "dataset": dataset.record(),
        "streamed": streams,
    }
    summary["preprocessing"] = model.preprocessing
    if args.early_stopping:
        summary["early_stopping"] = {"held_out": model.validation_size_,
                                     "best_epoch": model.best_epoch_}
    if client is not None:
        summary["partitions"] = X_train.data.numblocks[0]
    # The files are written before the summary is printed, and a failed write is reported
    # after it: the accuracy of a run is never lost to a full disk.
    written, failures = _save(args, model, dataset)
    if args.out not in written:
        summary["model"] = None
    _print_summary(args, summary, model, dataset, n_train, len(y_test), written, client)
    if failures:
        raise WriteError("; ".join(str(failure) for failure in failures))
    return 0


def _save_interrupted(args, model, dataset):
    """After Ctrl-C: save the model (and history) only if at least one full epoch finished.

    A model file is only ever replaced by a model that trained at least one full epoch: an
    interrupt in the first epoch (while the Numba kernels compile, say) leaves weights that
    are zero or a fraction of an epoch in, and an existing good model must not give way to
    them. Later interrupts save the weights trained so far.
    """
    done = len(getattr(model, "history_", []))
    if not args.out:
        print(f"fastlr: interrupted during epoch {done + 1}; nothing saved (use --out)",
              file=sys.stderr)
    elif done == 0:
        print(f"fastlr: interrupted during epoch 1; nothing saved: no epoch finished, so "
              f"{args.out} is left as it was", file=sys.stderr)
    else:
        _, failures = _save(args, model, dataset)
        if failures:
            raise WriteError("; ".join(str(failure) for failure in failures))
        print(f"fastlr: interrupted during epoch {done + 1}; the model trained so far is "
              f"saved to {args.out} ({done} full epoch{'s' if done != 1 else ''} and part of "
              f"the next)", file=sys.stderr)
    return EXIT_INTERRUPTED


def _save(args, model, dataset):
    """Write the model to ``--out`` and the history to ``--history``, those given; the history
    is written even if the model could not be.

    Returns
    -------
    written : set of the paths written
    failures : list of WriteError, one per failed write
    """
    written, failures = set(), []
    for path, write in ((args.out, lambda: model.save(args.out, dataset=dataset.record())),
                        (args.history, lambda: write_history(args.history, model.history_))):
        if path is None:
            continue
        try:
            write()
        except WriteError as exc:
            failures.append(exc)
        else:
            written.add(path)
    return written, failures


def _print_summary(args, summary, model, dataset, n_train, n_test, written, client):
    """The summary of a training run: one JSON line with ``--json``, else a few lines."""
    if args.json:
        print(json.dumps(summary))
        return
    test_accuracy, last = summary["test_accuracy"], model.history_[-1]
    height, width = dataset.image_shape
    print(f"Trained softmax regression on {dataset.title}: {n_train:,} images of "
          f"{height}x{width} pixels, {len(model.classes_)} classes.")
    print(f"  test accuracy   {test_accuracy:.2%}   ({n_test:,} test images; "
          f"running train accuracy {last['train_accuracy']:.2%})")
    epochs = summary["epochs"]
    batch = (f"batch {args.batch_size}" if args.batch_size < n_train else
             f"one batch of all {n_train:,} images")
    print(f"  training time   {summary['train_time_s']:.2f} s   ({epochs} epoch"
          f"{'s' if epochs != 1 else ''} of {batch}, median "
          f"{summary['epoch_time_s'] * 1e3:.1f} ms per epoch of SGD)")
    threads = describe_changes(getattr(model, "thread_changes_", None) or [])
    if not threads:
        threads = f"{model.n_threads_} thread{'s' if model.n_threads_ != 1 else ''}"
    print(f"  backend         {model.backend_}, {threads}")
    if args.early_stopping:
        stop = summary["early_stopping"]
        stopped = (f"ran all {summary['epochs']} epochs without stopping"
                   if stop["best_epoch"] is None else
                   f"stopped after epoch {summary['epochs']}, kept the weights of epoch "
                   f"{stop['best_epoch']}, the best on it")
        print(f"  early stopping  held out {stop['held_out']:,} training images as a "
              f"validation set; {stopped}")
    if client is not None:
        print(f"  cluster         {len(client.nthreads())} Dask workers, "
              f"{summary['partitions']} partitions, weights averaged every epoch")
    if args.deskew:
        print("  preprocessing   deskew")
    if args.out in written:
        print(f"  model saved to  {args.out}")
    if args.history in written:
        print(f"  history         {args.history}")


def _compiles_on_first_run(backend):
    """True if ``backend`` says its kernels are not compiled for this machine yet (so the first
    epoch will include the compilation); a backend without ``first_run_compiles`` never does."""
    first_run_compiles = getattr(backend, "first_run_compiles", None)
    return bool(first_run_compiles is not None and first_run_compiles())
