"""``python -m fastlr``: train, evaluate and inspect softmax regression on MNIST.

One module per group of commands, each adding its subcommands to the parser built here:
:mod:`~fastlr.cli.train`, :mod:`~fastlr.cli.model_commands` (evaluate, predict),
:mod:`~fastlr.cli.info`, :mod:`~fastlr.cli.bench` and :mod:`~fastlr.cli.study` (plot,
explain). :mod:`~fastlr.cli.common` holds the shared flags and turns every user error into one
line on stderr and a non-zero exit code. Heavy imports (Numba's kernels, matplotlib, tqdm) wait
inside the commands, so ``--help`` starts fast.
"""

from .. import __version__
from . import bench, info, model_commands, study, train
from .common import Parser, run


def build_parser():
    """The argument parser of ``python -m fastlr``."""
    parser = Parser(
        prog="fastlr",
        description="Softmax regression on MNIST, from scratch: train it, evaluate it, and see "
                    "why a linear model reads handwritten digits.",
        epilog="Start with `python -m fastlr train`. Each command has its own --help.")
    parser.add_argument("--version", action="version", version=f"fastlr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    train.add_command(commands)
    model_commands.add_commands(commands)
    info.add_command(commands)
    bench.add_command(commands)
    study.add_commands(commands)
    return parser


def main(argv=None):
    """Run the command line; returns the exit code."""
    return run(build_parser(), argv)
