"""The Numba kernel's parts timed in isolation: score tile, gradient tile, softmax, update, meeting.

    python bench/tile_profile.py [--repeats 7] [--tunings avx512,avx2]

Each tuning (``fastlr/backends/numba/tuning.py``; ``FASTLR_NUMBA_TUNING`` in a subprocess, so
the tiles compile with its constants) times, on one thread and with a block's 64 rows of
MNIST-shaped float32 data in cache: the score tiles of the block (``_gather_scores``), its
gradient tiles (``_gather_gradient``) (with the rows on 64-byte lines, 16 bytes off them, and
as uint8 pixels), its softmax (``_block_softmax``), one step's update of
all of W (``_update_slice``), and, on two threads, one meeting (``_meeting``). Medians of
``--repeats`` runs of many calls each, interleaved tuning by tuning; GFLOP/s for the tiles.
This is where the time of a block goes; ``python -m fastlr bench`` times whole epochs.

Example (Intel Xeon, Sapphire Rapids class, 2 cores)::

    tuning    scores GF/s  gradient GF/s  softmax us  update us  meeting us
    avx512          ...
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

BLOCK, C, D = 64, 10, 784
CALLS = 2000


def _at_offset(a, offset):
    """A copy of ``a`` whose data starts ``offset`` bytes after a 64-byte line."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _measure(repeats):
    """The figures of the tuning this process compiled with (run in a subprocess)."""
    from numba import njit, prange, set_num_threads

    from fastlr.backends.numba.softmax import _block_softmax, _softmax_scratch
    from fastlr.backends.numba.sync import _meeting
    from fastlr.backends.numba.tiles import _gather_gradient, _gather_scores
    from fastlr.backends.numba.tuning import TUNING
    from fastlr.backends.numba.update import _update_slice

    @njit
    def scores(X, rows, W, S, calls):
        for _ in range(calls):
            _gather_scores(X, rows, BLOCK, W, S)

    @njit
    def gradient(X, rows, G, part_W, calls):
        for _ in range(calls):
            _gather_gradient(X, rows, BLOCK, G, part_W, False, rows, 0)

    @njit
    def softmax(S, b, y, w, perm, Z, E, row_max, row_total, G, grad_b, calls):
        loss = 0.0
        for _ in range(calls):
            loss = _block_softmax(S, BLOCK, 1.0 / BLOCK, b, y, w, perm, 0, Z, E, row_max,
                                  row_total, G, grad_b, loss)
        return loss

    @njit
    def update(W, vel, parts, grad, calls):
        for _ in range(calls):
            _update_slice(W, vel, parts, 0, W.shape[0], 1e-9, 0.0, 0.0, grad)

    @njit(parallel=True)
    def meetings(flags, calls):
        for k in prange(2):
            for m in range(calls):
                _meeting(flags, k, 2, m + 1, 0)

    rng = np.random.default_rng(0)
    rows = np.arange(BLOCK + 16, dtype=np.int64) % BLOCK
    S = np.zeros((1, BLOCK, C), np.float32)
    G = rng.standard_normal((BLOCK, C), dtype=np.float32) * 0.01
    X, W, part_W = (_at_offset(rng.random(shape, dtype=np.float32) * 0.01, 0)
                    for shape in ((BLOCK, D), (C, D), (C, D)))
    pixels = _at_offset(rng.integers(0, 256, (BLOCK, D)).astype(np.uint8), 0)
    X16, W16, part_W16 = (_at_offset(a, 16) for a in (X, W, part_W))
    Gs, Z, E, row_max, row_total = _softmax_scratch(1, BLOCK, C, np.float32)
    b = np.zeros(C, np.float32)
    y = rng.integers(0, C, BLOCK)
    w = np.ones(BLOCK, np.float32)
    perm = np.arange(BLOCK, dtype=np.int64)
    flat, vel = W.reshape(-1).copy(), np.zeros(C * D, np.float32)
    parts = np.zeros((2, C * D), np.float32)
    grad = np.zeros(C * D + 16, np.float32)
    set_num_threads(2)
    flops = 2.0 * BLOCK * C * D

    def time_of(fn, *args, per=CALLS):
        fn(*args, 1)
        best = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*args, per)
            best.append((time.perf_counter() - t0) / per)
        return float(np.median(best))

    t_scores = time_of(scores, X, rows, W, S[0])
    t_grad = time_of(gradient, X, rows, G, part_W)
    t_scores16 = time_of(scores, X16, rows, W16, S[0])
    t_grad16 = time_of(gradient, X16, rows, G, part_W16)
    t_scores_u8 = time_of(scores, pixels, rows, W, S[0])
    t_grad_u8 = time_of(gradient, pixels, rows, G, part_W)
    t_soft = time_of(softmax, S[0], b, y, w, perm, Z[0], E[0], row_max[0], row_total[0], Gs[0],
                     b.copy())
    t_update = time_of(update, flat, vel, parts, grad)
    flags = np.zeros(16, np.int64)
    meetings(flags, 1)
    samples = []
    for _ in range(repeats):
        flags[:] = 0
        t0 = time.perf_counter()
        meetings(flags, 20000)
        samples.append((time.perf_counter() - t0) / 20000)
    return {"tuning": TUNING.profile, "scores_gflops": flops / t_scores / 1e9,
            "gradient_gflops": flops / t_grad / 1e9,
            "scores_gflops_off16": flops / t_scores16 / 1e9,
            "gradient_gflops_off16": flops / t_grad16 / 1e9,
            "scores_gflops_uint8": flops / t_scores_u8 / 1e9,
            "gradient_gflops_uint8": flops / t_grad_u8 / 1e9, "softmax_us": t_soft * 1e6,
            "update_us": t_update * 1e6, "meeting_us": float(np.median(samples)) * 1e6}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tunings", default="avx512,avx2,baseline",
                        help="comma-separated FASTLR_NUMBA_TUNING values")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(_measure(args.repeats)))
        return
    print("GFLOP/s of the tiles on a block in cache: rows on 64-byte lines / 16 bytes off / "
          "uint8 pixels")
    print(f"{'tuning':24s} {'scores GF/s':>18s} {'gradient GF/s':>18s} {'softmax us':>11s} "
          f"{'update us':>10s} {'meeting us':>11s}")
    for tuning in args.tunings.split(";") if ";" in args.tunings else args.tunings.split(","):
        env = dict(os.environ, FASTLR_NUMBA_TUNING=tuning)
        out = subprocess.run([sys.executable, __file__, "--measure", "--repeats",
                              str(args.repeats)], env=env, capture_output=True, text=True,
                             check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        tiles = [" / ".join(f"{r[f'{name}_gflops{suffix}']:.0f}"
                            for suffix in ("", "_off16", "_uint8"))
                 for name in ("scores", "gradient")]
        print(f"{tuning:24s} {tiles[0]:>18s} {tiles[1]:>18s} {r['softmax_us']:11.2f} "
              f"{r['update_us']:10.2f} {r['meeting_us']:11.2f}")


if __name__ == "__main__":
    main()
