"""Finding one's way through the CLI: `show PLUGIN`, `table --failed/--traceback`, examples and defaults
in every --help, and a `--stages` typo that says which stages exist."""

import pytest

from relearnbench.cli import cli, main
from relearnbench.methods.esd import ESD

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

DUMMY = ["--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--concepts", "triangle"]


def _commands(group=cli, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("command", list(_commands()), ids=" ".join)
def test_every_help_has_an_example_and_its_defaults(command, capsys):
    try:
        main([*command, "--help"])
    except SystemExit as e:
        assert e.code == 0
    text = " ".join(capsys.readouterr().out.split())  # wrapping aside
    assert "Example" in text, f"relearnbench {' '.join(command)} --help has no example"
    if command == ("table",):
        assert "[default: rich]" in text and "[default: pre,post]" in text
    if command == ("run",):
        assert "(default triangle,striped)" in text and "(default float32" in text


def test_show_lists_keys_types_defaults_presets_and_comments(run_cli):
    text = run_cli("show", "esd-x-3", check=True).stdout
    lines = text.splitlines()
    assert lines[0] == "esd-x-3 (method): ESD-x with negative guidance 3"
    assert lines[1] == f"--set esd.KEY=VALUE  (version {ESD.version})"
    # a column per model scale: sdxl's since esd.toml's [sdxl] changes values; sd21 runs sd14's (said below)
    assert lines[2].split() == ["key", "type", "default", "toy", "sd14", "sdxl", "comment"]
    rows = {line.split()[0]: line.split() for line in lines[3:-1]}
    assert rows["train"][:6] == ["train", "'u'|'x'|'f'", "'u'", "'x'", "'x'", "'x'"]  # the registry's preset everywhere
    assert rows["steps"][:6] == ["steps", "int", "1000", "100", "1000", "200"]  # [toy] 100, [sdxl] 200 (esd_sdxl.py)
    assert " ".join(rows["lr"][6:]) == "Adam learning rate"
    assert lines[-1].split()[:4] == ["sd21", "models:", "the", "sd14"]
    wrapped = run_cli("show", "uce+meta", check=True).stdout
    assert "--set uce.KEY=VALUE  (the base method uce)" in wrapped and "--set meta.KEY=VALUE  (the +meta wrapper)" in wrapped
    meta_steps = next(line.split() for line in wrapped.splitlines() if line.split()[:1] == ["steps"])
    assert meta_steps[2:5] == ["0", "60", "100"]  # meta.toml's [toy.uce] and [sd14.uce]
    sample = run_cli("show", "sample", check=True).stdout
    assert "--set sample.KEY=VALUE" in sample
    from relearnbench.show import show  # every core namespace a --set takes, unlearn.* too

    assert "--set unlearn.KEY=VALUE" in show("unlearn") and "\n  checkpointing    bool " in show("unlearn")
    typo = run_cli("show", "esdd")
    assert typo.returncode == 2 and "no plugin named 'esdd'" in typo.stderr


def test_failed_cells_and_their_tracebacks(tmp_path, run_cli):
    out = tmp_path / "run"
    proc = run_cli("run", *DUMMY, "--set", "dummy.fail=true", "--out", out, "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "dummy method failed on purpose" in proc.stderr  # --debug shows it
    assert f"relearnbench table --failed --traceback {out}" in proc.stderr
    failed = run_cli("table", out, "--failed", check=True).stdout
    assert failed.strip() == ("toy/triangle/dummy/dummy/0: RuntimeError: dummy method failed on purpose "
                              "(dummy.fail=true)")
    tb = run_cli("table", out, "--failed", "--traceback", check=True).stdout
    assert "    Traceback (most recent call last):" in tb and 'methods/dummy.py", line' in tb


def test_an_unknown_stage_names_the_stages_there_are(tmp_path, run_cli):
    out = tmp_path / "run"
    run_cli("run", *DUMMY, "--out", out, check=True)
    proc = run_cli("table", out, "--stages", "pre,foo")
    assert proc.returncode == 2
    assert "--stages foo: no such stage" in proc.stderr and "pre, post@0, post@1, post@2, post" in proc.stderr
