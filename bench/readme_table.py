"""The README's speed table, generated from a benchmark's JSON (``docs/bench.json`` by default).

    python bench/readme_table.py [docs/bench.json]

prints the Markdown table the README's "Speed" section holds: ms per epoch of the 60,000
MNIST training images for each fastlr engine, at the smallest and largest batch size of the
run, on every thread count, with the speed-up over NumPy in the same run. The README's table
must be this output (``tests/test_readme.py`` checks it); every other number stays in the
JSON and ``docs/kernels.md``.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("numpy", "numba", "cython", "numba:uint8", "cython:uint8")


def readme_table(report):
    """The Markdown lines of the table for ``report`` (a benchmark JSON, as a dict)."""
    rows = [row for row in report["results"]
            if row["backend"] in ENGINES and row["ms_per_epoch"] is not None]
    batches = sorted({row["batch_size"] for row in rows})
    batches = sorted({batches[0], batches[-1]})
    threads = sorted({row["threads"] for row in rows})
    columns = [(batch, n) for batch in batches for n in threads]
    by_key = {(row["backend"], row["batch_size"], row["threads"]): row for row in rows}
    header = "| engine | " + " | ".join(
        f"batch {batch}, {n} thread{'s' if n != 1 else ''}" for batch, n in columns) + " |"
    lines = [header, "| --- |" + " ---: |" * len(columns)]
    for engine in ENGINES:
        cells = []
        for batch, n in columns:
            row = by_key.get((engine, batch, n))
            if row is None:
                cells.append("-")
            elif engine == "numpy":
                cells.append(f"{row['ms_per_epoch']:.0f} ms")
            else:
                cells.append(f"{row['ms_per_epoch']:.0f} ms ({row['speedup_vs_numpy']:.1f}x)")
        if any(cell != "-" for cell in cells):
            lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    return lines


def main(argv):
    path = Path(argv[0]) if argv else ROOT / "docs" / "bench.json"
    print("\n".join(readme_table(json.loads(path.read_text()))))


if __name__ == "__main__":
    main(sys.argv[1:])
