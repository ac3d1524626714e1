"""What every command shares: the parser class, common flags, exit codes, one-line user errors.

Every problem a user can fix (a missing file, a bad flag value, bad data, a diverging learning
rate) is printed by :func:`run` as one line on stderr, without a traceback, with a non-zero exit
code. So is every error of the machine (OSError, MemoryError) and every error a library raises
(distributed, matplotlib, Pillow, NumPy, Numba, ...: see :func:`library_of`), named with the
command and the inputs it was reading; only an error in fastlr's own code keeps its traceback.
Flag values are checked by the constraints in :mod:`fastlr.validation`, the estimator's own.
"""

import argparse
import codecs
import contextlib
import logging
import os
import sys
import warnings

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
                dataset = load_recorded(record, dtype=dtype, progress=progress)
            except DataError as exc:
                raise DataError(f"{args.model}: {exc}") from None
            return _labels_known(dataset, model, args.model)
    dataset = load_dataset(args.dataset, args.data_dir, dtype=dtype, progress=progress)
    return dataset if model is None else _labels_known(dataset, model, args.model)


def _labels_known(dataset, model, name):
    """``dataset``, if every label in it is one of ``model``'s classes: a model scored on
    labels it cannot predict would report an accuracy of 0.00%, not that it met other data."""
    import numpy as np

    from ..validation import plain
    for split, labels in (("test", dataset.y_test), ("training", dataset.y_train)):
        classes = model.classes_
        if classes.dtype.kind != labels.dtype.kind and {classes.dtype.kind,
                                                        labels.dtype.kind} & {"U", "S", "O"}:
            unknown = np.unique(labels)
        else:
            unknown = np.setdiff1d(labels, classes)
        if len(unknown):
            raise DataError(f"{name} knows the classes {plain(classes)}, but the {split} labels "
                            f"of {dataset.title} include {plain(unknown)}: it was trained on "
                            f"other data (name its data with --data-dir or --dataset)")
    return dataset


def add_model(parser):
    parser.add_argument("model", metavar="MODEL", help="a model file written by train --out")


def add_backend(parser):
    parser.add_argument("--backend", choices=param_choices("backend"), default="auto",
                        help="kernel implementation; auto takes the fastest available "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=param_type("n_threads"), default=None,
                        help=f"threads for the kernels, kept whatever else runs (default: "
                             f"the cores of the {default_n_threads()} that other processes "
                             f"leave idle, fewer while they take them; the model is the same "
                             f"on any number)")


def add_seed(parser, help):
    parser.add_argument("--seed", type=param_type("random_state"), default=0, help=help)


# The argparse type of a count that sets no estimator parameter (repeats, a benchmark's epochs):
# a whole number >= 1, by the same rule as ``epochs``.
positive_int = argument_type(POSITIVE_WHOLE)
# ... and of a count that may be 0 (a benchmark's retries).
non_negative_int = argument_type(NON_NEGATIVE_WHOLE)


def run(parser, argv):
    """Parse ``argv`` and run its command; user errors become one line on stderr.

    While it runs, stdout and stderr write what they cannot encode (a file name's undecodable
    byte, a character beyond an ASCII locale) rather than fail, and stderr is best effort: a
    closed or broken stderr costs the messages, never the command's work or files.

    Returns
    -------
    int
        The exit code: 0, :data:`EXIT_ERROR`, :data:`EXIT_USAGE` or :data:`EXIT_INTERRUPTED`.
    """
    streams = sys.stdout, sys.stderr
    sys.stdout = _encodable(sys.stdout)
    sys.stderr = BestEffortStream(_encodable(sys.stderr))
    shown = {}
    logged = _OneLineLog(shown)
    logging.getLogger().addHandler(logged)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *args, **kwargs: _warn(message, shown)
            return _run(parser, argv)
    finally:
        logging.getLogger().removeHandler(logged)
        sys.stderr.flush()
        for stream, ours in zip(streams, (sys.stdout, sys.stderr._stream)):
            if stream is None:  # the /dev/null that stood in for it
                ours.close()
        sys.stdout, sys.stderr = streams


def _warn(message, shown):
    """Print a library's warning once, as one line: ``warnings`` would add the source line
    (and Numba repeats its warning about an environment variable it cannot parse)."""
    text = f"fastlr: warning: {_first_line(message)}"
    if text not in shown:
        shown[text] = True
        print(text, file=sys.stderr)


class _OneLineLog(logging.Handler):
    """Libraries' log records of WARNING and above (matplotlib's about a cache directory it
    cannot make, say), one line each, as :func:`_warn` prints warnings."""

    def __init__(self, shown):
        super().__init__(logging.WARNING)
        self.shown = shown

    def emit(self, record):
        _warn(record.getMessage(), self.shown)


def _encodable(stream):
    """``stream`` writing any text (see :func:`_name_or_backslash`); a closed one (None, as
    Python sets it when the descriptor was closed at start) becomes /dev/null."""
    if stream is None:
        return open(os.devnull, "w")
    with contextlib.suppress(AttributeError, ValueError, OSError):
        stream.reconfigure(errors=_ENCODE_ERRORS)
    return stream


def _name_or_backslash(error):
    """A codec error handler: a file name's undecodable bytes (lone surrogates U+DC80-U+DCFF,
    as Python decodes them) are written back as those bytes, as ``ls`` shows them; any other
    character the encoding lacks as a backslash escape."""
    if isinstance(error, UnicodeEncodeError):
        text = error.object[error.start:error.end]
        name = "surrogateescape" if all("\udc80" <= c <= "\udcff" for c in text) else \
            "backslashreplace"
        return codecs.lookup_error(name)(error)
    raise error


_ENCODE_ERRORS = "fastlr-name-or-backslash"
codecs.register_error(_ENCODE_ERRORS, _name_or_backslash)


class BestEffortStream:
    """A text stream whose failures to write (a closed pipe, a full disk) are dropped: what is
    written to stderr is a message, and a message that cannot be shown must not stop the work
    (a model being trained, a file being saved)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self):
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _run(parser, argv):
    args = None
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        check_environment()
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
    except Exception as exc:
        library = library_of(exc)
        if library is not None:
            message = f"{library} failed: {type(exc).__name__}: {_first_line(exc)}"
        elif isinstance(exc, (OSError, MemoryError)):  # the machine's, not fastlr's
            message = _environment_error(exc)
        else:
            raise  # fastlr's own mistake: its traceback is what fixes it
        print(f"fastlr: error: {_command_inputs(args)}{message}", file=sys.stderr)
        return EXIT_ERROR


def check_environment():
    """Refuse, as one line, the settings in the environment that would crash a library rather
    than make it fail: ``NUMBA_NUM_THREADS`` beyond :func:`max_numba_threads` (Numba starts
    that many threads at its first parallel loop, and 100,000 of them killed the process with
    SIGSEGV). A value Numba cannot parse is its own warning, and Numba runs on its default.

    Raises
    ------
    DataError
    """
    text = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > max_numba_threads():
        raise DataError(f"NUMBA_NUM_THREADS={text}: more threads than fastlr lets Numba start "
                        f"({max_numba_threads()}; fastlr runs at most {default_n_threads()}, "
                        f"the cores it may use); unset it or lower it")


def max_numba_threads():
    """The most threads ``NUMBA_NUM_THREADS`` may ask for: 1024, or 4 per core on a machine of
    more than 256 cores."""
    return max(1024, 4 * default_n_threads())


# The libraries a command calls into: an exception of theirs, or raised in their code, comes from
# the input or the environment it was given (a broken image, a cluster that went away, an odd
# matplotlib setting), and is printed as one line.
LIBRARIES = ("distributed", "dask", "tornado", "msgpack", "matplotlib", "pyparsing", "PIL",
             "numpy", "numba", "llvmlite", "zipfile", "zlib", "gzip", "json", "csv", "tqdm")


def library_of(exc):
    """The library ``exc`` comes from (its class is one of the library's, or the library's
    code raised it), or None when it comes from fastlr itself."""
    owner = type(exc).__module__.partition(".")[0]
    if owner in LIBRARIES:
        return owner
    innermost, frame = None, exc.__traceback__
    while frame is not None:
        innermost, frame = frame.tb_frame.f_globals.get("__name__", ""), frame.tb_next
    owner = (innermost or "").partition(".")[0]
    return owner if owner in LIBRARIES else None


def _first_line(exc):
    lines = str(exc).strip().splitlines() or [""]
    return lines[0][:300]


def _environment_error(exc):
    if isinstance(exc, MemoryError):
        return f"not enough memory ({_first_line(exc) or 'MemoryError'})"
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or _first_line(exc) or type(exc).__name__}"


def _command_inputs(args):
    """``COMMAND INPUTS: ``, naming what the command was reading (its model, inputs, data)."""
    if args is None or getattr(args, "command", None) is None:
        return ""
    words = [args.command] + ([args.figure] if getattr(args, "figure", None) else [])
    for name in ("model", "compare"):
        if getattr(args, name, None):
            words.append(str(getattr(args, name)))
    words += [str(path) for path in getattr(args, "inputs", None) or []][:3]
    for flag in ("dataset", "data_dir", "scheduler"):
        if getattr(args, flag, None):
            words.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    return " ".join(words) + ": "
