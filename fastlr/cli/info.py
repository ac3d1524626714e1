"""``fastlr info``: versions, backends, threads and CPU of this machine."""

import json

from .. import __version__
from ..machine import machine_info


def add_command(commands):
    """Add ``info`` to the subcommands ``commands``."""
    info = commands.add_parser(
        "info", help="versions, backends, threads and CPU",
        description="What fastlr finds on this machine: versions, which backends are "
                    "available (and why one is not), threads and CPU.")
    info.add_argument("--json", action="store_true", help="print the result as JSON")
    info.set_defaults(handler=cmd_info)


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
