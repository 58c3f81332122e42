"""The Ray executor on this machine's CPU with a local Ray instance (2 worker slots)."""

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
