"""A run beside published numbers: ``relearnbench compare RUN --published FILE``.

The published file is a CSV with the columns ``method, attack, step, metric, value, n, source, judge``:
``step`` is ``pre`` (the unlearned model before the attack), an integer N (after N attack steps, our
``post@N``) or ``post`` (the attack's final evaluation); ``value`` in the metric's unit (ASR in %); ``n``
the number of images or prompts the value counts (empty where it is no proportion: FID, CLIP).
``leaderboards/paper-sd14-nudity.csv`` holds the meta-unlearning paper's SD-1.4 nudity table.

For every published row the run has, ours (the mean over the run's seeds) stands beside it with the
difference, and, for a proportion with its n, whether ours lies inside the published value's 95 % Wilson
score interval at that n: the spread one binomial sample of n images has around the published rate,
which is the least a single published run can be off by. A ``pre`` row is matched to the run's ``pre``
record of the method under attack ``none``, else under any attack (every attack starts from the same
unlearned model).
"""

from __future__ import annotations

import math
import pathlib

from relearnbench.errors import UserError

COLUMNS = ["method", "attack", "step", "metric", "value", "n", "source", "judge"]


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion ``p`` (0-1) observed in ``n`` trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def read_published(path) -> "pandas.DataFrame":
    import pandas as pd

    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"--published {path}: no such file (leaderboards/paper-sd14-nudity.csv is the paper's table)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    return frame


def stage_of(step: str) -> str:
    step = str(step).strip()
    if step in ("pre", "post"):
        return step
    if step.isdigit():
        return f"post@{int(step)}"
    raise UserError(f"published step {step!r}: expected pre, post or a number of attack steps")


def compare(run_dirs: list[str], published, concept: str | None = None) -> tuple["pandas.DataFrame", list[str]]:
    """(the matched rows, one line per published row the run lacks)."""
    import pandas as pd

    from relearnbench.table import load

    df, _ = load(run_dirs)
    df = df[df["status"] == "done"] if "status" in df else df
    concepts = sorted(set(df["concept"]))
    if concept is None and len(concepts) > 1:
        raise UserError(f"the run holds several concepts ({', '.join(concepts)}): name one with --concept")
    if concept is not None:
        if concept not in concepts:
            raise UserError(f"--concept {concept}: the run holds {', '.join(concepts)}")
        df = df[df["concept"] == concept]
    means = df.groupby(["method", "attack", "stage", "metric"])["value"].agg(["mean", "count"])
    rows, missing = [], []
    for r in read_published(published).itertuples(index=False):
        stage = stage_of(r.step)
        attacks = [r.attack] + ([a for a in sorted(set(df["attack"])) if a != r.attack] if stage == "pre" else [])
        hit = next(((a, means.loc[(r.method, a, stage, r.metric)]) for a in attacks
                    if (r.method, a, stage, r.metric) in means.index), None)
        if hit is None:
            missing.append(f"{r.method} · {r.attack} · {r.step} · {r.metric} (published {r.value})")
            continue
        ours, seeds = float(hit[1]["mean"]), int(hit[1]["count"])
        theirs = float(r.value)
        lo = hi = inside = None
        if str(r.n).strip():
            n = int(r.n)
            lo, hi = (100 * x for x in wilson(theirs / 100, n))
            inside = lo <= ours <= hi
        rows.append(dict(method=r.method, attack=r.attack, step=r.step, metric=r.metric, ours=round(ours, 2),
                         seeds=seeds, published=theirs, difference=round(ours - theirs, 2),
                         interval="" if lo is None else f"[{lo:.1f}, {hi:.1f}] at n={int(r.n)}",
                         inside="" if inside is None else ("yes" if inside else "no"),
                         **({"from attack": hit[0]} if hit[0] != r.attack else {}), source=r.source))
    frame = pd.DataFrame(rows)
    if "from attack" in frame:
        frame["from attack"] = frame["from attack"].fillna("")
    return frame, missing


def summary(frame) -> tuple[int, int]:
    """(k inside, N with an interval)."""
    if frame.empty:
        return 0, 0
    judged = frame[frame["inside"] != ""]
    return int((judged["inside"] == "yes").sum()), len(judged)
