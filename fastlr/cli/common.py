"""What every command shares: the parser class, common flags, exit codes, one-line user errors.

Every problem a user can fix (a missing file, a bad flag value, bad data, a diverging learning
rate) is printed by :func:`run` as one line on stderr, without a traceback, with a non-zero exit
code. Flag values are checked by the constraints in :mod:`fastlr.validation`, the estimator's own.
"""

import argparse
import os
import sys

from ..backends import default_n_threads
from ..datasets import DATASETS
from ..errors import DataError, FastlrError
from ..validation import (NON_NEGATIVE_WHOLE, POSITIVE_WHOLE, PARAMETER_CONSTRAINTS, Options,
                          argument_type, param_type)

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line; argparse's message, printed as one line."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised as :class:`UsageError`, to print as one line."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


def param_choices(name):
    """The values a parameter allows when it is one of a fixed set (for argparse ``choices``)."""
    options = [c for c in PARAMETER_CONSTRAINTS[name] if isinstance(c, Options)]
    return options[0].choices


def add_data_dir(parser, model_default=False, by_name=True):
    """``--dataset NAME`` (unless not ``by_name``) or ``--data-dir DIR``; with ``model_default``
    the default is the data set recorded in the model file."""
    source = parser.add_mutually_exclusive_group()
    default = ("the data set the model was trained on" if model_default else
               "$FASTLR_DATA, else mnist")
    if by_name:
            source.add_argument("--dataset", metavar="NAME", choices=tuple(DATASETS),
                            help=f"a data set fastlr knows: {', '.join(DATASETS)}; checked "
                                 f"against its published checksums, downloaded into "
                                 f"~/.cache/fastlr/NAME if it is not there (only mnist ships "
                                 f"with fastlr); default: {default}")
    source.add_argument("--data-dir", metavar="DIR",
                        help="a directory with any data set in MNIST's format: four IDX files "
                             "in MNIST's names (plain or .gz), read as they are")


def load_data(args, model=None, pixels=False):
    """The :class:`~fastlr.data.Dataset` the flags of :func:`add_data_dir` name; without them,
    the one ``model`` records (see :func:`fastlr.data.load_recorded`), else the default
    lookup. Its images are float32 features in [0, 1], or with ``pixels`` the uint8 bytes as
    stored.

    Raises
    ------
    DataError
        If the model was trained on a directory's data set that is no longer there and no flag
        says where it is.
    """
    import numpy as np

    from ..data import load_dataset, load_recorded
    progress = not (getattr(args, "no_progress", False) or getattr(args, "json", False))
    dtype = np.uint8 if pixels else np.float32
    if args.dataset is None and args.data_dir is None and model is not None:
        record = getattr(model, "dataset_", None)
        if record:
            try:
                return load_recorded(record, dtype=dtype, progress=progress)
            except DataError as exc:
                raise DataError(f"{args.model}: {exc}") from None
    return load_dataset(args.dataset, args.data_dir, dtype=dtype, progress=progress)


def add_model(parser):
    parser.add_argument("model", metavar="MODEL", help="a model file written by train --out")


def add_backend(parser):
    parser.add_argument("--backend", choices=param_choices("backend"), default="auto",
                        help="kernel implementation; auto takes the fastest available "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=param_type("n_threads"), default=None,
                        help=f"threads for the kernels (default: all {default_n_threads()} "
                             f"cores)")


def add_seed(parser, help):
    parser.add_argument("--seed", type=param_type("random_state"), default=0, help=help)


# The argparse type of a count that sets no estimator parameter (repeats, a benchmark's epochs):
# a whole number >= 1, by the same rule as ``epochs``.
positive_int = argument_type(POSITIVE_WHOLE)
# ... and of a count that may be 0 (a benchmark's retries).
non_negative_int = argument_type(NON_NEGATIVE_WHOLE)


def run(parser, argv):
    """Parse ``argv`` and run its command; user errors become one line on stderr.

    Returns
    -------
    int
        The exit code: 0, :data:`EXIT_ERROR`, :data:`EXIT_USAGE` or :data:`EXIT_INTERRUPTED`.
    """
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
