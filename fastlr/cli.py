"""``python -m fastlr``: train, evaluate and inspect softmax regression on MNIST.

Every problem a user can fix (a missing file, a bad flag value, bad data, a diverging learning
rate) is printed as one line on stderr, without a traceback, with a non-zero exit code.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from . import __version__
from .backends import AUTO_ORDER, default_n_threads, get_backend
from .data import load_mnist
from .errors import FastlrError, ModelFileError
from .explain import PAIR_EPOCHS, explain
from .history import check_history_path, write_history
from .machine import machine_info
from .model import SoftmaxRegression
from .preprocess import deskew

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line; argparse's message, printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text):
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _momentum(text):
    value = _non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser():
    """The argument parser of ``python -m fastlr``."""
    defaults = SoftmaxRegression()
    parser = _Parser(
        prog="fastlr",
        description="Softmax regression on MNIST, from scratch: train it, evaluate it, and see "
                    "why a linear model reads handwritten digits.",
        epilog="Start with `python -m fastlr train`. Each command has its own --help.")
    parser.add_argument("--version", action="version", version=f"fastlr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = commands.add_parser(
        "train", help="train on MNIST and report the test accuracy",
        description="Train softmax regression on the MNIST training set with minibatch SGD and "
                    "report its accuracy on the 10,000 test images. The defaults reach about "
                    "92.6%% in well under a second with the numba backend.")
    _add_data_dir(train)
    train.add_argument("--epochs", type=_positive_int, default=defaults.epochs,
                       help="passes over the training data (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                       help="images per SGD step (default: %(default)s)")
    train.add_argument("--lr", type=_positive_float, default=defaults.learning_rate,
                       help="learning rate at the first step (default: %(default)s)")
    train.add_argument("--lr-schedule", choices=("linear", "constant"),
                       default=defaults.lr_schedule,
                       help="'linear' decays the rate to 0 over the run; 'constant' keeps it "
                            "(default: %(default)s)")
    train.add_argument("--momentum", type=_momentum, default=defaults.momentum,
                       help="SGD momentum in [0, 1) (default: %(default)s)")
    train.add_argument("--l2", type=_non_negative_float, default=defaults.alpha,
                       help="L2 penalty on the weights (default: %(default)s)")
    _add_backend(train)
    train.add_argument("--seed", type=int, default=0,
                       help="seed of the shuffling; same seed and threads give the same model "
                            "(default: %(default)s)")
    train.add_argument("--early-stopping", action="store_true",
                       help="hold out 10%% of the training images and stop when their accuracy "
                            "stops improving")
    train.add_argument("--out", metavar="MODEL.npz",
                       help="save the trained model there (also on Ctrl-C)")
    train.add_argument("--deskew", action="store_true",
                       help="shear each image upright before the model sees it (also in "
                            "evaluate, explain and predict: the model file records it); with "
                            "the default settings the test accuracy rises to about 95.7%%")
    train.add_argument("--history", metavar="FILE",
                       help="write the per-epoch loss and accuracy there, as .csv or .json")
    train.add_argument("--json", action="store_true",
                       help="print the summary as one JSON object on the last line")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    # --- Dask: data-parallel training on a cluster (fastlr/distributed.py) -------------------
    cluster = train.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="train on the Dask cluster whose scheduler listens at ADDRESS "
                              "(e.g. tcp://10.0.0.5:8786): one partition of the training "
                              "images per worker thread, each worker reads its own from "
                              "--data-dir, and the weights are averaged after every epoch; "
                              "needs pip install \"fastlr[dask]\"")
    cluster.add_argument("--local-cluster", metavar="N", type=_positive_int,
                         help="start a Dask cluster of N worker processes on this machine and "
                              "train on it as --scheduler does")
    # -------------------------------------------------------------------------------------------
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help="test accuracy and per-class accuracy of a saved model",
        description="Score a model saved by `train --out` on the MNIST test set.")
    evaluate.add_argument("model", metavar="MODEL", help="a model file written by train --out")
    _add_data_dir(evaluate)
    evaluate.add_argument("--deskew", action="store_true",
                          help="deskew the test images before the model sees them (a model "
                               "trained with --deskew does so by itself)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser(
        "predict", help="read digits from images or arrays with a saved model",
        description="Predict the digit in each input with a model saved by `train --out`, and "
                    "show the three most probable digits. Inputs: PNG or JPEG images of any "
                    "size (made to look like MNIST: grey, ink bright on dark, the digit "
                    "scaled into 20x20 and centred by its centre of mass in 28x28); .npy "
                    "arrays and IDX files holding one 28x28 image or a batch, with uint8 "
                    "pixels 0-255 or float pixels in [0, 1].")
    predict.add_argument("model", metavar="MODEL", help="a model file written by train --out")
    predict.add_argument("inputs", metavar="FILE", nargs="+",
                         help="images (.png, .jpg), .npy arrays or IDX files")
    predict.add_argument("--json", action="store_true",
                         help="print the predictions as one JSON object")
    predict.set_defaults(handler=cmd_predict)

    info = commands.add_parser(
        "info", help="versions, backends, threads and CPU",
        description="What fastlr finds on this machine: versions, which backends are "
                    "available (and why one is not), threads and CPU.")
    info.add_argument("--json", action="store_true", help="print the result as JSON")
    info.set_defaults(handler=cmd_info)

    bench = commands.add_parser(
        "bench", help="measure training throughput against NumPy, peers and the hardware",
        description="Time one MNIST epoch of SGD per backend, batch size and thread count, "
                    "side by side with a plain NumPy loop, PyTorch and scikit-learn (when "
                    "installed) and the machine's own ceiling, all in one run. Each engine is "
                    "checked against the reference before it is timed.")
    bench.add_argument("--backends", type=_name_list, default=None,
                       help="comma-separated engines among numpy, numba, cython, torch, sklearn "
                            "(default: all)")
    bench.add_argument("--batch-sizes", type=_int_list, default=None,
                       help="comma-separated batch sizes (default: 64,256,1024)")
    bench.add_argument("--threads", type=_int_list, default=None,
                       help="comma-separated thread counts (default: 1 and all cores)")
    bench.add_argument("--repeats", type=_positive_int, default=None,
                       help="timed epochs per configuration; the median is reported "
                            "(default: 5)")
    bench.add_argument("--epochs", type=_positive_int, default=1,
                       help="epochs per timed run (default: %(default)s)")
    bench.add_argument("--kernels", choices=("all", "chosen"), default="chosen",
                       help="'all' also times every kernel version kept side by side: the Numba "
                            "optimization ladder and the Cython synchronization variants")
    bench.add_argument("--quick", action="store_true",
                       help="a subset for a first look: fastlr's backends, batch 64 and 1024, "
                            "all cores, 3 repeats, no peers")
    _add_data_dir(bench)
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--plot", metavar="FILE.png", help="also draw throughput by batch size")
    bench.set_defaults(handler=cmd_bench)
    _add_study_commands(commands)
    return parser


def _int_list(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got "
                                         f"{text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def _name_list(text):
    from .bench import DEFAULT_BACKENDS
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in DEFAULT_BACKENDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {', '.join(unknown) or text!r}; "
                                         f"choose among {', '.join(DEFAULT_BACKENDS)}")
    return names


def _add_data_dir(parser):
    parser.add_argument("--data-dir", metavar="DIR",
                        help="a directory with the four MNIST files (plain or .gz); default: "
                             "$FASTLR_DATA, the checkout's data/mnist, ~/.cache/fastlr/mnist, "
                             "else download")


def _add_backend(parser):
    parser.add_argument("--backend", choices=("auto",) + AUTO_ORDER, default="auto",
                        help="kernel implementation; auto takes the fastest available "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help=f"threads for the kernels (default: all {default_n_threads()} "
                             f"cores)")


# --- train ---------------------------------------------------------------------------------------

def cmd_train(args):
    # --- Dask: --scheduler / --local-cluster train on a cluster (fastlr/distributed.py) ------
    if args.scheduler or args.local_cluster:
        from .distributed import cluster_client
        with cluster_client(args.scheduler, args.local_cluster) as client:
            return _train(args, client)
    return _train(args, None)


def _train(args, client):
    """``train`` in this process, or, with a Dask ``client``, on its cluster."""
    X_train, y_train, X_test, y_test = load_mnist(args.data_dir)
    if client is not None:
        from .distributed import mnist_training_arrays
        X_train, y_train = mnist_training_arrays(sum(client.nthreads().values()),
                                                 *X_train.shape, data_dir=args.data_dir)
    # -------------------------------------------------------------------------------------------
    model = SoftmaxRegression(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        lr_schedule=args.lr_schedule, momentum=args.momentum, alpha=args.l2,
        backend=args.backend, n_threads=args.threads, random_state=args.seed,
        early_stopping=args.early_stopping, preprocessing="deskew" if args.deskew else None)
    if args.history:
        check_history_path(args.history)
    if _compiles_on_first_run(get_backend(args.backend)):
        print("fastlr: compiling the Numba kernels for this machine (about 20 s, once; later "
              "runs load them from the cache)", file=sys.stderr, flush=True)
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
            if "val_accuracy" in record:
                postfix["val" if args.early_stopping else "test"] = \
                    f"{record['val_accuracy']:.2%}"
            bar.set_postfix(postfix)
            bar.update(1)

    eval_set = None if args.early_stopping else (X_test, y_test)
    start = time.perf_counter()
    try:
        model.fit(X_train, y_train, eval_set=eval_set, on_epoch=on_epoch)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        done = len(getattr(model, "history_", []))
        if args.out and hasattr(model, "coef_"):
            model.save(args.out)
            print(f"fastlr: interrupted during epoch {done + 1}; the model trained so far "
                  f"is saved to {args.out}", file=sys.stderr)
        else:
            print(f"fastlr: interrupted during epoch {done + 1}; nothing saved (use --out)",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
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
        "model": args.out,
    }
    summary["preprocessing"] = model.preprocessing
    if args.out:
        model.save(args.out)
    if args.history:
        write_history(args.history, model.history_)
    if args.json:
        print(json.dumps(summary))
        return 0
    n, d = X_train.shape
    print(f"Trained softmax regression on {n:,} images of {d} pixels, {len(model.classes_)} "
          f"classes.")
    print(f"  test accuracy   {test_accuracy:.2%}   ({len(y_test):,} test images; "
          f"train accuracy {last['train_accuracy']:.2%})")
    print(f"  training time   {train_time:.2f} s   ({summary['epochs']} epochs of batch "
          f"{args.batch_size}, median {summary['epoch_time_s'] * 1e3:.1f} ms per epoch of SGD)")
    print(f"  backend         {model.backend_}, {model.n_threads_} thread"
          f"{'s' if model.n_threads_ != 1 else ''}")
    if client is not None:
        print(f"  cluster         {len(client.nthreads())} Dask workers, "
              f"{last['partitions']} partitions, weights averaged every epoch")
    if args.deskew:
        print("  preprocessing   deskew")
    if args.out:
        print(f"  model saved to  {args.out}")
    if args.history:
        print(f"  history         {args.history}")
    return 0


def _compiles_on_first_run(backend):
    """True if ``backend`` is numba and its kernels are not in Numba's on-disk cache yet (so
    the first epoch will include the compilation). ``predict_scores`` stands for them all:
    every training run compiles it with the epoch kernel."""
    try:
        index = backend.predict_scores._cache._cache_file._index_path
    except AttributeError:  # another backend, or a numba without this cache layout
        return False
    return not os.path.exists(index)


# --- evaluate ------------------------------------------------------------------------------------

def cmd_evaluate(args):
    model = SoftmaxRegression.load(args.model)
    _, _, X_test, y_test = load_mnist(args.data_dir)
    if args.deskew and model.preprocessing != "deskew":
        X_test = deskew(X_test)
    predicted = model.predict(X_test)
    correct = predicted == y_test
    per_class = {str(label): float(correct[y_test == label].mean())
                 for label in model.classes_ if (y_test == label).any()}
    result = {"model": args.model, "test_accuracy": float(correct.mean()),
              "n_test": int(len(y_test)), "per_class_accuracy": per_class}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model}: test accuracy {result['test_accuracy']:.2%} on {len(y_test):,} "
          f"images")
    print("  per class: " + "  ".join(f"{label}: {acc:.1%}" for label, acc in per_class.items()))
    return 0


# --- predict -------------------------------------------------------------------------------------

TOP_K = 3


def cmd_predict(args):
    from .images import read_inputs
    model = SoftmaxRegression.load(args.model)
    predictions = []
    for path in args.inputs:
        pixels = read_inputs(path, model.n_features_in_)
        proba = model.predict_proba(pixels)
        for row, p in enumerate(proba):
            top = np.argsort(-p, kind="stable")[:TOP_K]
            predictions.append({
                "input": path if len(proba) == 1 else f"{path}[{row}]",
                "label": model.classes_[top[0]].item(),
                "top": [{"label": model.classes_[k].item(), "probability": float(p[k])}
                        for k in top]})
    if args.json:
        print(json.dumps({"model": args.model, "predictions": predictions}))
        return 0
    for prediction in predictions:
        top = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in prediction["top"])
        print(f"{prediction['input']}: {prediction['label']}   ({top})")
    return 0


# --- info ----------------------------------------------------------------------------------------

def cmd_info(args):
    info = machine_info()
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"fastlr {__version__} on Python {info['versions']['python']}")
    print(f"  cpu        {info['cpu']}, {info['cores']} cores available")
    print("  versions   " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()
                                      if v is not None and k not in ("fastlr", "python")))
    print(f"  backends   {', '.join(info['backends'])} (auto uses {info['default_backend']})")
    for name, reason in info["unavailable"].items():
        print(f"  {name:<10} not available: {reason}")
    if "numba_threading_layer" in info:
        print(f"  numba      threading layer {info['numba_threading_layer']}")
    if "cython_openmp" in info:
        print(f"  cython     {'built with OpenMP' if info['cython_openmp'] else 'built without OpenMP: runs on one thread'}")
    if info["blas"]:
        print(f"  blas       {'; '.join(info['blas'])}")
    return 0


# --- bench ---------------------------------------------------------------------------------------

def cmd_bench(args):
    from . import bench
    cores = default_n_threads()
    if args.quick:
        backends = args.backends or list(bench.FASTLR_BACKENDS)
        batch_sizes = args.batch_sizes or [64, 1024]
        threads = args.threads or [cores]
        repeats = args.repeats or 3
    else:
        backends = args.backends or list(bench.DEFAULT_BACKENDS)
        batch_sizes = args.batch_sizes or [64, 256, 1024]
        threads = args.threads or sorted({1, cores})
        repeats = args.repeats or 5
    report = bench.run_bench(backends=backends, batch_sizes=batch_sizes, threads=threads,
                             repeats=repeats, epochs=args.epochs,
                             kernels=args.kernels == "all", time_to_accuracy=not args.quick,
                             data_dir=args.data_dir,
                             log=lambda message: print(f"  {message}", file=sys.stderr,
                                                       flush=True))
    print(bench.format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        bench.plot_report(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0


# --- plot and explain ---------------------------------------------------------------------------

def _add_study_commands(commands):
    plot = commands.add_parser(
        "plot", help="figures of a saved model: its weights or its training curves",
        description="Draw a figure of a model saved by `train --out`, as a PNG file.")
    figures = plot.add_subparsers(dest="figure", metavar="FIGURE", parser_class=_Parser)
    weights = figures.add_parser(
        "weights", help="the 10 weight vectors as 28x28 images",
        description="Draw each class's weights as the image they multiply: blue pixels vote "
                    "for the class, red ones against.")
    weights.add_argument("model", metavar="MODEL", help="a model file written by train --out")
    weights.add_argument("--out", default="weights.png", metavar="FILE.png",
                         help="where to write the figure (default: %(default)s)")
    weights.set_defaults(handler=cmd_plot_weights)
    curves = figures.add_parser(
        "curves", help="loss and accuracy over the epochs",
        description="Plot the training and test loss and accuracy after every epoch, from the "
                    "history stored in the model file.")
    curves.add_argument("model", metavar="MODEL", help="a model file written by train --out")
    curves.add_argument("--out", default="curves.png", metavar="FILE.png",
                        help="where to write the figure (default: %(default)s)")
    curves.set_defaults(handler=cmd_plot_curves)
    plot.set_defaults(handler=lambda args: _missing_figure(plot))

    explain = commands.add_parser(
        "explain", help="a report on what the model learned and why it works",
        description="Write report.md and its figures: the weights, the class means beside "
                    "them, the confusion matrix, per-class accuracy, the most confused pairs "
                    "with the mistakes themselves, and, for each of the 45 pairs of digits, how "
                    "well a two-class linear model separates them. Takes some 10-30 s with the "
                    "numpy backend.")
    explain.add_argument("model", metavar="MODEL", help="a model file written by train --out")
    _add_data_dir(explain)
    explain.add_argument("--out", default="report", metavar="DIR",
                         help="directory for report.md and its PNG figures (default: "
                              "%(default)s)")
    explain.add_argument("--deskew", action="store_true",
                         help="deskew the images before the model and the pairwise models see "
                              "them (a model trained with --deskew does so by itself)")
    explain.add_argument("--pair-epochs", type=_positive_int, default=None,
                         help=f"epochs of each pairwise model (default: {PAIR_EPOCHS})")
    _add_backend(explain)
    explain.add_argument("--seed", type=int, default=0,
                         help="seed of the pairwise models (default: %(default)s)")
    explain.set_defaults(handler=cmd_explain)


def _missing_figure(parser):
    raise UsageError(f"{parser.prog}: choose a figure: weights or curves (see --help)")


def _load_with_history(path):
    model = SoftmaxRegression.load(path)
    if not model.history_:
        raise ModelFileError(f"{path}: the model file holds no training history")
    return model


def cmd_plot_weights(args):
    from .plots import save_figure, weights_figure
    model = SoftmaxRegression.load(args.model)
    deskewed = ", deskewed pixels" if model.preprocessing == "deskew" else ""
    figure = weights_figure(model.coef_, model.classes_,
                            title=f"weights of {os.path.basename(args.model)}{deskewed}")
    print(f"wrote {save_figure(figure, args.out)}")
    return 0


def cmd_plot_curves(args):
    from .plots import curves_figure, save_figure
    model = _load_with_history(args.model)
    eval_label = "validation" if model.early_stopping else "test"
    figure = curves_figure(model.history_, eval_label=eval_label,
                           title=f"training of {os.path.basename(args.model)}")
    print(f"wrote {save_figure(figure, args.out)}")
    return 0


def cmd_explain(args):
    model = SoftmaxRegression.load(args.model)
    X_train, y_train, X_test, y_test = load_mnist(args.data_dir)
    numbers = explain(model, X_train, y_train, X_test, y_test, args.out,
                      model_name=os.path.basename(args.model), deskew=args.deskew,
                      pair_epochs=args.pair_epochs or PAIR_EPOCHS, backend=args.backend,
                      n_threads=args.threads, random_state=args.seed)
    print(numbers["paragraph"])
    print(f"wrote {numbers['files']['report']} and {len(numbers['files']) - 1} figures in "
          f"{numbers['seconds']:.1f} s")
    return 0


# --- entry point ---------------------------------------------------------------------------------

def main(argv=None):
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return args.handler(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except FastlrError as exc:
        print(f"fastlr: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fastlr: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
