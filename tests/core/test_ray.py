"""The Ray executor on this machine's CPU with a local Ray instance (2 worker slots)."""

import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

pytest.importorskip("ray")

ARGS = ["--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--seeds", "0,1", "--quiet"]


def long_table(run_cli, out):
    return run_cli("table", out, "--long", "--format", "csv", check=True).stdout


def test_ray_grid_matches_local_and_rerun_submits_nothing(tmp_path, run_cli):
    local, remote = tmp_path / "local", tmp_path / "ray"
    run_cli("run", *ARGS, "--out", local, check=True)
    proc = run_cli("run", *ARGS, "--executor", "ray", "--out", remote, check=True)
    assert "submitted 4 unlearning and 4 attack tasks" in proc.stderr
    assert long_table(run_cli, remote) == long_table(run_cli, local)
    again = run_cli("run", *ARGS, "--executor", "ray", "--out", remote, check=True)
    assert "submitted" not in again.stderr and "4 already finished" in again.stderr


@pytest.mark.slow  # 40 s on 2 cores; test_ray_grid_matches_local_and_rerun_submits_nothing stays fast
def test_killed_worker_is_retried_and_grid_completes(tmp_path, run_cli):
    out = tmp_path / "ray"
    args = [*ARGS, "--set", "dummy_attack.seconds=1.5", "--executor", "ray", "--out", str(out)]
    driver = subprocess.Popen([sys.executable, "-c", "from relearnbench.cli import main; main()", "run", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline and driver.poll() is None:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any("ray::_attack" in part for part in proc.info["cmdline"] or []):
                    proc.kill()  # SIGKILL a worker in the middle of an attack task
                    killed = proc.info["pid"]
                    break
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.2)
    stdout, stderr = driver.communicate(timeout=300)
    assert killed is not None, "no attack task was seen running"
    assert driver.returncode == 0, stderr
    assert "4 cells done, 0 failed" in stderr
    assert len(long_table(run_cli, out).splitlines()) == 1 + 4 * 5


BOOM_PLUGIN = (  # a --plugin method that raises, logging each attempt beside its file
    "import os, pathlib\n"
    "from relearnbench.api import Method\n"
    "from relearnbench.registry import METHODS\n"
    "@METHODS.register('boom')\n"
    "class Boom(Method):\n"
    "    '''raises in unlearn'''\n"
    "    config_name = 'boom'\n"
    "    def unlearn(self, model, concept, ctx):\n"
    "        with open(pathlib.Path(__file__).with_suffix('.log'), 'a') as f:\n"
    "            f.write(f'{os.getpid()}\\n')\n"
    "        raise RuntimeError('boom: a plugin that raises')\n")

TINY_GRID = ["--model", "tiny", "--concepts", "triangle", "--methods", "uce,boom", "--attacks", "ft",
             "--metrics", "gradients", "--quiet",
             *[a for s in ("sample.images_per_prompt=1", "sample.benign_images_per_prompt=1", "sample.steps=2",
                           "ft.curve=0,1", "ft.batch_size=2", "ft.images_per_prompt=1", "gradients.batches=1",
                           "gradients.batch_size=2", "gradients.timesteps=500") for a in ("--set", s)]]


@pytest.mark.slow  # 194 s with the 2 cores at load 14 (Ray's start, two worker pools); the dummy grid above stays fast
def test_ray_tiny_model_grid_matches_local_and_a_raising_plugin_fails_once(tmp_path, run_cli):
    """Real cells under Ray (an unlearned UNet and attacked weights pass between tasks as artifacts): uce x ft
    scored by gradients gives the local run's table to the bit. A method that raises is recorded failed, with its
    error, after one attempt (Ray retries dead workers, not exceptions)."""
    tables, logs = {}, {}
    for executor in ("local", "ray"):
        plugin = tmp_path / executor / "boom_method.py"
        plugin.parent.mkdir()
        plugin.write_text(BOOM_PLUGIN)
        out = tmp_path / executor / "run"
        # one thread per cell both ways (a Ray task of one CPU has one; locally cores // jobs), so the sums agree
        proc = run_cli("run", "--plugin", plugin, *TINY_GRID, "--executor", executor, "--jobs", "2", "--out", out)
        assert proc.returncode == 1 and "1 cells done, 1 failed" in proc.stderr, proc.stderr[-3000:]
        tables[executor] = run_cli("table", out, "--plugin", plugin, "--long", "--format", "csv", check=True).stdout
        with sqlite3.connect(out / "results.sqlite") as db:
            cells = db.execute("SELECT method, status, traceback FROM cells").fetchall()
        assert {(m, s) for m, s, _ in cells} == {("uce", "done"), ("boom", "failed")}
        assert "boom: a plugin that raises" in next(tb for m, _, tb in cells if m == "boom")
        logs[executor] = plugin.with_suffix(".log").read_text().split()
    assert tables["ray"] == tables["local"] and "gradients.norm" in tables["ray"], \
        [(a, b) for a, b in zip(tables["ray"].splitlines(), tables["local"].splitlines()) if a != b]
    assert len(logs["ray"]) == len(logs["local"]) == 1, logs  # one attempt
