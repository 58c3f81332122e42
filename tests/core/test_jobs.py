"""--jobs N: worker processes on this machine give the records of one process."""

import csv
import importlib.util
import io
import sqlite3
import subprocess
import sys

from tests.conftest import ROOT, needs_toy

SMALL = ["--concepts", "triangle", "--methods", "none,esd", "--attacks", "none,ft", "--metrics", "asr,related",
        "--set", "esd.steps=3", "--set", "ft.curve=[0,2]", "--set", "ft.images_per_prompt=1",
        "--set", "sample.steps=4", "--set", "sample.images_per_prompt=2", "--set", "sample.benign_images_per_prompt=1",
        "--quiet"]


def records(run_cli, out) -> dict:
    rows = csv.DictReader(io.StringIO(run_cli("table", out, "--long", "--format", "csv", check=True).stdout))
    return {tuple(r[k] for k in ("concept", "method", "attack", "seed", "stage", "metric")): r["value"] for r in rows}


@needs_toy
def test_jobs_2_gives_the_leaderboard_of_jobs_1(tmp_path, run_cli):
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli("run", *SMALL, "--jobs", "1", "--out", one, check=True)
    proc = run_cli("run", *SMALL, "--jobs", "2", "--out", two, check=True)
    assert "2 worker processes, 1 threads each" in proc.stderr
    assert "4 cells done, 0 failed" in proc.stderr
    # unlearning ran once per (concept, method, seed), not once per attack
    assert len(list((two / "artifacts" / "unlearn").glob("*.safetensors"))) == 2
    a, b = records(run_cli, one), records(run_cli, two)
    assert set(a) == set(b) and len(a) > 20
    assert {k: v for k, v in a.items() if k[5] in ("asr", "related.related", "related.unrelated")} == \
        {k: v for k, v in b.items() if k[5] in ("asr", "related.related", "related.unrelated")}
    again = run_cli("run", *SMALL, "--jobs", "2", "--out", two, check=True)
    assert "0 cells done, 0 failed, 4 already finished" in again.stderr and "worker processes" not in again.stderr
    # benchmarks/stages.py counts each stage once: unlearning per group, not per attack cell
    loader = importlib.util.spec_from_file_location("stages", ROOT / "benchmarks" / "stages.py")
    stages = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(stages)
    with sqlite3.connect(two / "results.sqlite") as db:
        unlearn = dict(db.execute("SELECT method, seconds FROM records WHERE stage = 'pre'").fetchall())
    split = stages.breakdown(str(two))
    assert abs(split["unlearn"] - sum(unlearn.values())) < 1e-6 and split["sampling"] > 0 and split["scoring"] > 0
    # benchmarks/unchanged.py: a run against its own table has no cell outside; one moved far with a narrow
    # interval is the one cell reported
    table = run_cli("table", two, "--long", "--format", "csv", check=True).stdout
    (tmp_path / "same.csv").write_text(table)
    rows = list(csv.DictReader(io.StringIO(table)))
    moved = next(r for r in rows if (r["method"], r["attack"], r["stage"], r["metric"]) == ("esd", "ft", "post@2", "asr"))
    moved.update(value=float(moved["value"]) + 50, lo=float(moved["value"]) + 49, hi=float(moved["value"]) + 51)
    with open(tmp_path / "moved.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    script = [sys.executable, str(ROOT / "benchmarks" / "unchanged.py"), str(two), "--old"]
    same = subprocess.run(script + [str(tmp_path / "same.csv")], capture_output=True, text=True, check=True).stdout
    assert "all: 0 of " in same
    out = subprocess.run(script + [str(tmp_path / "moved.csv")], capture_output=True, text=True, check=True).stdout
    assert "all: 1 of " in out and "| triangle | esd | ft | post@2 | asr | 1 |" in out and "**outside**" in out


def test_groups_start_wrapped_methods_first_and_keep_each_groups_cells():
    from relearnbench.runner import groups

    todo = [("toy", c, m, a, 0) for c in ("triangle", "striped") for m in ("none", "esd", "esd+meta") for a in ("none", "ft")]
    g = groups(todo)
    assert list(g) == [("toy", "triangle", "esd+meta", 0), ("toy", "striped", "esd+meta", 0),  # the long jobs first
                       ("toy", "triangle", "none", 0), ("toy", "triangle", "esd", 0),
                       ("toy", "striped", "none", 0), ("toy", "striped", "esd", 0)]
    assert g[("toy", "striped", "esd", 0)] == [("toy", "striped", "esd", "none", 0), ("toy", "striped", "esd", "ft", 0)]
    assert sorted(c for cells in g.values() for c in cells) == sorted(todo)
