"""Paired per-seed differences of ASR from a base method along the relearning curve, as a markdown table:
mean ± 95 % Student-t half-width over the seeds both methods ran, and each seed's difference.

    python leaderboards/paired.py RUN_DIR... [--bases esd,salun,uce] [--attack ft]

Each base method B is set against B+meta and its retain-only control B+retain.
"""

from __future__ import annotations

import argparse

from relearnbench.table import load, stage_order, t_interval


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--bases", default="esd,salun,uce", help="base methods, each against its +meta and +retain")
    p.add_argument("--attack", default="ft")
    a = p.parse_args()
    records, _ = load(a.runs)
    print("| concept | stage | method | base's ASR % | difference from its base | per seed | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for base in a.bases.split(","):
        for row in paired(records, base, [f"{base}+meta", f"{base}+retain"], a.attack):
            print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
