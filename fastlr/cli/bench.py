"""``fastlr bench``: training throughput against NumPy, peers and the hardware, in one run."""

import argparse
import json
import sys

from ..atomic import atomic_write
from ..backends import default_n_threads
from ..validation import cap_threads
from .common import add_data_dir, non_negative_int, positive_int


def add_command(commands):
    """Add ``bench`` to the subcommands ``commands``."""
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
    bench.add_argument("--repeats", type=positive_int, default=None,
                       help="timed epochs per configuration; the median is reported "
                            "(default: 5)")
    bench.add_argument("--epochs", type=positive_int, default=1,
                       help="epochs per timed run (default: %(default)s)")
    bench.add_argument("--retries", type=non_negative_int, default=2,
                       help="how many more times a configuration is timed when other "
                            "processes took more than 5%% of the machine's CPU while it ran; "
                            "the quietest try is kept, marked '!' if still disturbed "
                            "(default: %(default)s)")
    bench.add_argument("--kernels", choices=("all", "chosen"), default="chosen",
                       help="'all' also times every kernel version kept side by side: the Numba "
                            "optimization ladder and the Cython synchronization variants")
    bench.add_argument("--quick", action="store_true",
                       help="a subset for a first look: fastlr's backends, batch 64 and 1024, "
                            "all cores, 3 repeats, no peers")
    add_data_dir(bench, by_name=False)
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--plot", metavar="FILE.png", help="also draw throughput by batch size")
    bench.set_defaults(handler=cmd_bench)


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
    from ..bench import DEFAULT_BACKENDS
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in DEFAULT_BACKENDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {', '.join(unknown) or text!r}; "
                                         f"choose among {', '.join(DEFAULT_BACKENDS)}")
    return names


def cmd_bench(args):
    from .. import bench
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
    threads = sorted({cap_threads(n) for n in threads})
    report = bench.run_bench(backends=backends, batch_sizes=batch_sizes, threads=threads,
                             repeats=repeats, epochs=args.epochs,
                             kernels=args.kernels == "all", time_to_accuracy=not args.quick,
                             data_dir=args.data_dir, retries=args.retries,
                             log=lambda message: print(f"  {message}", file=sys.stderr,
                                                       flush=True))
    print(bench.format_report(report))
    if args.json:
        with atomic_write(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        bench.plot_report(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0
