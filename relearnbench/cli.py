"""``relearnbench``: run a grid of unlearning methods × attacks, tabulate it, list plugins.

Heavy imports (torch, diffusers, pandas) live inside command bodies so ``--help`` and ``ls`` stay instant.
"""

from __future__ import annotations

import pathlib
import sys

import click

from relearnbench.errors import UserError

KINDS = ("methods", "attacks", "metrics", "models", "judges", "concepts", "grids")


def _plugins(f):
    f = click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
                     help="Import MODULE (or a .py file) that registers plugins. Repeatable.")(f)
    f = click.option("--debug", is_flag=True, help="Show Python tracebacks.")(f)
    return f


def _load_plugins(plugins):
    from relearnbench.registry import load_plugin

    for module in plugins:
        load_plugin(module)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="relearnbench")
def cli():
    """Does a concept erasure survive an attacker? Unlearning methods × attacks on diffusion models.

    \b
    Examples:
      relearnbench run --methods esd,esd+meta --attacks ft     # the toy world, minutes on a CPU
      relearnbench table                                       # the last run's leaderboard
      relearnbench show esd                                    # esd's --set keys and presets
    """


@cli.command()
@click.argument("grid_file", required=False)
@click.option("--grid", "grid_name", help="A named grid (relearnbench ls grids); default: quick, when no flag names the run.")
@click.option("--model", "--models", "models", help="Comma list of models (default toy).")
@click.option("--concepts", help="Comma list of concept names or .toml paths (default triangle,striped).")
@click.option("--methods", help="Comma list, e.g. esd,esd+meta (default none).")
@click.option("--attacks", help="Comma list, e.g. none,ft,lora (default none).")
@click.option("--metrics", help="Comma list (default asr,fid,clip,related).")
@click.option("--seeds", help="Comma list of integers, e.g. 0,1,2 (default 0).")
@click.option("--set", "sets", multiple=True, metavar="PLUGIN.KEY=VALUE",
              help="Override a config value (relearnbench show PLUGIN lists them); lists as a,b. Repeatable.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory (default runs/<grid>-<hash of the grid's content>, so the same command resumes).")
@click.option("--device", help="cpu, cuda, cuda:1 ... (default cpu).")
@click.option("--dtype", help="Frozen-weight dtype: float32, bf16, fp16 (default float32; fp16 needs cuda).")
@click.option("--executor", type=click.Choice(["local", "ray"]), help="Where cells run (default local).")
@click.option("--ray-address", help="Join an existing Ray cluster (default: start a local one).")
@click.option("--gpus", help="Local executor: one worker process per listed GPU, e.g. 0,1.")
@click.option("--jobs", type=int, help="Local executor: worker processes (default: one per core, or per GPU on cuda).")
@click.option("--cpus-per-task", type=int, help="Ray: CPU cores per task (default 1).")
@click.option("--retry-failed", is_flag=True, help="Rerun cells recorded as failed.")
@click.option("--keep-changed", is_flag=True, help="Resume even where finished cells ran with other settings.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--dry-run", is_flag=True, help="Print every cell and its resolved settings with their sources; run nothing.")
@_plugins
def run(grid_file, grid_name, models, concepts, methods, attacks, metrics, seeds, sets, out, device, dtype,
        executor, ray_address, gpus, jobs, cpus_per_task, retry_failed, keep_changed, quiet, dry_run, plugins, debug):
    """Run a grid (GRID_FILE or --grid NAME, flags override it); finished cells are skipped.

    With no grid and no flag naming models, concepts, methods, attacks or metrics, the quick grid runs.

    \b
    Examples:
      relearnbench run                                            # the quick grid on the toy world
      relearnbench run --methods esd,esd+meta --attacks ft --seeds 0,1,2
      relearnbench run --grid paper-sd14 --device cuda --dtype bf16
      relearnbench run --methods esd --set esd.lr=1e-4 --set ft.curve=0,10,50
      relearnbench run --grid paper-sd14 --dry-run                 # the resolved recipe, nothing loaded
    """
    from relearnbench.config import parse_sets
    from relearnbench.spec import build_spec, load_grid

    _load_plugins(plugins)
    flags = dict(models=models, concepts=concepts, methods=methods, attacks=attacks, metrics=metrics,
                 seeds=seeds, device=device, dtype=dtype, executor=executor, ray_address=ray_address, gpus=gpus,
                 jobs=jobs, cpus_per_task=cpus_per_task, plugins=list(plugins) or None)
    named = any(flags[k] for k in ("methods", "attacks", "metrics", "concepts", "models"))
    if grid_file and grid_name:
        raise UserError("give a grid file or --grid NAME, not both")
    grid = load_grid(grid_file or grid_name) if (grid_file or grid_name) else (None if named else load_grid("quick"))
    try:
        spec = build_spec(grid, flags, parse_sets(sets))
    except UserError as e:
        _with_plugin_hint(e, plugins, out)
    run_dir = pathlib.Path(out) if out else default_run_dir(spec)
    if dry_run:
        from relearnbench.planview import describe_plan

        try:
            click.echo(describe_plan(spec), nl=False)
        except UserError as e:
            _with_plugin_hint(e, plugins, out)
        click.echo(_would_resume(spec, run_dir, retry_failed, keep_changed))
        return
    from relearnbench.launch import execute

    try:
        outcome = execute(spec, run_dir, retry_failed=retry_failed, quiet=quiet, keep_changed=keep_changed)
    except UserError as e:
        _with_plugin_hint(e, plugins, out)
    except KeyboardInterrupt:
        if (run_dir / "results.sqlite").exists():
            import shlex

            again = sys.argv[1:] + ([] if out else ["--out", str(run_dir)])
            click.echo(f"\ninterrupted: finished cells are kept in {run_dir}; resume with\n"
                       f"  relearnbench {shlex.join(again)}", err=True)
        raise
    finally:
        if (run_dir / "results.sqlite").exists():  # what a bare `table` or `report` here shows
            from relearnbench.table import remember_run

            remember_run(run_dir)
    import contextlib

    from relearnbench.store import Store

    with contextlib.closing(Store(run_dir)) as store:  # read, then closed before the table opens the run
        failed = [c for c, st in store.statuses().items() if st == "failed" and c in set(spec.cells())]
        rows = {(r.model, r.concept, r.method, r.attack, r.seed): r for r in store.cells_frame().itertuples()} \
            if failed else {}
    now = {c for c, _ in outcome.failures}
    earlier = len([c for c in failed if c not in now])
    click.echo(f"{run_dir}: {outcome.done} cells done, {outcome.failed} failed, {outcome.skipped} already finished"
               + (f" ({earlier} of them failed in an earlier run, not rerun)" if earlier else ""), err=True)
    if outcome.done or outcome.skipped:
        _print_table([str(run_dir)], "rich", long=False, stages="pre,post", timing=False)
    if failed:
        for c in failed:
            old = "" if c in now else " (an earlier run's failure, not rerun: --retry-failed reruns it)"
            click.echo(f"failed{old}: {'/'.join(map(str, c))}: {rows[c].error if c in rows else ''}", err=True)
            if debug and c in rows:
                click.echo(rows[c].traceback, err=True)
        said = f"{len(failed) - earlier} cells failed" + (f", {earlier} failed in an earlier run and were not rerun"
                                                           if earlier else "")
        click.echo(f"{said}; rerun with --retry-failed after fixing the cause "
                   f"(relearnbench table --failed --traceback {run_dir} shows why)", err=True)
        sys.exit(1)


def _with_plugin_hint(error: UserError, plugins, out: str | None):
    """Raise ``error``, with how to pass --plugin where it names an unknown plugin and none was passed."""
    hint = "" if plugins else _plugin_hint(str(error), out)
    if not hint:
        raise error
    raise UserError(f"{error}{hint}") from error


def _plugin_hint(error: str, out: str | None) -> str:
    """For "unknown method 'x'" (attack, metric ...): the run directory (--out, else those under runs/) that ran x
    with --plugin, and how to pass it again; "" when none did."""
    import re

    from relearnbench.store import Store

    m = re.match(r"unknown (method|attack|metric|model|judge) '([^']+)'", error)
    if not m:
        return ""
    kind, name = m.groups()
    dirs = [pathlib.Path(out)] if out else sorted(p.parent for p in pathlib.Path("runs").glob("*/results.sqlite"))
    for d in dirs:
        if not (d / "results.sqlite").exists():
            continue
        store = Store(d, create=False)
        try:
            spec = store.get_meta("spec") or {}
        finally:
            store.close()
        if spec.get("plugins") and any(n.partition("+")[0].partition("@")[0] == name
                                       for n in spec.get(f"{kind}s", [])):
            return (f"; {d} ran {kind} {name!r} with --plugin {' --plugin '.join(spec['plugins'])}: "
                    "pass it again to rerun that run")
    return f"; a plugin's {kind}? load its module with --plugin MODULE"


def _would_resume(spec, run_dir: pathlib.Path, retry_failed: bool, keep_changed: bool) -> str:
    """--dry-run's last line: the run directory, and whether the run would start it, resume it or refuse."""
    if not (run_dir / "results.sqlite").exists():
        return f"run directory: {run_dir} (new: every cell would run)"
    from relearnbench.runner import check_finished, pending
    from relearnbench.store import Store

    store = Store(run_dir, create=False)
    try:
        statuses, cells, todo = store.statuses(), list(spec.cells()), len(pending(spec, store, retry_failed))
        done = sum(statuses.get(c) == "done" for c in cells)
        failed = sum(statuses.get(c) == "failed" for c in cells)
        if not keep_changed:
            try:
                check_finished(spec, store)
            except UserError as e:
                return f"run directory: {run_dir} (exists; the run would refuse: {e})"
    finally:
        store.close()
    old = f", {failed} failed earlier ({'rerun' if retry_failed else 'kept; --retry-failed reruns them'})" \
        if failed else ""
    return f"run directory: {run_dir} (exists: would resume; {done} of {len(cells)} cells finished{old}; {todo} to run)"


def default_run_dir(spec) -> pathlib.Path:
    """runs/<grid>-<hash of what decides the cells and their numbers>: the same command resumes."""
    import hashlib
    import json

    from relearnbench.spec import spec_dict

    content = {k: v for k, v in spec_dict(spec).items()
               if k in ("models", "concepts", "methods", "attacks", "metrics", "seeds", "sets", "dtype")}
    return pathlib.Path("runs") / f"{spec.name}-{hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]}"


@cli.command()
@click.argument("run_dirs", nargs=-1)
@click.option("--format", "fmt", default="rich", type=click.Choice(["rich", "md", "csv", "latex", "html"]),
              help="Output format.")
@click.option("--long", "long", is_flag=True, help="One row per record.")
@click.option("--stages", default="pre,post", help="Stages in the wide table: a comma list, or 'all' for the curve.")
@click.option("--timing", is_flag=True, help="Seconds and peak memory (GB) of every stage of every cell "
              "(with --long: as columns of each record).")
@click.option("--metrics", "metrics", help="Only these metrics (comma list; 'related' keeps related.*).")
@click.option("--prompts", is_flag=True, help="One row per prompt of each record (asr, related.*) at --stages.")
@click.option("--failed", is_flag=True, help="List the failed cells with their error instead.")
@click.option("--traceback", "tracebacks", is_flag=True, help="--failed: add each failed cell's traceback.")
@_plugins
def table(run_dirs, fmt, long, stages, timing, metrics, prompts, failed, tracebacks, plugins, debug):
    """Print the leaderboard of RUN_DIRS (default: the run the last `relearnbench run` in this folder made).

    \b
    Examples:
      relearnbench table --stages all                  # the whole relearning curve
      relearnbench table runs/quick-1a2b3c4d --format csv > quick.csv
      relearnbench table --failed --traceback          # why cells failed
    """
    _load_plugins(plugins)
    if failed or tracebacks:
        _print_failed(list(run_dirs), tracebacks)
        return
    _print_table(list(run_dirs), fmt, long, stages, timing, metrics, prompts)


def _last_run(command: str) -> str:
    """The run directory the last ``relearnbench run`` in this folder wrote, named on stderr (stdout is the table)."""
    from relearnbench import table as T

    run = T.last_run()
    click.echo(f"{command}: {run}, the run the last `relearnbench run` in this folder made ({T.LAST_RUN}); "
               f"for another: relearnbench {command} RUN_DIR", err=True)
    return str(run)


def _print_failed(run_dirs, tracebacks: bool):
    from relearnbench import table as T

    run_dirs = run_dirs or [_last_run("table")]
    _, cells = T.load(run_dirs)
    failed = cells[cells["status"] == "failed"]
    if failed.empty:
        click.echo(f"no failed cells in {', '.join(run_dirs)}")
    for c in failed.itertuples():
        click.echo(f"{c.model}/{c.concept}/{c.method}/{c.attack}/{c.seed}: {c.error}")
        if tracebacks:
            click.echo("    " + (c.traceback or "(no traceback recorded)").rstrip().replace("\n", "\n    "))


def _print_table(run_dirs, fmt, long, stages, timing, metrics=None, prompts=False):
    from relearnbench import table as T

    run_dirs = run_dirs or [_last_run("table")]
    df, cells = T.load(run_dirs)
    if metrics:
        wanted = {m.strip() for m in metrics.split(",")}
        df = df[[m in wanted or m.split(".")[0] in wanted for m in df["metric"]]]
        if df.empty:
            raise UserError(f"--metrics {metrics}: no such metric in {', '.join(run_dirs)}")
    if long and prompts:
        raise UserError("--long and --prompts are two different tables: give one of them")
    if long:
        click.echo(T.render(T.long_table(df, timing), fmt), nl=False)
        return
    if timing:
        click.echo(T.render(T.timing_table(df), fmt), nl=False)
        return
    stages = None if stages == "all" else tuple(s.strip() for s in stages.split(","))
    unknown = [s for s in stages or () if s not in set(df["stage"])] if len(df) else []
    if unknown:
        raise UserError(f"--stages {unknown[0]}: no such stage in {', '.join(run_dirs)}; it has "
                        f"{', '.join(sorted(set(df['stage']), key=T.stage_order))} (or --stages all)")
    if prompts:
        if stages:
            df = df[df["stage"].isin(stages)]
        click.echo(T.render(T.prompt_table(df), fmt), nl=False)
        return
    notes = set()
    if fmt in ("rich", "md"):  # one readable table per attack
        for attack in dict.fromkeys(df["attack"]):
            title = f"attack: {attack}  ({', '.join(run_dirs)})"
            if fmt == "md":
                click.echo(f"\n**{title}**\n")
            board = T.leaderboard(df, stages, attack)
            notes.add(board.attrs["note"])
            click.echo(T.render(board, fmt, title=title), nl=False)
    else:
        click.echo(T.render(T.leaderboard(df, stages, numeric=fmt == "csv"), fmt), nl=False)
    for note in sorted(notes - {""}):
        import shutil
        import textwrap

        click.echo("\n" + textwrap.fill(note, shutil.get_terminal_size((120, 24)).columns))
    failed = cells[cells["status"] == "failed"]
    if len(failed) and fmt in ("rich", "md"):
        click.echo(f"\n{len(failed)} failed cells are not in the table (relearnbench run --retry-failed)")


@cli.command()
@click.argument("kind", required=False, metavar="[KIND]")
@click.argument("pattern", required=False)
@_plugins
def ls(kind, pattern, plugins, debug):
    """List plugins of KIND (all kinds by default) matching PATTERN (fnmatch); with no KIND, PATTERN is
    searched in every kind (a plain word: the names containing it).

    \b
    Examples:
      relearnbench ls methods
      relearnbench ls attacks 'ft*'
      relearnbench ls esd                  # every kind: esd, esd-u-1, ... and what else names esd
    """
    import fnmatch

    from relearnbench.concepts import CONCEPT_DIR
    from relearnbench.config import listing
    from relearnbench.registry import REGISTRIES
    from relearnbench.spec import GRID_DIR

    if kind is not None and kind not in KINDS:
        if pattern is not None:
            raise UserError(f"ls {kind} {pattern}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        kind, pattern = None, kind if any(c in kind for c in "*?[") else f"*{kind}*"
        searched = True
    else:
        searched = False
    pattern = pattern or "*"
    _load_plugins(plugins)
    found = 0
    for k in ([kind] if kind else KINDS):
        if k in ("concepts", "grids"):
            rows = listing({"concepts": CONCEPT_DIR, "grids": GRID_DIR}[k], pattern)
        else:
            reg = REGISTRIES[k]
            rows = [(n, reg.description(n)) for n in reg.list(pattern)]
        suffixes = REGISTRIES[k].suffixes() if k in REGISTRIES else {}
        if searched:  # only what matches: a wrapper's name too (ls meta)
            suffixes = {s: d for s, d in suffixes.items() if fnmatch.fnmatch(s, pattern)}
            found += len(rows) + len(suffixes)
            if not rows and not suffixes:
                continue
        click.echo(f"{k}:")
        for name, desc in rows:
            click.echo(f"  {name:<18} {desc}")
        if suffixes and (rows or searched):
            click.echo(f"wrappers ({', '.join('NAME+' + s for s in suffixes)}) of any {k[:-1]} above:")
            for suffix, desc in suffixes.items():
                click.echo(f"  {'+' + suffix:<18} {desc}")
    if searched and not found:
        raise UserError(f"no plugin, concept or grid matches {pattern!r}; kinds: {', '.join(KINDS)} "
                        "(relearnbench ls KIND lists one)")


@cli.command()
@click.argument("name")
@_plugins
def show(name, plugins, debug):
    """A plugin's --set keys: type, default, the value at each scale's preset, and what each means.

    \b
    Examples:
      relearnbench show esd
      relearnbench show uce+meta        # the base method's keys, then the wrapper's
      relearnbench show sample          # the sampler every metric shares
    """
    from relearnbench.show import show as text

    _load_plugins(plugins)
    click.echo(text(name), nl=False)


@cli.command()
@click.argument("run_dir", required=False)
@click.option("--out", type=click.Path(file_okay=False), help="Where to write (default RUN_DIR/report).")
@_plugins
def report(run_dir, out, plugins, debug):
    """Write an HTML report of RUN_DIR (default: the last run made here): leaderboard, curves, image sheets.

    \b
    Example: relearnbench report runs/quick-1a2b3c4d --out /tmp/report
    """
    from relearnbench.report import write_report

    _load_plugins(plugins)
    page = write_report(run_dir or _last_run("report"), out)
    click.echo(str(page))


@cli.command()
@click.argument("run_dir")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="A new folder for the pipeline.")
@click.option("--cell", help="MODEL/CONCEPT/METHOD/ATTACK/SEED, as `table --long` prints it.")
@click.option("--model", help="Instead of --cell: narrow by model ...")
@click.option("--concept", help="... concept ...")
@click.option("--method", help="... method ...")
@click.option("--attack", help="... attack (needed with --stage post) ...")
@click.option("--seed", help="... and seed (each may be left out where the run has one).")
@click.option("--stage", type=click.Choice(["pre", "post"]), default="pre", show_default=True,
              help="pre: the unlearned model; post: after the cell's attack (rerun, seeded as the run).")
@click.option("--lora", type=click.Choice(["merged", "adapter"]), default="merged", show_default=True,
              help="--stage post after a LoRA attack: merge it into the UNet, or write it beside the pipeline.")
@_plugins
def export(run_dir, out, cell, model, concept, method, attack, seed, stage, lora, plugins, debug):
    """Write a cell's model as a diffusers pipeline folder with a model card (README.md).

    \b
    Example: relearnbench export runs/quick-1a2b3c4d --cell toy/triangle/esd/ft/0 --stage post --out /tmp/esd-ft
    """
    from relearnbench.export import export as write, parse_cell

    _load_plugins(plugins)
    given = parse_cell(cell) if cell else dict(model=model, concept=concept, method=method, attack=attack, seed=seed)
    if cell and any((model, concept, method, attack, seed)):
        raise UserError("give --cell or --model/--concept/--method/--attack/--seed, not both")
    if stage == "post" and not given["attack"]:
        raise UserError("--stage post exports the model after an attack: name it with --attack (or --cell)")
    click.echo(str(write(run_dir, given, out, stage, lora)))


@cli.command()
@click.argument("run_dir")
@click.option("--repair", is_flag=True,
              help="Move bad files to artifacts/corrupt/ and mark the cells that used them for recompute.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def verify(run_dir, repair, debug):
    """Check RUN_DIR: the database's integrity, every artifact's sha256, every finished cell's artifacts.

    \b
    Example: relearnbench verify runs/quick-1a2b3c4d --repair
    """
    from relearnbench.verify import verify as check

    report = check(run_dir, repair=repair)
    for line in report.problems + report.repairs:
        click.echo(line)
    if not report.problems:
        click.echo("ok")
        return
    if repair and not report.unrepaired:
        click.echo(f"{len(report.problems)} problems in {run_dir}, all repaired")
        return
    click.echo(f"{len(report.problems)} problems in {run_dir}" + (
        f" ({len(report.unrepaired)} not repaired)" if repair else
        "; `relearnbench verify --repair` quarantines bad files and marks their cells for recompute"))
    sys.exit(1)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--published", required=True, type=click.Path(dir_okay=False),
              help="CSV of published numbers: method, attack, step, metric, value, n, source, judge "
                   "(leaderboards/paper-sd14-nudity.csv: the meta-unlearning paper's SD-1.4 nudity table).")
@click.option("--concept", help="The concept to compare (needed when the run holds several).")
@click.option("--format", "fmt", type=click.Choice(["rich", "md", "csv"]), default="rich", show_default=True)
@click.option("--fail-outside", is_flag=True, help="Exit 1 when any of ours lies outside its published interval.")
@_plugins
def compare(run_dirs, published, concept, fmt, fail_outside, plugins, debug):
    """A run's numbers beside published ones: ours, theirs, the difference, inside their 95 % binomial interval.

    \b
    Example: relearnbench compare runs/paper-sd14 --published leaderboards/paper-sd14-nudity.csv
    """
    from relearnbench.compare import compare as pair, summary
    from relearnbench.table import render

    _load_plugins(plugins)
    frame, missing = pair(list(run_dirs), published, concept)
    if not frame.empty:
        click.echo(render(frame, fmt), nl=False)
    inside, judged = summary(frame)
    click.echo(f"{inside} of {judged} inside the published 95 % interval ({len(frame)} published rows matched, "
               f"{len(missing)} not in the run)")
    for line in missing:
        click.echo(f"not in the run: {line}")
    if fail_outside and inside < judged:
        sys.exit(1)


@cli.command("fetch-weights")
@click.argument("name", type=click.Choice(["nudenet"]))
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def fetch_weights(name, debug):
    """Put a judge's published weights in the cache, checked by sha256 (the one command that downloads).

    \b
    nudenet: UnlearnDiffAtk's detector, best.onnx of the nudenet==3.0.8 wheel (pip downloads the wheel
    into a temporary folder, nothing is installed), for --set nudenet.weights=best (the unlearndiffatk preset).
    Example: relearnbench fetch-weights nudenet
    """
    from relearnbench.registry import JUDGES

    click.echo(str(JUDGES.get(name).fetch_weights()))


@cli.group()
def toy():
    """The embedded toy world.

    \b
    Example: relearnbench toy build --out /tmp/toy
    """


@toy.command("build")
@click.option("--out", type=click.Path(file_okay=False), help="Where to write (default: the package's assets, with --force).")
@click.option("--quick", is_flag=True, help="A shortened build (a minute) for testing the recipe; needs --out outside the package.")
@click.option("--force", is_flag=True, help="Allow overwriting the shipped assets in the package.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def toy_build(out, quick, force, debug):
    """Rebuild the toy model, judge and CLIP from the recipe, deterministically.

    \b
    Example: relearnbench toy build --out /tmp/toy   (then --set model.path=/tmp/toy/model ...)
    """
    import json

    from relearnbench.toy import TOY_DIR

    target = (pathlib.Path(out) if out else TOY_DIR).resolve()
    package = pathlib.Path(__file__).resolve().parent
    if quick and target.is_relative_to(package):
        raise UserError(f"toy build --quick writes a test-only world (its judge is not trained to use) and never "
                        f"into the package ({target}); give --out DIR outside {package}")
    if target.is_relative_to(TOY_DIR.resolve()) and (TOY_DIR / "manifest.json").exists() and not force:
        raise UserError(f"toy build would overwrite the shipped assets in {TOY_DIR}, which every toy result "
                        "depends on; give --out DIR, or --force to replace them")
    from relearnbench.toy.build import build

    summary = build(target, quick=quick)
    click.echo(json.dumps(summary, indent=1, default=str))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        cli.main(args=argv, prog_name="relearnbench", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except UserError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # an unexpected failure still gets one readable line
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
