"""``fastlr info``: versions, backends, threads and CPU of this machine, and the data sets."""

import json

from .. import __version__
from ..data import default_cache_dir, local_copy
from ..datasets import DATASETS
from ..machine import machine_info


def add_command(commands):
    """Add ``info`` to the subcommands ``commands``."""
    info = commands.add_parser(
        "info", help="versions, backends, threads and CPU; the data sets fastlr knows",
        description="What fastlr finds on this machine: versions, which backends are "
                    "available (and why one is not), threads and CPU; and the data sets "
                    "--dataset takes, with their classes, license and where their files are.")
    info.add_argument("--json", action="store_true", help="print the result as JSON")
    info.set_defaults(handler=cmd_info)


def datasets_info():
    """Each known data set: its title, image shape, class names, license, home page, and where
    its files are (None if not on this machine yet)."""
    out = {}
    for name, known in DATASETS.items():
        directory, _ = local_copy(known)
        out[name] = {"title": known.title, "image_shape": list(known.image_shape),
                     "class_names": list(known.class_names), "license": known.license,
                     "homepage": known.homepage,
                     "directory": str(directory) if directory else None,
                     "cache": str(default_cache_dir(name))}
    return out


def cmd_info(args):
    info = machine_info()
    info["datasets"] = datasets_info()
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
    print("data sets (--dataset NAME)")
    for name, dataset in info["datasets"].items():
        height, width = dataset["image_shape"]
        where = (f"files in {dataset['directory']}" if dataset["directory"] else
                 f"not downloaded yet (--dataset {name} fetches it into {dataset['cache']})")
        print(f"  {name:<14} {dataset['title']}, {height}x{width}, "
              f"{len(dataset['class_names'])} classes: {', '.join(dataset['class_names'])}")
        print(f"  {'':<14} license {dataset['license']}; {dataset['homepage']}")
        print(f"  {'':<14} {where}")
    return 0
