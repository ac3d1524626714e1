"""What depends on the CPU: the kernels' tile shapes, vector width and prefetch, chosen here once.

Shapes: lanes = vector_bytes / itemsize; the tiles' letters are those of ``tiles.py``.

Every microarchitecture-dependent parameter of the Numba kernels (and the size of the blocks
of samples, which depends on the memory system) is a field of ``Tuning``, and
``TUNING`` (the one the kernels compile with) is chosen at import from the instruction set
Numba compiles for: its features are ``NUMBA_CPU_FEATURES`` if set, else the host's (as Numba's
own code generator decides), so a test that forces ``NUMBA_CPU_NAME=haswell
NUMBA_CPU_FEATURES=...`` in a subprocess gets the AVX2 tuning and its code. Three profiles:

``avx512``    64-byte vectors, 32 registers: a 4 x 5 score tile (20 accumulators, 9 loads per
              20 FMAs), a 10 x 2 gradient tile (all of MNIST's classes in one sweep over D)
``avx2``      32-byte vectors, 16 registers: a 2 x 5 score tile and a 5 x 2 gradient tile
              (10 accumulators, two row vectors, one broadcast; 7 loads per 10 FMAs). A
              10 x 1 gradient tile (11 loads per 10 FMAs, one sweep over D) spilled two of
              its accumulators to the stack once LLVM unrolled its loop by two, and was the
              slower (docs/journal/epyc-zen3.md)
``baseline``  16-byte vectors (SSE2, any x86-64 or other 128-bit SIMD), the avx2 shapes, and a
              multiply then an add where the CPU has no FMA (``llvm.fma`` would call ``fmaf``)

The override: ``FASTLR_NUMBA_TUNING`` names a profile, fields, or both
(``FASTLR_NUMBA_TUNING=avx2`` or ``avx512,grad_vectors=1``), read at import, because the tiles
are compiled with these values as constants. The Numba cache keys its entries on the tuning as
well as on the sources (``_cache.py``), so two tunings never share a compiled kernel. Which
profile won on which CPU, measured, is in the journal (``docs/journal/``).
"""

import ctypes
import dataclasses
import os
import platform

from numba.core import config

from ...errors import InvalidParameterError

ENV_VAR = "FASTLR_NUMBA_TUNING"


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The parameters of the tiles and the threads' meetings.

    Attributes
    ----------
    profile : str
        The profile these values started from (``avx512``, ``avx2``, ``baseline``).
    vector_bytes : int
        Bytes of one vector register the tiles work in (64, 32 or 16).
    score_samples, score_classes : int
        The score tile: samples x classes of accumulators.
    grad_classes, grad_vectors : int
        The gradient tile: classes x vectors of features of accumulators.
    fused : bool
        Whether the tiles use fused multiply-adds (the CPU has FMA).
    prefetch_locality : int
        ``llvm.prefetch`` locality of the next rows (2: ``prefetcht1``, into L2).
    pause : bool
        Whether the spin loop of a meeting runs x86's ``pause`` between tries.
    scores_by_class_kib : int
        KiB of W above which the score tiles take the classes outermost (each tile's rows of
        W stay in L1 while the block's rows go by) instead of the samples (each pair of rows
        meets all of W): W then no longer fits in L2 with the block's rows, and streaming it
        for every pair of samples made C = 345 (1 MB of W) slower than the BLAS peers. A
        quarter of a 512 KB L2: on Zen 3 the classes outermost were faster with W of 194 KB
        (C = 62, D = 784), alike at 81 KB, slower at 31 KB (MNIST), so MNIST keeps the
        samples outermost (docs/journal/epyc-zen3.md). Speed only: the sums are the same.
    amx : bool
        Whether uint8 pixels with float32 weights and at most 16 classes take the AMX tiles
        (``amx.py``: bfloat16 pairs, 16 x 16 x 32 products per instruction) instead of the
        vector tiles: the CPU has AMX-BF16 and the operating system gave the process its tile
        registers. It picks the microkernel's provider (``microkernel.py``).
    amx_min_chunk : int
        Samples of a thread's chunk of a batch below which it keeps the vector tiles even
        with ``amx``: the weights are packed for the tiles once per chunk, and on Sapphire
        Rapids the short chunks tried lost more to that than the tiles gained, the long ones
        gained (docs/journal/xeon-sapphire-rapids.md, round four).
    block_kib : int
        KiB of rows of X in a block, the samples of a thread's chunk taken together (scores,
        softmax, gradient) while the next block's rows are asked for: a block is this many
        bytes of rows, in whole score tiles (``epoch.samples_per_block``), so 32 rows of
        MNIST's float32 features and 128 of its uint8 pixels (130 in AVX2's tiles of 2
        samples). Sizes tried: from 24 to 128 rows on Sapphire Rapids, where these were the
        fastest for each dtype; on Zen 4 32, 64 and 128 float32 rows ran alike
        (docs/journal/xeon-sapphire-rapids.md, round three). Not measured on first use: the
        block orders a chunk's gradient sum, so a timed choice would make the bits of a model
        depend on how busy the machine was.
    """

    profile: str
    vector_bytes: int
    score_samples: int
    score_classes: int
    grad_classes: int
    grad_vectors: int
    fused: bool
    prefetch_locality: int = 2
    pause: bool = True
    block_kib: int = 100
    scores_by_class_kib: int = 128
    amx: bool = False
    amx_min_chunk: int = 256


def _profile(name, x86):
    """The named profile's parameters; ``x86``: whether ``pause`` exists."""
    if name == "avx512":
        return Tuning(name, 64, 4, 5, 10, 2, True, pause=x86)
    if name == "avx2":
        return Tuning(name, 32, 2, 5, 5, 2, True, pause=x86)
    if name == "baseline":
        return Tuning(name, 16, 2, 5, 5, 2, False, pause=x86)
    raise InvalidParameterError(f"{ENV_VAR}: unknown profile {name!r}; choose avx512, avx2 or "
                                f"baseline")


def compile_features():
    """The set of CPU features Numba compiles for (``NUMBA_CPU_FEATURES``, else the host's),
    as names without the sign: ``{"avx2", "fma", ...}``."""
    if config.CPU_FEATURES is not None:
        text = config.CPU_FEATURES
    else:
        from numba.core.codegen import get_host_cpu_features
        text = get_host_cpu_features()
    return {f[1:] for f in text.split(",") if f.startswith("+")}


def tuning_for(features, machine=None, override=None):
    """The tuning for a CPU with ``features`` (a set of LLVM feature names).

    Parameters
    ----------
    features : set of str
        The instruction-set features, e.g. ``{"avx512f", "avx2", "fma"}``.
    machine : str, optional
        ``platform.machine()`` of the CPU (default this one's): ``pause`` only on x86.
    override : str, optional
        A profile name and/or ``field=value`` pairs, comma separated (the syntax of
        ``FASTLR_NUMBA_TUNING``).

    Returns
    -------
    Tuning
    """
    machine = platform.machine() if machine is None else machine
    x86 = machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    if "avx512f" in features:
        name = "avx512"
    elif "avx2" in features and "fma" in features:
        name = "avx2"
    else:
        name = "baseline"
    fields = {}
    for item in filter(None, (part.strip() for part in (override or "").split(","))):
        if "=" not in item:
            name = item
            continue
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in Tuning.__dataclass_fields__ or key == "profile":
            raise InvalidParameterError(f"{ENV_VAR}: unknown field {key!r}")
        if Tuning.__dataclass_fields__[key].type in (bool, "bool"):
            fields[key] = value.lower() in ("1", "true", "yes")
        elif not value.isdigit():
            raise InvalidParameterError(f"{ENV_VAR}: {key} must be a whole number, got "
                                        f"{value!r}")
        else:
            fields[key] = int(value)
    tuning = dataclasses.replace(_profile(name, x86), **fields)
    if tuning.block_kib < 1:
        raise InvalidParameterError(f"{ENV_VAR}: block_kib must be at least 1")
    if "fma" not in features:  # an FMA the CPU lacks would be a call to fmaf per lane
        tuning = dataclasses.replace(tuning, fused=False)
    if "amx" not in fields:
        tuning = dataclasses.replace(tuning, amx=name == "avx512" and x86 and {
            "amx-tile", "amx-bf16"} <= features)
    return tuning


_SYS_ARCH_PRCTL = 158  # x86-64 Linux
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def request_tiles():
    """Ask Linux for the AMX tile registers for this process; True if granted (or already
    granted), False on any other system or if refused."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False



def _with_tiles(tuning):
    """``tuning``, without AMX if the operating system does not give this process the tile
    registers (asked here, once: a tile instruction without them kills the process)."""
    if tuning.amx:
        if not request_tiles():
            return dataclasses.replace(tuning, amx=False)
    return tuning


TUNING = _with_tiles(tuning_for(compile_features(), override=os.environ.get(ENV_VAR)))
