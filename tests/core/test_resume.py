"""Resuming through the CLI: the same command without --out resumes, Ctrl-C prints the command that
resumes, and a finished cell that lacks a newly requested metric gets it."""

import shlex
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

DUMMY = ["--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy"]


def test_same_command_without_out_resumes(tmp_path, run_cli):
    first = run_cli("run", *DUMMY, "--concepts", "triangle", cwd=tmp_path, check=True)
    again = run_cli("run", *DUMMY, "--concepts", "triangle", cwd=tmp_path, check=True)
    other = run_cli("run", *DUMMY, "--concepts", "striped", cwd=tmp_path, check=True)
    assert "1 cells done, 0 failed, 0 already finished" in first.stderr
    assert "0 cells done, 0 failed, 1 already finished" in again.stderr
    assert "1 cells done" in other.stderr  # another grid, another directory
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())  # beside .last-run, the pointer
    assert len(runs) == 2 and all(r.startswith("custom-") for r in runs)


def test_ctrl_c_prints_the_command_that_resumes(tmp_path):
    args = ["run", *DUMMY, "--seeds", "0,1,2,3", "--set", "dummy_attack.seconds=0.3", "--quiet"]
    exe = [sys.executable, "-c", "from relearnbench.cli import main; main()"]
    # as a terminal's foreground job: a shell starts background jobs (`pytest &`) with SIGINT ignored, and a child
    # inherits that, so the interrupt would be lost and the grid run to its end
    proc = subprocess.Popen(exe + args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:  # interrupt once a cell is in
        time.sleep(0.1)
        try:
            db_file = next((tmp_path / "runs").glob("*/results.sqlite"))
            with sqlite3.connect(db_file) as db:
                if db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] >= 1:
                    break
        except (StopIteration, sqlite3.Error):
            pass
    assert proc.poll() is None, "the grid finished before the interrupt"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("relearnbench run "))
    assert command.endswith(f"--out runs/{db_file.parent.name}"), err
    resumed = subprocess.run(exe + shlex.split(command)[1:], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    done = int(resumed.stderr.split(" cells done")[0].split()[-1])
    assert f"{8 - done} already finished" in resumed.stderr and 0 < done < 8


def test_a_metric_added_to_a_finished_run_is_computed(tmp_path, run_cli, constant_plugin):
    plugin = constant_plugin
    out = tmp_path / "run"
    base = ["run", "--methods", "dummy", "--attacks", "dummy", "--concepts", "triangle", "--out", out]
    run_cli(*base, "--metrics", "dummy", check=True)
    added = run_cli(*base, "--metrics", "dummy,constant", "--plugin", plugin, check=True)
    assert "1 cells done, 0 failed, 0 already finished" in added.stderr
    with sqlite3.connect(out / "results.sqlite") as db:
        metrics = {m for (m,) in db.execute("SELECT DISTINCT metric FROM records")}
    assert metrics == {"dummy", "constant"}
    again = run_cli(*base, "--metrics", "constant", "--plugin", plugin, check=True)
    assert "0 cells done, 0 failed, 1 already finished" in again.stderr  # a subset is already there
