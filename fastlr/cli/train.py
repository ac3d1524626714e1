"""``fastlr train``: fit the model on MNIST's training set and report its test accuracy."""

import json
import sys
import time

import numpy as np

from ..backends import get_backend
from ..data import load_mnist
from ..history import check_history_path, write_history
from ..model import SoftmaxRegression
from .common import (EXIT_INTERRUPTED, add_backend, add_data_dir, add_seed, param_choices,
                     param_type)


def add_command(commands):
    """Add ``train`` to the subcommands ``commands``."""
    defaults = SoftmaxRegression()
    train = commands.add_parser(
        "train", help="train on MNIST and report the test accuracy",
        description="Train softmax regression on the MNIST training set with minibatch SGD and "
                    "report its accuracy on the 10,000 test images. The defaults reach about "
                    "92.6%% in well under a second with the compiled backends (cython, "
                    "numba).")
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
    add_seed(train, help="seed of the shuffling; same seed and threads give the same model "
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
                       help="write the per-epoch loss and accuracy there, as .csv or .json "
                            "(with the test set scored after every epoch)")
    train.add_argument("--score-train", action="store_true",
                       help="also score the whole training set after every epoch (one more "
                            "pass each); without it the train loss and accuracy are running "
                            "figures counted during the epoch")
    train.add_argument("--json", action="store_true",
                       help="print the summary as one JSON object on the last line")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=cmd_train)


def cmd_train(args):
    X_train, y_train, X_test, y_test = load_mnist(args.data_dir)
    model = SoftmaxRegression(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        lr_schedule=args.lr_schedule, momentum=args.momentum, alpha=args.l2,
        backend=args.backend, n_threads=args.threads, random_state=args.seed,
        early_stopping=args.early_stopping, preprocessing="deskew" if args.deskew else None)
    if args.history:
        check_history_path(args.history)
    if _compiles_on_first_run(get_backend(args.backend)):
        # Measured: the probe, the float32 epoch and predict_scores, ~25 s on 2 idle cores.
        hint = ("; the Cython backend needs no compiling: build it with `pip install -e .`"
                if args.backend == "auto" else "")
        print(f"fastlr: compiling the Numba kernels for this machine (about 25 s, once; later "
              f"runs load them from the cache){hint}", file=sys.stderr, flush=True)
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

    # The test set is scored after every epoch only where the score is seen: the bar, the
    # history file.
    test_each_epoch = not args.early_stopping and (show_progress or args.history)
    eval_set = (X_test, y_test) if test_each_epoch else None
    start = time.perf_counter()
    try:
        model.fit(X_train, y_train, eval_set=eval_set, on_epoch=on_epoch,
                  score_train=args.score_train)
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
          f"running train accuracy {last['train_accuracy']:.2%})")
    print(f"  training time   {train_time:.2f} s   ({summary['epochs']} epochs of batch "
          f"{args.batch_size}, median {summary['epoch_time_s'] * 1e3:.1f} ms per epoch of SGD)")
    print(f"  backend         {model.backend_}, {model.n_threads_} thread"
          f"{'s' if model.n_threads_ != 1 else ''}")
    if args.deskew:
        print("  preprocessing   deskew")
    if args.out:
        print(f"  model saved to  {args.out}")
    if args.history:
        print(f"  history         {args.history}")
    return 0


def _compiles_on_first_run(backend):
    """True if ``backend`` says its kernels are not compiled for this machine yet (so the first
    epoch will include the compilation); a backend without ``first_run_compiles`` never does."""
    first_run_compiles = getattr(backend, "first_run_compiles", None)
    return bool(first_run_compiles is not None and first_run_compiles())
