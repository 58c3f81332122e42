"""Is the table unchanged? A run against a leaderboard's CSV (default ``leaderboards/toy.csv``), cell by cell (issue 18:
a speed-up must leave the table within its intervals over 3 seeds).

For every (concept, method, attack, stage, metric) the run has: the leaderboard's mean ± 95 % half-width (Student-t
over the seeds both have; one seed: its bootstrap interval over prompts) and the run's mean over the same seeds. A cell
is *outside* when the run's mean leaves the leaderboard's interval. Prints the cells outside, then a count per metric;
``--all`` prints every cell. Asserts nothing: which differences matter is the reader's call.

    python benchmarks/unchanged.py RUN_DIR... [--old leaderboards/toy.csv] [--stages pre,post@10,post@100] [--all]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

import pandas as pd

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "leaderboards"))
from protocols import summary  # noqa: E402  (mean, half-width, seeds of one cell)

from relearnbench.table import load  # noqa: E402

KEYS = ["concept", "method", "attack", "stage", "metric"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--old", default=str(pathlib.Path(__file__).parents[1] / "leaderboards" / "toy.csv"))
    p.add_argument("--stages", default="", help="comma list (default: every stage the run has but post, the last post@N again)")
    p.add_argument("--all", action="store_true", help="print every cell, not only those outside")
    a = p.parse_args()
    old, (new, _) = pd.read_csv(a.old), load(a.runs)
    # ``post`` repeats the curve's last point (``post@N``)
    new = new[new.stage.isin(a.stages.split(","))] if a.stages else new[new.stage != "post"]
    rows = []
    for key, cell in new.groupby(KEYS):
        before = old[(old[KEYS] == pd.Series(key, index=KEYS)).all(axis=1) & old.seed.isin(cell.seed)]
        if before.empty:
            continue
        cell = cell[cell.seed.isin(before.seed)]
        (o_mean, o_half, n), (n_mean, n_half, _) = summary(before), summary(cell)
        outside = not math.isnan(o_half) and abs(n_mean - o_mean) > o_half + 1e-9
        rows.append((*key, n, o_mean, o_half, n_mean, n_half, outside))
    if not rows:
        sys.exit("no cell of the run is in the old table (same concept, method, attack, stage, metric and seeds)")
    df = pd.DataFrame(rows, columns=KEYS + ["seeds", "old", "old_half", "new", "new_half", "outside"])
    shown = df if a.all else df[df.outside]
    print("| concept | method | attack | stage | metric | seeds | old | new | new − old |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in shown.itertuples():
        mark = " **outside**" if r.outside else ""
        print(f"| {r.concept} | {r.method} | {r.attack} | {r.stage} | {r.metric} | {r.seeds} | {r.old:.1f} ± "
              f"{r.old_half:.1f} | {r.new:.1f} ± {r.new_half:.1f} | {r.new - r.old:+.1f}{mark} |")
    print()
    counts = df.groupby("metric").outside.agg(["sum", "count"])
    for metric, (out, total) in counts.iterrows():
        print(f"{metric}: {out} of {total} cells outside the old interval")
    print(f"all: {int(df.outside.sum())} of {len(df)} cells outside")


if __name__ == "__main__":
    main()
