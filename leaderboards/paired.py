"""Paired per-seed differences of ASR from a base method along the relearning curve, as a markdown table:
mean ± 95 % Student-t half-width over the seeds both methods ran, and each seed's difference.

    python leaderboards/paired.py RUN_DIR_OR_LONG_CSV... [--bases esd,salun,...] [--attack ft]
    python leaderboards/paired.py RUN_DIR_OR_LONG_CSV... --verdicts 100     # does +meta beat +retain at step 100?

Each base method B is set against B+meta and its retain-only control B+retain. With ``--verdicts N`` it prints
instead one line per base method: B+meta against B+retain after N attack steps, paired over the seeds both ran,
per concept; "beats" only where the 95 % interval of the difference excludes 0 in the metric's better direction.
A ``.csv`` argument is a long table (``relearnbench table RUN --long --format csv``, e.g. leaderboards/toy.csv).
"""

from __future__ import annotations

import argparse

from relearnbench.table import direction, load, stage_order, t_interval

BASES = "esd,salun,sdd,ca,fmn,uce,rece"  # the toy leaderboard's base methods, each with +meta and +retain


def paired(df, base: str, others: list[str], attack: str, metric: str = "asr"):
    df = df[(df.attack == attack) & (df.metric == metric)]
    rows = []
    for concept, g in df.groupby("concept"):
        wide = g.pivot_table(index=["stage", "seed"], columns="method", values="value")
        stages = set(wide.index.get_level_values(0)) - {"post@0", "post"}  # copies of pre and of the last point
        for stage in sorted(stages, key=stage_order):
            at = wide.loc[stage]
            for other in others:
                if base not in at or other not in at:
                    continue
                diff = (at[other] - at[base]).dropna()  # the seeds both methods ran
                if len(diff) < 2:
                    continue
                mean, half = t_interval(diff.tolist())
                rows.append((concept, stage, other, f"{at.loc[diff.index, base].mean():.1f}",
                             f"{mean:+.1f} ± {half:.1f}", ", ".join(f"{v:+.1f}" for v in diff), len(diff)))
    return rows


def verdicts(df, base: str, attack: str, step: int, metric: str = "asr") -> str:
    """One line: does ``base+meta`` beat ``base+retain`` after ``step`` steps of ``attack``, per concept, paired
    over the seeds both ran (mean difference ± 95 % Student-t half-width, meta − retain)."""
    meta, retain, stage = f"{base}+meta", f"{base}+retain", f"post@{step}"
    lower = direction(metric) is False  # ASR: lower is better for the defender
    df = df[(df.attack == attack) & (df.metric == metric) & (df.stage == stage)]
    parts, words = [], []
    for concept in sorted(set(df.concept)):
        rows = df[(df.concept == concept) & df.method.isin([meta, retain])]
        twice = rows[rows.duplicated(["method", "seed"], keep=False)]
        if len(twice):  # cells whose settings differ (table.load keeps them apart): never average them
            raise SystemExit(f"paired.py: {concept} holds several {stage} records of one seed for "
                             f"{', '.join(sorted(set(twice.method)))}; give run directories whose cells share settings")
        wide = rows.pivot_table(index="seed", columns="method", values="value")
        if meta not in wide or retain not in wide:
            parts.append(f"{concept}: not run")
            continue
        diff = (wide[meta] - wide[retain]).dropna()
        if len(diff) < 2:
            parts.append(f"{concept}: {len(diff)} seed, no interval")
            continue
        mean, half = t_interval(diff.tolist())
        better, worse = (mean + half < 0, mean - half > 0) if lower else (mean - half > 0, mean + half < 0)
        words.append("beats" if better else "loses to" if worse else "does not beat (the interval holds 0)")
        parts.append(f"{concept}: {words[-1]}, {mean:+.1f} ± {half:.1f} over {len(diff)} seeds")
    head = f"- **{meta}** against {retain}, {metric} after {step} {attack} steps"
    if not parts:
        return f"{head}: no records"
    return f"{head} (beats on {words.count('beats')} of {len(words)} concepts compared): " + "; ".join(parts)


def read(paths: list[str]):
    """Records of run directories, or of long CSVs as ``relearnbench table --long --format csv`` writes them."""
    import pandas as pd

    csvs = [pd.read_csv(p) for p in paths if p.endswith(".csv")]
    runs = [p for p in paths if not p.endswith(".csv")]
    return pd.concat(csvs + ([load(runs)[0]] if runs else []), ignore_index=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--bases", default=BASES, help="base methods, each against its +meta and +retain")
    p.add_argument("--attack", default="ft")
    p.add_argument("--verdicts", type=int, metavar="STEP", help="one line per base method: +meta against +retain")
    a = p.parse_args()
    records = read(a.runs)
    if a.verdicts is not None:
        for base in a.bases.split(","):
            print(verdicts(records, base, a.attack, a.verdicts))
        return
    print("| concept | stage | method | base's ASR % | difference from its base | per seed | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for base in a.bases.split(","):
        for row in paired(records, base, [f"{base}+meta", f"{base}+retain"], a.attack):
            print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
