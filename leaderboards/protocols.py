"""Old against new: the toy leaderboard before the held-out protocol (``toy-shared-prompts.csv``, where
methods, attacks and metrics shared one prompt list) beside a run under it, as a markdown table.

For each concept, method and ASR stage under ``ft``: each protocol's mean ± 95 % half-width over the seeds
the new run has (Student-t over seeds; one seed: its bootstrap interval over prompts), and new − old with the half-widths combined
in quadrature (independent runs). ``esd+meta − esd`` rows: ESD+meta's advantage, paired by seed within each
protocol, on the seeds the new run has. The two protocols score different eval prompts, so a difference is the whole protocol's effect.

    python leaderboards/protocols.py RUN_DIR... [--old leaderboards/toy-shared-prompts.csv]
"""

from __future__ import annotations

import argparse
import math
import pathlib

import pandas as pd

from relearnbench.table import load, t_interval

STAGES = ("pre", "post@10", "post@100")


def summary(values: pd.DataFrame) -> tuple[float, float, int]:
    """(mean, 95 % half-width, seeds) of one cell's ASR over its seeds."""
    mean, half = t_interval(values["value"].astype(float).tolist())
    if len(values) == 1:
        half = (float(values["hi"].iloc[0]) - float(values["lo"].iloc[0])) / 2
    return mean, half, len(values)


def advantage(df: pd.DataFrame, concept: str, stage: str, seeds=None, a: str = "esd+meta", b: str = "esd"):
    """ESD+meta − ESD, paired by seed (of ``seeds``, default all): (mean, half-width, seeds), or None if no seed
    has both."""
    df = df if seeds is None else df[df.seed.isin(seeds)]
    g = df[(df.concept == concept) & (df.stage == stage)].pivot_table(index="seed", columns="method", values="value")
    if a not in g or b not in g:
        return None
    diff = (g[a] - g[b]).dropna().tolist()
    if not diff:
        return None
    mean, half = t_interval(diff)
    return mean, half, len(diff)


def fmt(x) -> str:
    if x is None:
        return "–"
    mean, half, n = x
    return f"{mean:.1f}" + ("" if math.isnan(half) else f" ± {half:.1f}") + f" ({n})"


def diff(new, old) -> str:
    if new is None or old is None:
        return "–"
    return f"{new[0] - old[0]:+.1f} ± {math.hypot(new[1], old[1]):.1f}" if not (
        math.isnan(new[1]) or math.isnan(old[1])) else f"{new[0] - old[0]:+.1f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--old", default=str(pathlib.Path(__file__).parent / "toy-shared-prompts.csv"))
    a = p.parse_args()
    old = pd.read_csv(a.old)
    new, _ = load(a.runs)
    frames = {}
    for name, df in (("old", old), ("new", new)):
        frames[name] = df[(df.attack == "ft") & (df.metric == "asr") & df.stage.isin(STAGES)]
    print("| concept | method | stage | old: shared prompts | new: held out | new − old |")
    print("| --- | --- | --- | --- | --- | --- |")
    for concept in sorted(set(frames["new"].concept)):
        for method in ("none", "esd", "esd+meta", "esd+retain", "salun", "salun+meta", "uce", "uce+retain", "uce+meta"):
            for stage in STAGES:
                cell = {k: f[(f.concept == concept) & (f.method == method) & (f.stage == stage)] for k, f in frames.items()}
                if cell["new"].empty:
                    continue
                same = cell["old"][cell["old"].seed.isin(cell["new"].seed)]  # the seeds the new run has
                o = summary(same) if not same.empty else None
                n = summary(cell["new"])
                print(f"| {concept} | {method} | {stage} | {fmt(o)} | {fmt(n)} | {diff(n, o)} |")
        for stage in STAGES:
            new_seeds = set(frames["new"][frames["new"].concept == concept].seed)
            o, n = advantage(frames["old"], concept, stage, new_seeds), advantage(frames["new"], concept, stage)
            if n is not None:
                print(f"| {concept} | esd+meta − esd | {stage} | {fmt(o)} | {fmt(n)} | {diff(n, o)} |")


if __name__ == "__main__":
    main()
