"""relearnbench compare: a run's numbers beside published ones, against a small synthetic CSV on a toy run;
and the shipped CSV of the meta-unlearning paper's SD-1.4 nudity table."""

import csv
import io
import pathlib

import pandas as pd
import pytest

from relearnbench.compare import wilson

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAPER = ROOT / "leaderboards" / "paper-sd14-nudity.csv"
HEADER = ["method", "attack", "step", "metric", "value", "n", "source", "judge"]


def test_wilson_interval():
    lo, hi = wilson(0.5, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    lo, hi = wilson(0.0, 142)
    assert lo == 0.0 and 0.02 < hi < 0.03  # a published 0.00 % still allows a couple of flagged images


def test_the_paper_csv_holds_its_table():
    frame = pd.read_csv(PAPER)
    assert list(frame.columns) == HEADER
    asr = frame[frame.metric == "asr"]
    # every published nudity rate is a whole number of the 142 prompts: a transcription typo breaks that
    assert all(abs(round(v * 1.42) / 1.42 - v) < 0.006 for v in asr.value)
    # 5 methods x plain/meta x (before, HRM-m 50, HRM-m 100, CLEAN 100), SD-1.4 itself, ESD-u-1 after 300
    # HRM-m steps (plain and meta) and the adversarial-prompt pair of RECE
    assert len(asr) == 5 * 2 * 4 + 1 + 2 + 2
    row = asr[(asr.method == "sdd") & (asr.attack == "ft") & (asr.step == "100")].iloc[0]
    assert (row.value, row.n) == (57.04, 142)
    assert frame.source.str.len().min() > 0


@pytest.fixture(scope="module")
def toy_run(run_cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "run"
    run_cli("run", "--concepts", "triangle", "--methods", "none", "--attacks", "none", "--metrics", "asr",
            "--set", "sample.images_per_prompt=1", "--set", "sample.steps=10", "--out", out, "--quiet", check=True)
    table = pd.read_csv(io.StringIO(run_cli("table", out, "--long", "--format", "csv", check=True).stdout))
    return out, float(table[(table.stage == "pre") & (table.metric == "asr")].value.iloc[0])


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


def test_compare_a_toy_run(run_cli, toy_run, tmp_path):
    out, ours = toy_run
    far = 100.0 if ours < 50 else 0.0
    published = write(tmp_path / "pub.csv", [
        ["none", "none", "pre", "asr", f"{ours:.2f}", 8, "synthetic: ours", "toy"],
        ["none", "none", "pre", "asr", f"{far:.2f}", 1000, "synthetic: far", "toy"],
        ["esd", "ft", "100", "asr", "20.0", 142, "synthetic: a row the run lacks", "toy"],
    ])
    proc = run_cli("compare", out, "--published", published, "--format", "csv", check=True)
    lines = proc.stdout.splitlines()
    frame = pd.read_csv(io.StringIO("\n".join(lines[:3])))
    assert list(frame.inside) == ["yes", "no"]
    assert list(frame.difference.round(2)) == [0.0, round(ours - far, 2)]
    assert "1 of 2 inside the published 95 % interval" in proc.stdout
    assert "not in the run: esd · ft · 100 · asr (published 20.0)" in proc.stdout
    failed = run_cli("compare", out, "--published", published, "--fail-outside")
    assert failed.returncode == 1
    inside_only = write(tmp_path / "in.csv", [["none", "none", "pre", "asr", f"{ours:.2f}", 8, "s", "toy"]])
    assert run_cli("compare", out, "--published", inside_only, "--fail-outside").returncode == 0


def test_compare_names_a_bad_file(run_cli, toy_run, tmp_path):
    out, _ = toy_run
    bad = tmp_path / "bad.csv"
    bad.write_text("method,value\nnone,1\n")
    proc = run_cli("compare", out, "--published", bad)
    assert proc.returncode == 2 and "missing column(s) attack, step, metric, n, source, judge" in proc.stderr
