"""The performance targets of the kernels, measured in one run.

    python bench/numba_targets.py [--repeats 7] [--threads 2]

1. numba at batch 1024 reaches at least 55% of the machine's compute ceiling, the GFLOP/s of a
   large NumPy sgemm at the same thread count;
2. numba at batch 64 is at least 6x faster than the plain NumPy loop (the reference backend);
   both for the float32 kernel and for the uint8 pixels (the path ``train`` takes on MNIST);
3. cython takes at most 1.25x numba's time (at least 80% of its speed) at every row;
4. numba on uint8 pixels is at least 1.2x faster than on float32 at batch 1024.

All come from the harness of ``python -m fastlr bench`` (the same validation against the
float64 reference before anything is timed, the same medians, the same marks on rows that
other processes disturbed), restricted to NumPy, Numba and Cython, so the ratios and the
ceiling are measured in the same run as the kernels. ``FASTLR_NUMBA_TUNING`` picks another
CPU tuning of the Numba kernels. It prints the table, then one line per target. A benchmark,
not a test: it always exits 0 once it has measured.
"""

import argparse

from fastlr.bench import format_report, run_bench


def _verdict(value, goal):
    return "met" if value >= goal else "NOT met"


def target_lines(report, n_threads):
    """One line per target from a run of run_bench: the measured figures and whether each
    target holds."""
    rows = {(r["backend"], r["batch_size"], r["threads"]): r for r in report["results"]
            if r["ms_per_epoch"]}
    ms = {key: row["ms_per_epoch"] for key, row in rows.items()}
    lines = []
    peak = report["machine"]["sgemm_gflops"].get(str(n_threads))
    # Targets 1 and 2 for the float32 kernel, then for the uint8 path that train takes.
    for engine in ("numba", "numba:uint8"):
        at1024 = rows.get((engine, 1024, n_threads))
        if at1024 and peak:
            fraction = at1024["gflops"] / peak
            lines.append(f"1. batch 1024, {n_threads} thr: {engine} {at1024['ms_per_epoch']:.1f} "
                         f"ms = {at1024['gflops']:.0f} GFLOP/s, {fraction:.0%} of sgemm's "
                         f"{peak:.0f} (goal >= 55%): {_verdict(fraction, 0.55)}")
        if (engine, 64, n_threads) in ms and ("numpy", 64, n_threads) in ms:
            ratio = ms[("numpy", 64, n_threads)] / ms[(engine, 64, n_threads)]
            lines.append(f"2. batch 64, {n_threads} thr: {engine} "
                         f"{ms[(engine, 64, n_threads)]:.1f} ms, numpy "
                         f"{ms[('numpy', 64, n_threads)]:.1f}: {ratio:.2f}x (goal >= 6x): "
                         f"{_verdict(ratio, 6.0)}")
    for (engine, batch, threads), value in sorted(ms.items()):
        twin = engine.replace("cython", "numba")
        if engine.startswith("cython") and (twin, batch, threads) in ms:
            speed = ms[(twin, batch, threads)] / value
            lines.append(f"3. batch {batch}, {threads} thr: {engine} {value:.1f} ms, {twin} "
                         f"{ms[(twin, batch, threads)]:.1f}: {speed:.0%} of its speed "
                         f"(goal >= 80%): {_verdict(speed, 0.8)}")
    for threads in sorted({key[2] for key in ms}):
        if ("numba:uint8", 1024, threads) in ms and ("numba", 1024, threads) in ms:
            pixels, floats = ms[("numba:uint8", 1024, threads)], ms[("numba", 1024, threads)]
            ratio = floats / pixels
            lines.append(f"4. batch 1024, {threads} thr: uint8 {pixels:.1f} ms, float32 "
                         f"{floats:.1f}: {ratio:.2f}x "
                         f"(goal >= 1.2x): {_verdict(ratio, 1.2)}")
    disturbed = [r for r in report["results"] if r.get("disturbed")]
    lines.append(f"rows disturbed by other processes: {len(disturbed)} of "
                 f"{len(report['results'])}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per row (median)")
    parser.add_argument("--threads", type=int, default=2, help="thread count of targets 1, 2")
    args = parser.parse_args(argv)
    report = run_bench(backends=("numpy", "numba", "cython"), batch_sizes=(64, 1024),
                       threads=tuple(sorted({1, args.threads})), repeats=args.repeats,
                       time_to_accuracy=False)
    print(format_report(report))
    print()
    print("\n".join(target_lines(report, args.threads)))


if __name__ == "__main__":
    main()
