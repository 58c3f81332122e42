"""Which run a table shows and what may share one of its rows: a bare ``table`` or ``report`` shows the run
that the last ``run`` in this folder made (not the run directory touched last); ``table A B`` keeps cells
of other settings apart and counts a seed that two runs hold once; overlap is one column everywhere, never
a renamed method; the CLI's small answers (``ls PATTERN``, ``show meta``, ``--dry-run``, old failures)."""

import csv
import io
import os
import pathlib

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


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def last_run(folder: pathlib.Path) -> pathlib.Path:
    return pathlib.Path((folder / "runs" / ".last-run").read_text().strip())


def test_bare_table_and_report_show_the_last_run_made_here_not_the_last_touched(tmp_path, monkeypatch, capsys):
    here, other = tmp_path / "here", tmp_path / "other"
    here.mkdir(), other.mkdir()
    monkeypatch.chdir(here)
    assert cli(capsys, "run", *DUMMY, "--concepts", "triangle", "--seeds", "0")[0] == 0
    older = last_run(here)
    assert cli(capsys, "run", *DUMMY, "--concepts", "triangle", "--seeds", "0,1")[0] == 0
    newer = last_run(here)
    assert older != newer and older.parent == newer.parent == (here / "runs").resolve()
    assert cli(capsys, "verify", older)[0] == 0
    os.utime(older, (os.stat(newer).st_mtime + 5,) * 2)  # as `table`/`verify`/`export` of it leave it: touched last
    code, out, err = cli(capsys, "table", "--format", "csv")
    assert code == 0 and err.splitlines()[0].startswith(f"table: runs/{newer.name}, the run the last `relearnbench "
                                                        "run` in this folder made")
    assert "relearnbench table RUN_DIR" in err.splitlines()[0]  # how to pick another
    assert rows(out)[0]["seeds"] == "2"  # the newer run's two seeds; the older has one
    code, out, err = cli(capsys, "report", "--out", tmp_path / "report")
    assert code == 0 and err.splitlines()[0].startswith(f"report: runs/{newer.name},")
    # a run written anywhere with --out is the last run of the folder `run` ran in
    elsewhere = tmp_path / "elsewhere" / "run"
    assert cli(capsys, "run", *DUMMY, "--concepts", "striped", "--out", elsewhere)[0] == 0
    code, out, err = cli(capsys, "table", "--format", "csv")
    assert code == 0 and err.startswith(f"table: {elsewhere}, ")
    # a folder where no run was made says so and how to name one; it never picks a run by its timestamps
    monkeypatch.chdir(other)
    code, out, err = cli(capsys, "table")
    assert code == 2 and "no run recorded in this folder" in err and "relearnbench table RUN_DIR" in err


def test_table_of_runs_with_other_settings_keeps_them_apart_and_counts_a_seed_once(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    grid = [*DUMMY, "--concepts", "triangle"]
    assert cli(capsys, "run", *grid, "--seeds", "0", "--out", a)[0] == 0
    assert cli(capsys, "run", *grid, "--seeds", "0,1", "--set", "dummy.seconds=0.001", "--out", b)[0] == 0
    assert cli(capsys, "run", *grid, "--seeds", "0,1", "--out", c)[0] == 0  # a's settings, a's seed 0 again
    alone = {d: rows(cli(capsys, "table", d, "--format", "csv")[1])[0] for d in (a, b, c)}
    pre = "dummy · dummy↓ · pre"
    code, out, err = cli(capsys, "table", a, b, "--format", "csv")
    apart = {r["settings"]: r for r in rows(out)}
    assert code == 0 and set(apart) == {"dummy.seconds=0.0", "dummy.seconds=0.001"}
    assert apart["dummy.seconds=0.0"]["seeds"] == "1" and apart["dummy.seconds=0.001"]["seeds"] == "2"
    assert apart["dummy.seconds=0.0"][pre] == alone[a][pre] and apart["dummy.seconds=0.001"][pre] == alone[b][pre]
    # the same settings: one row, seed 0 counted once (two seeds, not three), the figures of c alone
    (same,) = rows(cli(capsys, "table", a, c, "--format", "csv")[1])
    assert "settings" not in same and same["seeds"] == "2" and same[pre] == alone[c][pre]
    # the rich table labels the rows too, and --long says which settings each record ran with
    text = cli(capsys, "table", a, b)[1]
    assert "dummy.seconds=0.001" in text and "settings" in text
    long = rows(cli(capsys, "table", a, b, "--long", "--format", "csv")[1])
    assert {r["settings"] for r in long} == {"dummy.seconds=0.0", "dummy.seconds=0.001"}


@pytest.mark.slow
def test_table_a_b_over_two_esd_step_counts_never_averages_them(tmp_path, run_cli):
    grid = ["run", "--model", "tiny", "--methods", "esd", "--attacks", "none", "--metrics", "dummy", "--concepts",
            "triangle", "--quiet"]
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli(*grid, "--set", "esd.steps=2", "--seeds", "0", "--out", a, check=True)
    run_cli(*grid, "--set", "esd.steps=3", "--seeds", "0,1", "--out", b, check=True)
    table = rows(run_cli("table", a, b, "--format", "csv", check=True).stdout)
    assert [(r["method"], r["settings"], r["seeds"]) for r in table] == [("esd", "esd.steps=2", "1"),
                                                                        ("esd", "esd.steps=3", "2")]


def test_overlap_is_one_column_in_every_table_and_concepts_go_by_name(tmp_path, capsys):
    source = pathlib.Path(__file__).resolve().parents[2] / "relearnbench" / "concepts" / "triangle.toml"
    tri = tmp_path / "tri.toml"  # triangle's roles, allowed to share prompts: not a held-out result
    tri.write_text(source.read_text().replace('name = "triangle"', 'name = "triangle"\nallow_overlap = true', 1))
    run = tmp_path / "run"
    code, printed, _ = cli(capsys, "run", *DUMMY, "--concepts", f"{tri},striped", "--out", run)
    assert code == 0
    wide = rows(cli(capsys, "table", run, "--format", "csv")[1])
    assert {(r["concept"], r["method"], r["overlap"]) for r in wide} == {("triangle", "dummy", "yes"),
                                                                         ("striped", "dummy", "no")}
    long = rows(cli(capsys, "table", run, "--long", "--format", "csv")[1])
    assert {r["method"] for r in long} == {"dummy"}  # filtering by method still works
    assert {(r["concept"], r["overlap"]) for r in long} == {(str(tri), "yes"), ("striped", "no")}  # the cell keys
    for text in (printed, cli(capsys, "table", run)[1]):  # the table `run` prints and `table`'s agree
        assert "overlap" in text and "[overlap]" not in text and "tri.toml" not in text
    page = pathlib.Path(cli(capsys, "report", run, "--out", tmp_path / "report")[1].strip()).read_text()
    assert "<th>overlap</th>" in page and "[overlap]" not in page


def test_ls_searches_every_kind_and_hides_the_test_fakes(run_cli):
    found = run_cli("ls", "esd", env=NO_FAKES, check=True).stdout
    assert found.startswith("methods:\n  esd ") and "esd-u-1" in found and "attacks:" not in found
    assert "+meta" in run_cli("ls", "meta", env=NO_FAKES, check=True).stdout
    listing = run_cli("ls", env=NO_FAKES, check=True).stdout
    assert "dummy" not in listing and "esd" in listing
    refused = run_cli("run", "--methods", "dumy", "--dry-run", env=NO_FAKES)
    assert refused.returncode == 2 and "unknown method 'dumy'" in refused.stderr and "dummy" not in refused.stderr
    nothing = run_cli("ls", "zzz", env=NO_FAKES)
    assert nothing.returncode == 2 and "no plugin, concept or grid matches '*zzz*'" in nothing.stderr


def test_show_takes_a_wrappers_name(capsys):
    code, out, _ = cli(capsys, "show", "meta")
    assert code == 0 and out.startswith("+meta (method wrapper): ")
    assert "--set meta.KEY=VALUE" in out and "\n  preset " in out and "around esd" in out


def test_dry_run_names_the_run_directory_and_whether_it_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    grid = [*DUMMY, "--concepts", "triangle", "--seeds", "0,1", "--out", out]
    code, text, _ = cli(capsys, "run", *grid, "--dry-run")
    assert code == 0 and text.splitlines()[-1] == f"run directory: {out} (new: every cell would run)"
    assert not out.exists()
    assert cli(capsys, "run", *grid[:-4], "--seeds", "0", "--out", out)[0] == 0
    text = cli(capsys, "run", *grid, "--dry-run")[1]
    assert text.splitlines()[-1] == f"run directory: {out} (exists: would resume; 1 of 2 cells finished; 1 to run)"
    text = cli(capsys, "run", *grid, "--set", "dummy.seconds=0.5", "--dry-run")[1]
    assert "the run would refuse" in text.splitlines()[-1] and "seconds: 0.0 -> 0.5" in text.splitlines()[-1]


def test_a_rerun_says_a_failure_is_an_earlier_runs(tmp_path, capsys):
    out = tmp_path / "run"
    grid = ["run", *DUMMY, "--concepts", "triangle", "--seeds", "0", "--out", out, "--set", "dummy.fail=true"]
    code, _, err = cli(capsys, *grid)
    assert code == 1 and "failed: toy/triangle/dummy/dummy/0: RuntimeError" in err and "earlier" not in err
    code, _, err = cli(capsys, *grid)
    assert code == 1 and ("failed (an earlier run's failure, not rerun: --retry-failed reruns it): "
                          "toy/triangle/dummy/dummy/0: RuntimeError") in err
    assert "0 cells failed, 1 failed in an earlier run and were not rerun; rerun with --retry-failed" in err


def test_unknown_plugin_name_on_rerun_says_which_plugin_to_pass(tmp_path, constant_plugin, run_cli):
    out = tmp_path / "run"
    grid = ["run", "--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy,constant", "--concepts",
            "triangle", "--quiet", "--out", out]
    run_cli(*grid, "--plugin", constant_plugin, check=True)
    proc = run_cli(*grid)
    assert proc.returncode == 2 and "unknown metric 'constant'" in proc.stderr
    assert f"{out} ran metric 'constant' with --plugin {constant_plugin}: pass it again" in proc.stderr


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


@pytest.mark.slow
def test_verify_names_the_cell_of_a_damaged_report_image_and_repair_exits_0(tmp_path, run_cli):
    run = tmp_path / "run"
    run_cli("run", "--concepts", "triangle", "--methods", "none", "--attacks", "none", "--metrics", "asr", "--set",
            "sample.images_per_prompt=1", "--quiet", "--out", run, check=True)
    (image,) = (run / "artifacts" / "images").glob("*.png")
    data = bytearray(image.read_bytes())
    data[100] ^= 0xFF
    image.write_bytes(data)
    name = f"artifacts/images/{image.name}"
    found = run_cli("verify", run)
    assert found.returncode == 1
    assert f"cell toy/triangle/none/none/0: its report image {name} is damaged" in found.stdout
    repaired = run_cli("verify", run, "--repair")
    assert repaired.returncode == 0 and repaired.stdout.splitlines()[-1] == f"2 problems in {run}, all repaired"
    assert "a sum whose file is gone" not in repaired.stdout  # the sum moved with its image: no problem of its own
    assert run_cli("verify", run).stdout == "ok\n"
