import pathlib
import shutil
import subprocess

import pytest

from relearnbench.report import curve_plots

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

SCREENSHOT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "screenshot.sh"


def dummy_report(tmp_path, run_cli) -> str:
    """The report page of a small dummy run; returns its path."""
    out = tmp_path / "run"
    run_cli("run", "--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--concepts", "triangle",
            "--out", out, check=True)
    return run_cli("report", out, check=True).stdout.strip()


def test_report_page_has_the_leaderboard(tmp_path, run_cli):
    html = open(dummy_report(tmp_path, run_cli)).read()
    assert "<table" in html and "dummy↓ · pre" in html and "relearnbench · run" in html


@pytest.mark.slow
@pytest.mark.skipif(not any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                    reason="no Chromium to take the screenshot")
def test_report_screenshot_in_headless_chromium_is_not_blank(tmp_path, run_cli):
    import numpy as np
    from PIL import Image

    page = dummy_report(tmp_path, run_cli)
    png = tmp_path / "report.png"
    shot = subprocess.run(["bash", str(SCREENSHOT), page, str(png)], capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0, shot.stderr
    gray = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert gray.shape == (2000, 1280)
    # a white page with a heading, a paragraph and the leaderboard: std ≈ 17, ≈ 0.5 % dark pixels;
    # a blank page has std 0 and none
    assert gray.std() > 5 and (gray < 128).mean() > 0.001, (gray.std(), (gray < 128).mean())


def test_curve_plot_one_line_per_method(tmp_path):
    import pandas as pd

    rows = [dict(model="toy", concept="triangle", method=m, attack="ft", seed=0, stage=f"post@{s}", metric="asr",
                 value=v) for m, vals in (("esd", (10, 40, 80)), ("esd+meta", (0, 10, 30)))
            for s, v in zip((0, 5, 10), vals)]
    plots = curve_plots(pd.DataFrame(rows), tmp_path)
    assert plots == [("triangle · ft", "curve-triangle-ft.png")]
    assert (tmp_path / "curve-triangle-ft.png").stat().st_size > 5000


def test_report_explains_metrics_lists_failed_cells_and_provenance(tmp_path, run_cli):
    out = tmp_path / "run"
    run_cli("run", "--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--concepts", "triangle",
            "--seeds", "0,1", "--set", "dummy_attack.seconds=0.0", "--out", out, check=True)
    run_cli("run", "--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--concepts", "striped",
            "--seeds", "0", "--set", "dummy.fail=true", "--out", tmp_path / "failed")
    page = open(run_cli("report", out, check=True).stdout.strip()).read()
    assert "<b>dummy</b> ↓ lower is better: deterministic fake score for harness tests (no torch)" in page
    assert "relearnbench run --methods dummy --attacks dummy --metrics dummy --concepts triangle" in page
    assert "<th>seeds</th><td><code>0, 1</code>" in page and "<th>versions</th><td><code>relearnbench " in page
    assert "<th>method dummy</th>" in page and "Failed cells" not in page
    failed = open(run_cli("report", tmp_path / "failed", check=True).stdout.strip()).read()
    assert "<h2>Failed cells (1)</h2>" in failed and "dummy method failed on purpose" in failed


def test_image_sheets_carry_prompts_and_judge_marks(tmp_path, run_cli):
    """The toy model at 10 DDIM steps draws triangles the judge flags: those images get a red frame in the
    sheet, and the page names each row's prompts and marks the flagged ones."""
    import json
    import sqlite3

    import numpy as np
    from PIL import Image

    out = tmp_path / "run"
    run_cli("run", "--concepts", "triangle", "--methods", "none", "--attacks", "none", "--metrics", "asr",
            "--set", "sample.images_per_prompt=1", "--set", "sample.steps=10", "--out", out, check=True)
    with sqlite3.connect(out / "results.sqlite") as db:
        info = json.loads(db.execute("SELECT info FROM records WHERE stage = 'pre'").fetchone()[0])
    flagged = info["sheet"]["flagged"]
    assert len(flagged) == len(info["sheet"]["forget"]) == 8 and any(flagged)
    sheet = np.asarray(Image.open(out / info["images"]).convert("RGB")).astype(int)
    for i, f in enumerate(flagged):  # make_grid: 1 px padding, 32 px images
        top = sheet[1, 1 + i * 33: 33 + i * 33]
        assert ((top == [255, 0, 0]).all(axis=1).all()) == f, i
    page = open(run_cli("report", out, check=True).stdout.strip()).read()
    assert f"<b>forget:</b> {info['sheet']['forget'][0]}" in page and "[flagged]" in page
