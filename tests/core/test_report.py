from relearnbench.report import curve_plots


def test_report_page_has_the_leaderboard(tmp_path, run_cli):
    out = tmp_path / "run"
    run_cli("run", "--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--concepts", "triangle",
            "--out", out, check=True)
    page = run_cli("report", out, check=True).stdout.strip()
    html = open(page).read()
    assert "<table" in html and "dummy↓ · pre" in html and "relearnbench · run" in html


def test_curve_plot_one_line_per_method(tmp_path):
    import pandas as pd

    rows = [dict(model="toy", concept="triangle", method=m, attack="ft", seed=0, stage=f"post@{s}", metric="asr",
                 value=v) for m, vals in (("esd", (10, 40, 80)), ("esd+meta", (0, 10, 30)))
            for s, v in zip((0, 5, 10), vals)]
    plots = curve_plots(pd.DataFrame(rows), tmp_path)
    assert plots == [("triangle · ft", "curve-triangle-ft.png")]
    assert (tmp_path / "curve-triangle-ft.png").stat().st_size > 5000
