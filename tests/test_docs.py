"""The figures the README quotes are the ones the benchmark run recorded: every row of the
Speed table must be a row of docs/bench.json, to the digit shown."""

import json
import re

from conftest import ROOT

ROW = re.compile(r"^\| (\S+) \| (\d+) \| (\d+) \| ([\d.]+) \| \[([\d.]+) - ([\d.]+)\] \| ([\d.]+)x "
                 r"\| (\d+)% \|$")


def test_the_readme_speed_table_is_the_recorded_run():
    report = json.loads((ROOT / "docs" / "bench.json").read_text())
    recorded = {(r["backend"], r["batch_size"], r["threads"]): r for r in report["results"]}
    readme = (ROOT / "README.md").read_text()
    speed = readme[readme.index("## Speed"):readme.index("### What a user sees")]
    rows = [ROW.match(line) for line in speed.splitlines()]
    rows = [row for row in rows if row]
    assert len(rows) >= 18
    for row in rows:
        engine, batch, threads = row[1], int(row[2]), int(row[3])
        r = recorded[(engine, batch, threads)]
        assert row[4] == f"{r['ms_per_epoch']:.1f}" and row[5] == f"{r['ms_min']:.1f}"
        assert row[6] == f"{r['ms_max']:.1f}" and row[7] == f"{r['speedup_vs_numpy']:.2f}"
        assert row[8] == f"{r['fraction_of_peak'] * 100:.0f}"
