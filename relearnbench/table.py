"""Leaderboards from results stores: one row per (concept, method), columns attack × metric × stage,
mean ± 95 % interval over seeds (a single seed shows its own bootstrap interval), arrows from each
metric's registered direction."""

from __future__ import annotations

import json
import math
import pathlib
import re
import shutil
import tomllib

from relearnbench.errors import UserError
from relearnbench.store import DB_NAME, Store

LONG_COLUMNS = ["model", "concept", "method", "attack", "seed", "stage", "metric", "value", "lo", "hi", "n"]
# --timing: each record's stage (unlearn for pre, the attack up to N for post@N) and its evaluation, seconds and
# peak GB (resident on the CPU, allocated on CUDA; reserved by CUDA's caching allocator where a GPU ran it)
TIMING_COLUMNS = ["seconds", "peak_gb", "reserved_gb", "eval_seconds", "eval_peak_gb", "eval_reserved_gb"]


LAST_RUN = pathlib.Path("runs") / ".last-run"  # written by `relearnbench run` in the folder it ran in


def remember_run(run_dir) -> None:
    """Record ``run_dir`` (any ``--out`` too) as the run the last ``relearnbench run`` in this folder wrote:
    what a bare ``table`` or ``report`` here shows. Not a guess from timestamps, which ``table``, ``verify``
    and ``export`` of an older run move (SQLite writes beside its database)."""
    LAST_RUN.parent.mkdir(parents=True, exist_ok=True)
    tmp = LAST_RUN.with_name(LAST_RUN.name + ".tmp")
    tmp.write_text(str(pathlib.Path(run_dir).resolve()) + "\n")
    tmp.replace(LAST_RUN)


def last_run() -> pathlib.Path:
    """The run directory the last ``relearnbench run`` in this folder wrote (``runs/.last-run``)."""
    if not LAST_RUN.exists():
        found = sorted(str(p.parent) for p in LAST_RUN.parent.glob(f"*/{DB_NAME}"))
        listed = f"; runs under {LAST_RUN.parent}/: {', '.join(found[:6])}" if found else ""
        raise UserError(f"no run recorded in this folder ({LAST_RUN} is written by `relearnbench run` here){listed}; "
                        "name a run directory, e.g. relearnbench table RUN_DIR")
    run = pathlib.Path(LAST_RUN.read_text().strip())
    if not (run / DB_NAME).exists():
        raise UserError(f"the last run made in this folder ({LAST_RUN}) was {run}, which holds no {DB_NAME} now; "
                        "name a run directory, e.g. relearnbench table RUN_DIR")
    return shown(run)


def shown(path: pathlib.Path) -> pathlib.Path:
    """``path`` relative to the current folder where it lies inside it."""
    try:
        return path.resolve().relative_to(pathlib.Path.cwd().resolve())
    except ValueError:
        return path


CELL = ["model", "concept", "method", "attack", "seed"]
ROW_LABELS = ("settings", "overlap")  # columns that keep a table's rows apart beside the method, where needed


def load(run_dirs: list[str]):
    """The records and cells of ``run_dirs`` as two frames, each with the columns ``settings`` (what differs
    where one cell's settings differ from another's of the same method and attack: they never share a row)
    and ``overlap`` ("yes" where the concept lets its roles share prompts, else "no"); a seed that several
    runs hold with the same settings counts once, from the first run given."""
    import pandas as pd

    frames, cells = [], []
    for i, d in enumerate(run_dirs):
        if not pathlib.Path(d).is_dir():
            raise UserError(f"run directory {d} does not exist")
        store = Store(d, create=False)
        frames.append(store.records_frame().assign(run=i))
        cells.append(store.cells_frame().assign(run=i))
        store.close()
    df, cells = pd.concat(frames, ignore_index=True), pd.concat(cells, ignore_index=True)
    cells = settings_apart(cells)
    cells["overlap"] = ["yes" if json.loads(c or "{}").get("roles", {}).get("allow_overlap") else "no"
                        for c in cells["config"]]
    cells["concept_name"] = [concept_name(k, json.loads(c or "{}")) for k, c in zip(cells["concept"], cells["config"])]
    labels = cells[["run", *CELL, "settings", "overlap", "concept_name"]]
    df = df.merge(labels, on=["run", *CELL], how="inner")  # records of a cell counted in another run go
    return df, cells


def row_labels(frame) -> list[str]:
    """The ROW_LABELS columns a table of ``frame`` shows: those that say something (settings differ somewhere,
    some concept overlaps)."""
    return [c for c, plain in zip(ROW_LABELS, ("", "no")) if c in frame and set(frame[c]) - {plain}]


def settings_apart(cells):
    """``cells`` with a ``settings`` column: "" where every cell of a (model, concept, method, attack) ran with
    the same settings (what decides its numbers: the runner's DETERMINING parts and the metrics'), else the
    settings that differ among them, as ``esd.steps=100``; a cell held by several runs with the same settings
    is kept once (a finished one first, then the first run given)."""
    from relearnbench.runner import DETERMINING

    flat = []
    for cfg in (json.loads(c or "{}") for c in cells["config"]):
        out: dict = {}
        _flatten("", {**{k: cfg.get(k) for k in DETERMINING}, "metrics": cfg.get("metrics", {})}, out)
        flat.append(out)
    labels = [""] * len(cells)
    for _, group in cells.groupby(CELL[:4], sort=False).indices.items():
        shared = set.intersection(*(set(flat[i]) for i in group))
        differ = sorted(k for k in shared if len({json.dumps(flat[i][k], sort_keys=True) for i in group}) > 1)
        for i in group:
            row = cells.iloc[i]
            labels[i] = ", ".join(f"{_setting_name(k, row['method'], row['attack'])}={flat[i][k]}" for k in differ)
    cells = cells.assign(settings=labels, _failed=cells["status"] != "done")
    cells = cells.sort_values(["_failed", "run"], kind="stable").drop_duplicates([*CELL, "settings"])
    return cells.sort_index().drop(columns="_failed")


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _setting_name(key: str, method: str, attack: str) -> str:
    """A flattened config key as a --set key where it is one: ``method.config.steps`` -> ``esd.steps``."""
    head, *rest = [p for p in key.split(".") if p != "config"]
    head = {"method": method, "attack": attack, "model_config": "model", "concept_sha256": "concept sha256"}.get(
        head, head)
    if head == "metrics" and rest:
        head, *rest = rest
    return ".".join([head, *rest])


def concept_name(key: str, config: dict) -> str:
    """A cell's concept as a table names it: its key, or for a concept given as a file (``tri.toml``) the name
    inside the file (its stem where the file is gone)."""
    if not key.endswith(".toml"):
        return key
    try:
        data = tomllib.loads(pathlib.Path(config.get("concept") or key).read_text())
        return data.get("name") or pathlib.Path(key).stem
    except (OSError, tomllib.TOMLDecodeError):
        return pathlib.Path(key).stem


def stage_order(stage: str) -> tuple:
    if stage == "pre":
        return (0, 0)
    m = re.fullmatch(r"post@(\d+)", stage)
    return (1, int(m.group(1))) if m else (2, 0)


def long_table(df, timing: bool = False):
    df = with_gb(df)
    out = df[LONG_COLUMNS[:5] + row_labels(df) + LONG_COLUMNS[5:] + (timing_columns(df) if timing else [])].copy()
    out["_stage"] = out["stage"].map(stage_order)
    out = out.sort_values(["model", "concept", "method", "attack", "seed", "_stage", "metric"])
    return out.drop(columns="_stage").reset_index(drop=True)


def timing_table(df):
    """One row per cell and stage: the seconds and peak GB of the stage that made the model (the unlearning for
    ``pre``, the attack's training up to N for ``post@N``; ``post``: the attack's end) and of evaluating it."""
    keys = ["model", "concept", "method", "attack", "seed", "stage"]
    df = with_gb(df)
    out = df.groupby(keys, sort=False)[timing_columns(df)].max().reset_index()
    out.insert(6, "made by", ["unlearn" if s == "pre" else "attack" for s in out["stage"]])
    out["_stage"] = out["stage"].map(stage_order)
    out = out.sort_values(keys[:5] + ["_stage"], kind="stable")
    return out.drop(columns="_stage").reset_index(drop=True)


def timing_columns(df) -> list[str]:
    """TIMING_COLUMNS, less the reserved ones when nothing was reserved (a CPU run)."""
    reserved = ["reserved_gb", "eval_reserved_gb"]
    return [c for c in TIMING_COLUMNS if c not in reserved or df[reserved].fillna(0).to_numpy().any()]


def with_gb(df):
    """``df`` with each recorded MiB column (``peak_mb``, ...) also in GB (``peak_gb``, 2**30 bytes, 3 decimals);
    records made before a column existed show nan."""
    out = df.copy()
    for mb in ("peak_mb", "reserved_mb", "eval_peak_mb", "eval_reserved_mb"):
        gb = mb.replace("_mb", "_gb")
        out[gb] = (out[mb].astype(float) if mb in out else float("nan")) / 1024
        out[gb] = out[gb].round(3)
    return out


def prompt_table(df):
    """One row per prompt of each record whose metric recorded a per-prompt breakdown (``asr`` and
    ``related.*`` put ``per_prompt`` in their info): which prompts moved a cell's figure."""
    import json

    import pandas as pd

    keys = LONG_COLUMNS[:7]  # model ... metric
    rows = [{**{k: getattr(r, k) for k in keys}, "prompt": prompt, "value": value}
            for r in df.itertuples() for prompt, value in json.loads(r.info or "{}").get("per_prompt", {}).items()]
    if not rows:
        raise UserError("no per-prompt figures in these records: asr and related record them in runs made since "
                        "2026-11-29; rerun the cells into a new run directory to get them")
    out = pd.DataFrame(rows)
    out["_stage"] = out["stage"].map(stage_order)
    out = out.sort_values(keys[:5] + ["_stage", "metric"], kind="stable")  # prompts stay in their concept's order
    return out.drop(columns="_stage").reset_index(drop=True)


def direction(metric: str):
    from relearnbench.registry import METRICS

    base = metric.split(".")[0]
    if base not in METRICS:
        return None
    return METRICS.meta(base).get("higher_is_better")


def t_quantile(n: int) -> float:
    """0.975 quantile of Student's t with n − 1 degrees of freedom."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, n - 1))
    except ImportError:
        return 1.96


def t_interval(vals: list[float]) -> tuple[float, float]:
    """Mean and 95 % Student-t half-width over seeds (nan for a single value)."""
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, t_quantile(n) * sd / math.sqrt(n)


def bounds(metric: str) -> tuple[float, float]:
    """The range a metric's values live in (a rate: 0-100 %), from its registration; unbounded if none."""
    from relearnbench.registry import METRICS

    base = metric.split(".")[0]
    return tuple(METRICS.meta(base).get("bounds", (-math.inf, math.inf))) if base in METRICS else (-math.inf, math.inf)


def aggregate(df, stages=("pre", "post")):
    """Mean, 95 % interval (half-width, and lo/hi clipped to the metric's bounds) and seed count per
    (model, concept, method, attack, metric, stage). Over seeds: a Student-t interval; one seed: the
    record's own (bootstrap) interval. ``clipped``: mean ± half leaves the bounds, so show lo-hi instead."""
    import pandas as pd

    if stages:
        df = df[df["stage"].isin(stages)]
    rows = []
    keys = ["model", "concept", "method", *[c for c in ROW_LABELS if c in df], "attack", "metric", "stage"]
    for key, g in df.groupby(keys, sort=False):
        vals = g["value"].astype(float).tolist()
        n = len(vals)
        mean, half = t_interval(vals)
        lo, hi = mean - half, mean + half
        if n == 1 and pd.notna(g["lo"].iloc[0]) and pd.notna(g["hi"].iloc[0]):
            lo, hi = float(g["lo"].iloc[0]), float(g["hi"].iloc[0])
            half = (hi - lo) / 2
        low, high = bounds(key[-2])
        clipped = mean - half < low or mean + half > high
        rows.append(dict(zip(keys, key), mean=mean, half=half, lo=max(lo, low), hi=min(hi, high), seeds=n,
                         clipped=clipped))
    return pd.DataFrame(rows, columns=keys + ["mean", "half", "lo", "hi", "seeds", "clipped"])


CLIPPED_NOTE = "a (lo–hi): the 95 % interval, clipped to the rate's range [0, 100] where mean ± half-width left it"


def fmt(mean: float, half: float, lo: float = math.nan, hi: float = math.nan, clipped: bool = False) -> str:
    if math.isnan(mean):
        return "–"
    s = _num(mean)
    if clipped:
        return f"{s} ({_num(lo)}–{_num(hi)})"
    return s if math.isnan(half) else f"{s} ± {_num(half)}"


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def leaderboard(df, stages=("pre", "post"), attack: str | None = None, numeric: bool = False):
    """Wide table: index (model?, concept?, method, settings?, overlap?: see ``load``), then ``seeds`` (the
    row's seed count, where any row has several), columns 'attack · metric↑ · stage' (just 'metric↑ · stage'
    for one ``attack``): text "mean ± half", or with ``numeric`` three number columns per column: the mean,
    'lo' and 'hi'.
    ``attrs["note"]`` explains clipped intervals where there are any."""
    if attack is not None:
        df = df[df["attack"] == attack]
    agg = aggregate(df, stages)
    if agg.empty:
        raise UserError("no finished records to tabulate (every cell failed or none ran)")
    agg["text"] = [fmt(*r) for r in zip(agg["mean"], agg["half"], agg["lo"], agg["hi"], agg["clipped"])]
    arrows = {True: "↑", False: "↓", None: ""}
    agg["column"] = [f"{'' if attack else a + ' · '}{m}{arrows[direction(m)]} · {s}" for a, m, s in
                     zip(agg["attack"], agg["metric"], agg["stage"])]
    head = [k for k in ("model", "concept") if agg[k].nunique() > 1]
    labels = row_labels(agg)
    index = head + ["method"] + labels
    order_methods = sorted(dict.fromkeys(df["method"]), key=lambda m: m != "none")  # the base model first
    order_cols = list(dict.fromkeys(
        c for _, c in sorted(zip(
            [(list(dict.fromkeys(df["attack"])).index(a), m, stage_order(s)) for a, m, s in
             zip(agg["attack"], agg["metric"], agg["stage"])], agg["column"]))))
    if numeric:
        parts = {v: agg.pivot_table(index=index, columns="column", values=v, aggfunc="first")
                 for v in ("mean", "lo", "hi")}
        wide = parts["mean"].join([parts["lo"].add_suffix(" lo"), parts["hi"].add_suffix(" hi")])
        wide = wide.reindex(columns=[f"{c}{x}" for c in order_cols for x in ("", " lo", " hi")])
    else:
        wide = agg.pivot_table(index=index, columns="column", values="text", aggfunc="first")
        wide = wide.reindex(columns=order_cols)
    wide.columns.name = None  # the pivot's "column" label would print as a stray header cell
    wide = wide.reset_index()
    if agg["seeds"].max() > 1:  # rows may mix seed counts (a t interval over seeds vs one seed's bootstrap)
        seeds = agg.groupby(index)["seeds"].max().rename("seeds").reset_index()
        wide = wide.merge(seeds, on=index, how="left")
        wide.insert(len(index), "seeds", wide.pop("seeds").astype(int))
    wide["_m"] = wide["method"].map(order_methods.index)
    wide = wide.sort_values([*head, "_m", *labels]).drop(columns="_m")
    if "concept" in head and "concept_name" in df:  # a concept given as a file: the name inside it, if unique
        names = dict(zip(df["concept"], df["concept_name"]))
        if len(set(names.values())) == len(names):
            wide["concept"] = wide["concept"].map(names)
    wide = (wide if numeric else wide.fillna("–")).reset_index(drop=True)
    wide.attrs["note"] = CLIPPED_NOTE if agg["clipped"].any() and not numeric else ""
    return wide


def render(frame, fmt_name: str, title: str = "") -> str:
    if fmt_name == "csv":
        return frame.to_csv(index=False)
    if fmt_name == "md":
        cols = list(frame.columns)
        lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
        return "\n".join(lines) + "\n"
    if fmt_name == "latex":
        return latex(frame.to_latex(index=False, escape=True))
    if fmt_name == "html":
        return frame.to_html(index=False, border=0, classes="leaderboard")
    if fmt_name == "rich":
        from rich.console import Console
        from rich.table import Table

        width = shutil.get_terminal_size((120, 24)).columns  # $COLUMNS, else the terminal's
        console = Console(width=width, record=True)
        keys = [c for c in frame.columns if c in ("model", "concept", "method", *ROW_LABELS, "seeds")]
        with console.capture() as cap:
            for part in _column_chunks(frame, keys, width):  # a table too wide for the terminal: in parts
                table = Table(title=title or None)
                for c in keys + part:
                    table.add_column(str(c), justify="left" if c in ("model", "concept", "method", *ROW_LABELS)
                                     else "right")
                for row in frame[keys + part].itertuples(index=False):
                    table.add_row(*(_cell(v) for v in row))
                console.print(table)
        return cap.get()
    raise UserError(f"--format {fmt_name!r}: expected rich, md, csv, latex or html")


# what pandas' LaTeX escaping leaves as Unicode, which pdflatex cannot typeset without extra packages
LATEX = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "·": r"$\cdot$", "±": r"$\pm$", "–": "--", "×": r"$\times$",
         "θ": r"$\theta$", "η": r"$\eta$", "ζ": r"$\zeta$", "γ": r"$\gamma$", "τ": r"$\tau$"}


def latex(text: str) -> str:
    """pandas' escaped LaTeX with the table's symbols as LaTeX commands (accented letters compile as UTF-8)."""
    return "".join(LATEX.get(ch, ch) for ch in text)


def _column_chunks(frame, keys: list, width: int) -> list[list]:
    """The value columns in consecutive groups that each fit ``width`` beside the ``keys`` columns, every
    column at least as wide as its longest cell and longest header word (rich wraps headers at spaces)."""
    def need(c) -> int:
        return max([len(_cell(v)) for v in frame[c]] + [len(w) for w in str(c).split()]) + 3  # padding, border

    room = width - 1 - sum(need(c) for c in keys)
    chunks: list[list] = [[]]
    for c in [c for c in frame.columns if c not in keys]:
        if chunks[-1] and sum(map(need, chunks[-1])) + need(c) > room:
            chunks.append([])
        chunks[-1].append(c)
    return chunks


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v) if abs(v) < 1e-3 and v != 0 else f"{v:.6g}"
    return str(v)
