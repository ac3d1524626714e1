"""The two performance targets of the Numba kernel, measured in one run.

    python bench/numba_targets.py [--repeats 7] [--threads 2]

1. a full MNIST epoch with ``backend="numba"`` at batch 64 is at least 4x faster than the plain
   NumPy loop (the reference backend) at the same thread count;
2. at batch 1024 it reaches at least 50% of the machine's compute ceiling, the GFLOP/s of a
   large NumPy sgemm at the same thread count.

Both come from the harness of ``python -m fastlr bench`` (the same validation against the
float64 reference before anything is timed, the same medians), restricted to NumPy and Numba,
so the ratio and the ceiling are measured in the same run as the kernel. It prints the table,
then one line per target. A benchmark, not a test: it always exits 0 once it has measured.
"""

import argparse

from fastlr.bench import format_report, run_bench


def target_lines(report, n_threads):
    """One line per target from a run of run_bench: the measured figures and whether each
    target holds."""
    rows = {(r["backend"], r["batch_size"]): r for r in report["results"]
            if r["threads"] == n_threads}
    lines = []
    numba64, numpy64 = rows.get(("numba", 64)), rows.get(("numpy", 64))
    if numba64 and numpy64 and numba64["ms_per_epoch"] and numpy64["ms_per_epoch"]:
        ratio = numpy64["ms_per_epoch"] / numba64["ms_per_epoch"]
        lines.append(f"target 1, batch 64, {n_threads} thr: numba {numba64['ms_per_epoch']:.1f} "
                     f"ms/epoch, numpy {numpy64['ms_per_epoch']:.1f} ms: {ratio:.2f}x "
                     f"(goal >= 4x): {'met' if ratio >= 4 else 'NOT met'}")
    else:
        lines.append("target 1: no measurement (see the table)")
    numba1024 = rows.get(("numba", 1024))
    peak = report["machine"]["sgemm_gflops"].get(str(n_threads))
    if numba1024 and numba1024["ms_per_epoch"] and peak:
        fraction = numba1024["gflops"] / peak
        lines.append(f"target 2, batch 1024, {n_threads} thr: numba "
                     f"{numba1024['ms_per_epoch']:.1f} ms/epoch = {numba1024['gflops']:.0f} "
                     f"GFLOP/s, {fraction:.0%} of sgemm's {peak:.0f} GFLOP/s (goal >= 50%): "
                     f"{'met' if fraction >= 0.5 else 'NOT met'}")
    else:
        lines.append("target 2: no measurement (see the table)")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per row (median)")
    parser.add_argument("--threads", type=int, default=2, help="thread count of both targets")
    args = parser.parse_args(argv)
    report = run_bench(backends=("numpy", "numba"), batch_sizes=(64, 1024),
                       threads=(args.threads,), repeats=args.repeats, time_to_accuracy=False)
    print(format_report(report))
    print()
    print("\n".join(target_lines(report, args.threads)))


if __name__ == "__main__":
    main()
