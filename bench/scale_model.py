"""The cost model of docs/scale.md, fitted to measured rates: 50 million images x 345 classes
on 1 to 64 machines.

    python bench/scale_model.py [--many docs/dask_many_classes.json]
        [--rounds docs/scale.json] [--json docs/scale_model.json]

Reads what the benchmarks measured on this project's machine (2 cores) and projects one
epoch of ``fit`` on a Dask cluster of M such machines, each running two workers of one
thread (as the measurements did):

- training: 4 n D C flop an epoch of a partition of n rows, at the training task's measured
  rate per worker at C = 345 (``bench/dask_many_classes.py``: two workers on two cores, so
  their contention is in the rate);
- scoring, only with ``score_train``: 2 n D C flop at the scoring task's measured rate;
- weights moved: each worker fetches the round's weights and sends its own, C (D + 1)
  float32 each way, through the client's 10 Gbit/s link (an assumption: not measured here);
- Dask's bookkeeping: per task, half the round time's growth with each partition on the
  MNIST sweep (``bench/dask_rounds.py``, whose rounds hold a training and a scoring task per
  partition), one training task per worker per round (two with ``score_train``);
- memory per worker: a line through the peak resident memory of the workers of the
  many-class runs against their rows (two runs of different sizes), at 345 classes.

A model, not a measurement: it prints the projection table of docs/scale.md and, with
``--json``, writes it.
"""

import argparse
import json
from pathlib import Path

import numpy as np

N_IMAGES, D, C = 50_000_000, 784, 345
WORKERS_PER_MACHINE = 2
LINK_BYTES_PER_S = 1.25e9
MACHINES = (1, 2, 4, 8, 16, 32, 64)


def per_task_overhead(rounds):
    """Seconds of Dask bookkeeping per task: half the slope of the round time against the
    partition count over the MNIST sweep (the compute of a round is the same for every
    partition count; each partition has a training and a scoring task a round)."""
    sweep = rounds["partitions"]
    counts = np.array([row["partitions"] for row in sweep], dtype=float)
    seconds = np.array([row["round_s"] for row in sweep])
    return float(np.polyfit(counts, seconds, 1)[0]) / 2


def memory_line(runs):
    """(bytes at zero rows, bytes per row) through the many-class runs' peak worker memory."""
    rows = np.array([run["rows_per_worker"] for run in runs], dtype=float)
    peaks = np.array([max(run["peak_worker_rss_gib"]) * 2 ** 30 for run in runs])
    slope, intercept = np.polyfit(rows, peaks, 1)
    return float(intercept), float(slope)


def project(many_runs, rounds):
    """The projection rows, one per machine count, and the rates they use."""
    big = max(many_runs, key=lambda run: run["rows_per_worker"])
    train_rate = big["train_gflops_per_worker"] * 1e9
    score_rate = big["score_gflops_per_worker"] * 1e9
    overhead = per_task_overhead(rounds)
    base, per_row = memory_line(many_runs)
    weights = C * (D + 1) * 4
    rows = []
    for machines in MACHINES:
        workers = machines * WORKERS_PER_MACHINE
        n = N_IMAGES / workers
        train = 4 * n * D * C / train_rate
        score = 2 * n * D * C / score_rate
        moved = 2 * workers * weights / LINK_BYTES_PER_S
        dask = workers * overhead
        rows.append({"machines": machines, "images_per_worker": n,
                     "memory_per_worker_gib": (base + per_row * n) / 2 ** 30,
                     "uint8_per_machine_gb": n * WORKERS_PER_MACHINE * D / 1e9,
                     "training_s": train, "scoring_s": score, "weights_s": moved,
                     "dask_s": dask, "epoch_s": train + moved + dask,
                     "epoch_with_score_train_s": train + score + moved + 2 * dask})
    for row in rows:
        row["speed_up"] = rows[0]["epoch_s"] / row["epoch_s"]
        row["not_compute"] = (row["weights_s"] + row["dask_s"]) / row["epoch_s"]
    rates = {"train_gflops_per_worker": train_rate / 1e9,
             "score_gflops_per_worker": score_rate / 1e9,
             "dask_s_per_task": overhead, "memory_base_gib": base / 2 ** 30,
             "memory_bytes_per_row": per_row}
    return rows, rates


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--many", default="docs/dask_many_classes.json")
    parser.add_argument("--rounds", default="docs/scale.json")
    parser.add_argument("--json")
    args = parser.parse_args()
    many = json.loads(Path(args.many).read_text())
    rows, rates = project(many["runs"], json.loads(Path(args.rounds).read_text()))
    print(f"rates: training {rates['train_gflops_per_worker']:.1f} GFLOP/s and scoring "
          f"{rates['score_gflops_per_worker']:.1f} GFLOP/s per worker at C = {C}; Dask "
          f"{rates['dask_s_per_task'] * 1e3:.1f} ms per task; worker memory "
          f"{rates['memory_base_gib']:.2f} GiB + {rates['memory_bytes_per_row']:.0f} bytes a "
          f"row")
    print("| M | images per worker | memory per worker | uint8 per machine | training (s) | "
          "weights moved (s) | Dask (s) | epoch (s) | speed-up | not compute | epoch with "
          "score_train (s) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['machines']} | {row['images_per_worker']:,.0f} | "
              f"{row['memory_per_worker_gib']:.1f} GiB | {row['uint8_per_machine_gb']:.1f} GB | "
              f"{row['training_s']:,.0f} | {row['weights_s']:.3f} | {row['dask_s']:.3f} | "
              f"{row['epoch_s']:,.1f} | {row['speed_up']:.1f} | {row['not_compute']:.1%} | "
              f"{row['epoch_with_score_train_s']:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
