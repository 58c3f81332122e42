"""A ``--jobs 2`` grid killed (SIGKILL) and resumed gives, bit for bit, the records of an uninterrupted
run (issue 31): a cell computes with the threads the command gives it, never with a count that depends on
how many cells were left, which changed the order of float sums (CLIP and FID moved in the 7th digit)."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import needs_toy

GRID = ["run", "--concepts", "triangle", "--methods", "none,esd", "--attacks", "none,ft", "--metrics", "clip,asr",
        "--set", "esd.steps=3", "--set", "ft.curve=[0,2]", "--set", "ft.images_per_prompt=1",
        "--set", "sample.steps=4", "--set", "sample.images_per_prompt=2",
        "--set", "sample.benign_images_per_prompt=1", "--jobs", "2", "--quiet"]
EXE = [sys.executable, "-c", "from relearnbench.cli import main; main()"]
TIMING = ("sample_seconds",)  # wall time inside a record's info: the one thing a rerun may change


def finished(out) -> int:
    try:
        with sqlite3.connect(out / "results.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def records(out) -> dict:
    """(cell, stage, metric) -> (value, lo, hi, n, info without timings), floats as their exact hex."""
    def exact(x):
        return None if x is None else float(x).hex()

    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT model, concept, method, attack, seed, stage, metric, value, lo, hi, n, info "
                          "FROM records").fetchall()
    return {tuple(r[:7]): (exact(r[7]), exact(r[8]), exact(r[9]), r[10],
                           {k: v for k, v in json.loads(r[11] or "{}").items() if k not in TIMING}) for r in rows}


def run(out, kill_at: int | None = None) -> str:
    """Run the grid into ``out``; with ``kill_at``, SIGKILL the driver and its workers once that many cells
    are in the store. Returns the stderr of a run that finished, "" for a killed one."""
    proc = subprocess.Popen(EXE + GRID + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # its own process group: the workers die with it
    if kill_at is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        return err
    deadline = time.time() + 600
    while finished(out) < kill_at and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the grid ended before {kill_at} cells were in: {proc.communicate()[1]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return ""


# slow: four --jobs 2 grids (79 s quiet); the default run keeps the two paths it joins: a SIGKILLed grid resumed
# to the same table (test_grid.py::test_sigkill_mid_grid_then_resume_gives_identical_table), --jobs 2 against
# --jobs 1 (test_jobs.py)
@pytest.mark.slow
@needs_toy
def test_a_killed_and_resumed_jobs_run_gives_the_same_bits(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    err = run(whole)
    threads = re.search(r"2 worker processes, (\d+) threads each", err)
    assert "4 cells done" in err and threads, err
    run(cut, kill_at=1)
    first = finished(cut)
    run(cut, kill_at=3)  # leaves one cell: the case that ran in the driver, on every core
    second = finished(cut)
    err = run(cut)
    assert 1 <= first < second < 4 and f"{4 - second} cells done, 0 failed, {second} already finished" in err
    # one cell left still runs in a worker with the command's share of the cores
    assert f"1 worker processes, {threads[1]} threads each" in err
    a, b = records(whole), records(cut)
    assert set(a) == set(b) and any(k[6] == "clip" for k in a)
    assert {k: a[k] for k in a if a[k] != b[k]} == {}
