"""The table's outputs through the CLI: a numeric wide CSV, LaTeX that pdflatex can typeset, a rich
table that fits the terminal, and rate intervals clipped to [0, 100] with a note."""

import csv
import io
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

# a rate (bounds 0-100) of 5 x seed: seeds 0, 1, 2 give 5 ± 12.4, whose t interval leaves [0, 100]
PLUGIN = (
    "from relearnbench.api import Metric, Score\n"
    "from relearnbench.registry import METRICS\n"
    "@METRICS.register('seedrate', higher_is_better=True, bounds=(0, 100))\n"
    "class SeedRate(Metric):\n"
    "    '''5 x seed'''\n"
    "    config_name = 'seedrate'\n"
    "    needs_model = False\n"
    "    def compute(self, ev):\n"
    "        return [Score('seedrate', 5.0 * ev.ctx.seed)]\n")


def cli(*args, env=None, check=True):
    exe = pathlib.Path(sys.executable).parent / "relearnbench"
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    plugin = folder / "seedrate.py"
    plugin.write_text(PLUGIN)
    out = folder / "run"
    cli("run", "--plugin", plugin, "--methods", "dummy", "--attacks", "dummy", "--metrics", "seedrate,dummy",
        "--concepts", "triangle", "--seeds", "0,1,2", "--out", out, check=True)
    return lambda *args, env=None: cli("table", out, "--plugin", plugin, *args, env=env, check=True).stdout


def test_wide_csv_is_numeric_with_lo_and_hi(run):
    rows = list(csv.DictReader(io.StringIO(run("--format", "csv"))))
    assert rows[0]["method"] == "dummy" and rows[0]["seeds"] == "3"
    assert float(rows[0]["dummy · seedrate↑ · pre"]) == 5.0
    assert float(rows[0]["dummy · seedrate↑ · pre lo"]) == 0.0  # 5 - 12.4, clipped to the rate's range
    assert float(rows[0]["dummy · seedrate↑ · pre hi"]) == pytest.approx(5 + 4.302653 * 5 / 3 ** 0.5, abs=1e-4)
    assert float(rows[0]["dummy · dummy↓ · pre lo"]) < float(rows[0]["dummy · dummy↓ · pre"]) < float(rows[0]["dummy · dummy↓ · pre hi"])


def test_rate_intervals_are_clipped_with_a_note(run):
    md = run("--format", "md")
    assert "| 5.00 (0–17.4) |" in md
    assert "clipped to the rate's range [0, 100]" in md


def test_latex_has_no_unicode_and_compiles_when_pdflatex_exists(run, tmp_path):
    tex = run("--format", "latex")
    assert all(ord(ch) < 128 for ch in tex), sorted({ch for ch in tex if ord(ch) >= 128})
    assert r"seedrate$\uparrow$ $\cdot$ pre" in tex and r"$\pm$" in tex and "(0--17.4)" in tex
    if shutil.which("pdflatex"):
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex + "\\end{document}\n")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=tmp_path, capture_output=True)
        assert proc.returncode == 0 and (tmp_path / "t.pdf").exists(), proc.stdout[-2000:]


@pytest.mark.parametrize("columns", [60, 100])
def test_rich_table_fits_the_terminal(run, columns):
    text = run("--format", "rich", "--stages", "all", env={"COLUMNS": str(columns)})
    assert "seedrate" in text
    assert max(len(line) for line in text.splitlines()) <= columns
