"""Which run a table shows and what may share one of its rows: a bare ``table`` or ``report`` shows the run
that the last ``run`` in this folder made (not the run directory touched last); ``table A B`` keeps cells
of other settings apart and counts a seed that two runs hold once; overlap is one column everywhere, never
a renamed method; the CLI's small answers (``ls PATTERN``, ``show meta``, ``--dry-run``, old failures)."""

import pytest

from relearnbench.cli import main

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

DUMMY = ["--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--quiet", "--jobs", "1"]
NO_FAKES = {"RELEARNBENCH_FAKES": ""}  # a user's process: the test fakes are not registered


def cli(capsys, *args) -> tuple[int, str, str]:
    """``relearnbench ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_takes_a_wrappers_name(capsys):
    code, out, _ = cli(capsys, "show", "meta")
    assert code == 0 and out.startswith("+meta (method wrapper): ")
    assert "--set meta.KEY=VALUE" in out and "\n  preset " in out and "around esd" in out


def test_model_card_of_a_pre_stage_names_no_attack_cell_and_has_no_nan():
    import yaml

    from relearnbench.export import model_card

    cell = {"model": "toy", "concept": "triangle", "method": "esd", "attack": None, "seed": 0}
    records = [{"metric": "fid", "value": 12.5, "lo": float("nan"), "hi": float("nan"), "n": 64}]  # FID: no interval
    text = model_card(cell, "pre", {"method": {"config": {"lr": 1e-5}}}, records, {"run": "runs/r", "cell": cell})
    header = text.split("---")[1]
    assert ".nan" not in header.lower()  # YAML's NaN
    (metric,) = yaml.safe_load(header)["model-index"][0]["results"][0]["metrics"]
    assert metric["value"] == 12.5 and metric["args"] == {"n": 64}  # no interval: none written
    assert "the unlearned model of `toy/triangle/esd`, seed 0" in text and "None" not in text.split("---", 2)[2]
