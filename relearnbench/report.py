"""``relearnbench report``: one HTML page with the leaderboard, a relearning-curve plot per concept and
attack (ASR against attack step, one line per method), and before/after image sheets per cell."""

from __future__ import annotations

import html
import json
import pathlib
import shutil

from relearnbench import table as T


def curve_plots(df, out: pathlib.Path, metric: str = "asr") -> list[tuple[str, str]]:
    """One PNG per (concept, attack) with a relearning curve; returns (title, file name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = df[(df["metric"] == metric) & df["stage"].str.startswith("post@")].copy()
    if curves.empty:
        return []
    curves["step"] = curves["stage"].str.slice(5).astype(int)
    plots = []
    for (concept, attack), g in curves.groupby(["concept", "attack"], sort=False):
        if g["step"].nunique() < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
        for method, m in g.groupby("method", sort=False):
            steps = sorted(m["step"].unique())
            stats = [T.t_interval(m[m["step"] == s]["value"].astype(float).tolist()) for s in steps]
            mean = [x for x, _ in stats]
            line, = ax.plot(steps, mean, marker="o", label=method)
            if m.groupby("step")["seed"].nunique().max() > 1:  # the 95 % t interval over seeds, clipped to bounds
                low, high = T.bounds(metric)
                ax.fill_between(steps, [max(x - h, low) for x, h in stats], [min(x + h, high) for x, h in stats],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        # early steps are where a tiny model relearns: linear up to the first step after 0, logarithmic after
        first = min([s for s in g["step"].unique() if s > 0], default=1)
        ax.set_xscale("symlog", linthresh=first)
        ax.set_xlabel(f"{_axis(attack)} (linear to {first}, then log)")
        ax.set_ylabel(f"{metric} (%)" if metric == "asr" else metric)
        ax.set_title(f"{concept}: relearning under {attack}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"curve-{concept}-{attack}.png"
        fig.savefig(out / name)
        plt.close(fig)
        plots.append((f"{concept} · {attack}", name))
    return plots


def _axis(attack: str) -> str:
    """What N in post@N counts: an attack's registered ``axis`` (a probe's strength), else its steps."""
    from relearnbench.registry import ATTACKS

    return ATTACKS.meta(attack).get("axis", f"{attack} steps") if attack in ATTACKS else f"{attack} steps"


def image_sheets(df, run_dir: pathlib.Path, out: pathlib.Path) -> list[dict]:
    """Per cell: the contact sheet before the attack and after its last step."""
    cells = []
    for key, g in df.groupby(["model", "concept", "method", "attack", "seed"], sort=False):
        sheets, rows = {}, {}
        for stage, s in g.groupby("stage"):
            info = json.loads(s["info"].iloc[0] or "{}")
            if "images" in info and (run_dir / info["images"]).exists():
                sheets[stage], rows[stage] = run_dir / info["images"], info.get("sheet", {})
        post = sorted((st for st in sheets if st.startswith("post")), key=T.stage_order)
        if "pre" not in sheets or not post:
            continue
        names = {}
        for label, stage in (("before", "pre"), ("after", post[-1])):
            name = f"cell-{'-'.join(map(str, key))}-{label}.png".replace("/", "_").replace("+", "_")
            shutil.copyfile(sheets[stage], out / name)
            names[label] = name
        cells.append({"key": key, "before": names["before"], "after": names["after"], "after_stage": post[-1],
                      "rows": {"before": rows["pre"], "after": rows[post[-1]]}})
    return cells


def metric_notes(df) -> str:
    """Every metric in the run, with its direction and registered description."""
    from relearnbench.registry import METRICS

    items = []
    for m in sorted({m.split(".")[0] for m in df["metric"]}):
        known = m in METRICS
        arrow = {True: "↑ higher is better", False: "↓ lower is better", None: ""}[T.direction(m)]
        parts = sorted(x for x in set(df["metric"]) if x.startswith(m + "."))
        items.append(f"<li><b>{html.escape(m)}</b> {arrow}: "
                     f"{html.escape(METRICS.description(m) if known else '(not registered here)')}"
                     + (f" (reported as {html.escape(', '.join(parts))})" if parts else "") + "</li>")
    return "<h2>Metrics</h2><ul>" + "".join(items) + "</ul>"


def provenance(run: pathlib.Path, cells) -> str:
    """The command, seeds, the resolved settings of each method and attack (preset or --set), versions."""
    from relearnbench.store import Store

    store = Store(run, create=False)
    command, spec = store.get_meta("command", "(not recorded: a run made before 2026-12-02)"), store.get_meta("spec", {})
    store.close()
    rows = [("command", command), ("seeds", ", ".join(map(str, spec.get("seeds", [])))),
            ("device, dtype", f"{spec.get('device', '')}, {spec.get('dtype', '')}"),
            ("--set", json.dumps(spec.get("sets", {})) or "{}")]
    done = cells[cells["status"] == "done"]
    if len(done):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in json.loads(done["versions"].iloc[0] or "{}").items())))
        settings = {}
        for c in done.itertuples():
            config = json.loads(c.config or "{}")
            for kind in ("method", "attack"):
                name = getattr(c, kind)
                settings.setdefault(f"{kind} {name}", json.dumps(config.get(kind, {}).get("config", {}), default=str))
        rows += sorted(settings.items())
    body = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows)
    return ("<h2>Provenance</h2><p>Settings as resolved from the plugin defaults, the preset of the model's scale "
            "and <code>--set</code> (<code>relearnbench show NAME</code> lists each key's source values).</p>"
            f"<table class='provenance'>{body}</table>")


def resources(df) -> str:
    """Seconds and peak memory of every stage of every cell (``relearnbench table --timing``)."""
    if df.empty:
        return ""
    return ("<h2>Time and memory</h2><p>Per cell and stage: wall seconds and peak GB of what made the model "
            "(the unlearning for <code>pre</code>, the attack's training up to N for <code>post@N</code>) and of "
            "evaluating it; peak: resident memory on the CPU (the process's high-water mark within the stage), "
            "allocated (and reserved) on CUDA. docs/gpu-memory.md has what each cell needs at 512 px.</p>"
            + T.render(T.timing_table(df), "html"))


def failed_cells(cells) -> str:
    failed = cells[cells["status"] == "failed"]
    if failed.empty:
        return ""
    rows = "".join(f"<li><code>{html.escape('/'.join(map(str, (c.model, c.concept, c.method, c.attack, c.seed))))}"
                   f"</code>: {html.escape(str(c.error))}</li>" for c in failed.itertuples())
    return (f"<h2>Failed cells ({len(failed)})</h2><p>Not in the tables above; "
            f"<code>relearnbench table --failed --traceback</code> shows why.</p><ul>{rows}</ul>")


def _sheet_caption(sheet: dict) -> str:
    """Each row's prompts, left to right, and the forget images the judge flagged (framed red in the PNG)."""
    lines = []
    for which in ("forget", "related", "unrelated"):
        if which in sheet:
            marks = sheet.get("flagged") if which == "forget" else None
            texts = [html.escape(t) + (" <b style='color:#c00'>[flagged]</b>" if marks and marks[i] else "")
                     for i, t in enumerate(sheet[which])]
            lines.append(f"<br><small><b>{which}:</b> {' · '.join(texts)}</small>")
    return "".join(lines)


def write_report(run_dir: str, out: str | None = None) -> pathlib.Path:
    run = pathlib.Path(run_dir)
    df, cells_frame = T.load([str(run)])
    dest = pathlib.Path(out) if out else run / "report"
    dest.mkdir(parents=True, exist_ok=True)
    board = "".join(f"<h3>attack: {html.escape(a)}</h3>" + T.render(T.leaderboard(df, attack=a), "html")
                    for a in dict.fromkeys(df["attack"]))  # one table per attack, as `relearnbench table` prints
    plots = curve_plots(df, dest)
    cells = image_sheets(df, run, dest)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>relearnbench · {html.escape(run.name)}</title>",
             "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
             "table.leaderboard{border-collapse:collapse;font-size:13px;white-space:nowrap}"
             ".leaderboard td,.leaderboard th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             ".cells{display:flex;flex-wrap:wrap;gap:18px}.cell{border:1px solid #ddd;padding:8px}"
             "img.sheet{image-rendering:pixelated;width:360px}figure{display:inline-block;margin:6px}</style>",
             "</head><body>", f"<h1>relearnbench · {html.escape(run.name)}</h1>",
             "<p>ASR: share of forget-prompt images the concept's judge flags (%, ↓ better for the defender). "
             "<code>pre</code>: the unlearned model before the attack; <code>post</code>: after it. "
             "Intervals: 95 % (bootstrap over prompts for one seed, t over seeds for several).</p>",
             "<h2>Leaderboard</h2>", board, metric_notes(df), failed_cells(cells_frame)]
    if plots:
        parts.append("<h2>Relearning curves</h2>")
        parts += [f"<figure><img src='{n}' alt='{html.escape(t)}'><figcaption>{html.escape(t)}</figcaption></figure>"
                  for t, n in plots]
    if cells:
        parts.append("<h2>Images per cell</h2><p>Rows: forget prompts, related benign, unrelated benign "
                     "(first image of each prompt; a red frame: the judge flagged it).</p><div class='cells'>")
        for c in cells:
            model, concept, method, attack, seed = c["key"]
            parts.append(f"<div class='cell'><b>{html.escape(method)}</b> × {html.escape(attack)} · "
                         f"{html.escape(concept)} · seed {seed}<br>"
                         f"<figure><img class='sheet' src='{c['before']}'><figcaption>before (pre)"
                         f"{_sheet_caption(c['rows']['before'])}</figcaption></figure>"
                         f"<figure><img class='sheet' src='{c['after']}'><figcaption>after "
                         f"({html.escape(c['after_stage'])}){_sheet_caption(c['rows']['after'])}</figcaption></figure></div>")
        parts.append("</div>")
    parts += [resources(df), provenance(run, cells_frame), "</body></html>"]
    page = dest / "index.html"
    page.write_text("\n".join(parts))
    return page
