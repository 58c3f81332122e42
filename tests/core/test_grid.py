"""The grid end to end through the CLI, with the torch-free dummy plugins: records, resume, failures."""

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from relearnbench.config import catalogue
from relearnbench.spec import GRID_DIR

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

DUMMY = ["--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy"]


def count_records(run_dir):
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM records").fetchone()[0]


def test_run_table_and_rerun_adds_nothing(tmp_path, run_cli):
    out = tmp_path / "run"
    run_cli("run", *DUMMY, "--seeds", "0,1", "--out", out, check=True)
    n = count_records(out)
    # 2 concepts x 2 seeds, each: pre + post@0,1,2 + post
    assert n == 2 * 2 * 5
    again = run_cli("run", *DUMMY, "--seeds", "0,1", "--out", out, check=True)  # how fast: benchmarks/harness.py
    assert count_records(out) == n
    assert "0 cells done, 0 failed, 4 already finished" in again.stderr
    md = run_cli("table", out, "--format", "md", check=True).stdout
    assert "**attack: dummy" in md
    assert "| concept | method | seeds | dummy↓ · pre | dummy↓ · post |" in md.splitlines()
    assert all(row.split(" | ")[2] == "2" for row in md.splitlines() if row.startswith("| triangle"))
    assert " ± " in md  # two seeds: a t interval
    long = run_cli("table", out, "--long", "--format", "csv", check=True).stdout.splitlines()
    assert long[0] == "model,concept,method,attack,seed,stage,metric,value,lo,hi,n"
    stages = [row.split(",")[5] for row in long[1:6]]
    assert stages == ["pre", "post@0", "post@1", "post@2", "post"]


def test_stage_zero_equals_pre_and_post_equals_last(tmp_path, run_cli):
    out = tmp_path / "run"
    run_cli("run", *DUMMY, "--concepts", "triangle", "--out", out, check=True)
    rows = [r.split(",") for r in run_cli("table", out, "--long", "--format", "csv").stdout.splitlines()[1:]]
    value = {r[5]: r[7] for r in rows}
    assert value["pre"] == value["post@0"] and value["post"] == value["post@2"]


def test_failed_cell_is_recorded_grid_goes_on_and_retry(tmp_path, run_cli):
    out = tmp_path / "run"
    args = ["run", *DUMMY, "--concepts", "triangle", "--seeds", "0,1", "--out", out]
    proc = run_cli(*args, "--set", "dummy_attack.fail_seeds=[0]")
    assert proc.returncode == 1
    assert "failed: toy/triangle/dummy/dummy/0: RuntimeError: dummy attack failed on purpose" in proc.stderr
    assert "Traceback" not in proc.stderr
    with sqlite3.connect(out / "results.sqlite") as db:
        cells = dict(db.execute("SELECT seed, status FROM cells").fetchall())
        tb = db.execute("SELECT traceback FROM cells WHERE status='failed'").fetchone()[0]
    assert cells == {0: "failed", 1: "done"}
    assert "Traceback" in tb and "dummy attack failed on purpose" in tb
    # without --retry-failed the failed cell is left alone (and still fails the exit code)
    again = run_cli(*args, "--set", "dummy_attack.fail_seeds=[0]")
    assert again.returncode == 1 and "0 cells done, 0 failed, 2 already finished" in again.stderr
    # the fix changes a setting of the finished cell too: say so, and go on only when asked
    refused = run_cli(*args, "--retry-failed")
    assert refused.returncode == 2 and "dummy/dummy/1 finished with other settings" in refused.stderr
    fixed = run_cli(*args, "--retry-failed", "--keep-changed")
    assert fixed.returncode == 0, fixed.stderr
    assert "1 cells done, 0 failed, 1 already finished" in fixed.stderr


def test_resume_with_changed_settings_is_refused(tmp_path, run_cli):
    out = tmp_path / "run"
    args = ["run", *DUMMY, "--concepts", "triangle", "--out", out]
    run_cli(*args, check=True)
    n = count_records(out)
    proc = run_cli(*args, "--set", "dummy.seconds=0.01")
    assert proc.returncode == 2
    assert ("holds cell toy/triangle/dummy/dummy/0 finished with other settings (method.config.seconds: 0.0 -> 0.01)"
            in proc.stderr)
    assert "new --out directory" in proc.stderr and "Traceback" not in proc.stderr
    assert count_records(out) == n
    # naming the setting at its default is no change; --keep-changed resumes past a change
    run_cli(*args, "--set", "dummy.seconds=0.0", check=True)
    kept = run_cli(*args, "--set", "dummy.seconds=0.01", "--keep-changed", check=True)
    assert "0 cells done, 0 failed, 1 already finished" in kept.stderr


def test_failing_method_fails_all_its_cells(tmp_path, run_cli):
    out = tmp_path / "run"
    proc = run_cli("run", *DUMMY, "--seeds", "0,1", "--concepts", "triangle", "--set", "dummy.fail=true",
                   "--out", out)
    assert proc.returncode == 1 and "2 failed" in proc.stderr


def test_sigkill_mid_grid_then_resume_gives_identical_table(tmp_path, run_cli):
    args = ["run", *DUMMY, "--seeds", "0,1,2,3", "--set", "dummy_attack.seconds=0.15", "--quiet"]
    ref = tmp_path / "ref"
    run_cli(*args, "--out", ref, check=True)
    killed = tmp_path / "killed"
    exe = [sys.executable, "-c", "from relearnbench.cli import main; main()"]
    proc = subprocess.Popen(exe + [*args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once some, but not all, cells are in
        time.sleep(0.1)
        try:
            with sqlite3.connect(killed / "results.sqlite") as db:
                if db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] >= 2:
                    break
        except sqlite3.Error:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(killed / "results.sqlite") as db:
        partial = db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert 2 <= partial < 8
    resumed = run_cli(*args, "--out", killed, check=True)
    assert f"{8 - partial} cells done, 0 failed, {partial} already finished" in resumed.stderr
    table = lambda d: run_cli("table", d, "--long", "--format", "csv", check=True).stdout  # noqa: E731
    assert table(killed) == table(ref)


@pytest.mark.parametrize("args,message", [
    (["--methods", "esdd"], "unknown method 'esdd'"),
    (["--methods", "dummy", "--attacks", "fft"], "unknown attack 'fft'"),
    (["--methods", "dummy", "--metrics", "asrr"], "unknown metric 'asrr'"),
    (["--methods", "dummy", "--model", "sd99"], "unknown model 'sd99'"),
    (["--methods", "dummy", "--concepts", "triangel"], "unknown concept 'triangel'"),
    (["--methods", "dummy", "--set", "dummy.lr"], "malformed --set"),
    (["--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--set", "dummy.lr=1"],
     "unknown config key dummy.lr"),
    (["--methods", "dummy", "--attacks", "dummy", "--metrics", "dummy", "--set", "dummy.seconds=soon"],
     "dummy.seconds: expected float"),
    (["--methods", "dummy", "--seeds", "a,b"], "seeds: expected integers"),
])
def test_bad_input_one_line_no_traceback(tmp_path, run_cli, args, message):
    proc = run_cli("run", *args, "--out", tmp_path / "r")
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # validated before any work or file


def test_debug_shows_traceback(tmp_path, run_cli):
    proc = run_cli("run", "--methods", "esdd", "--debug", "--out", tmp_path / "r")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_malformed_grid_toml(tmp_path, run_cli):
    grid = tmp_path / "g.toml"
    grid.write_text("methods = [dummy\n")
    proc = run_cli("run", grid, "--out", tmp_path / "r")
    assert proc.returncode == 2 and "malformed TOML" in proc.stderr and "Traceback" not in proc.stderr
    grid.write_text('methods = ["dummy"]\nattack = ["dummy"]\n')
    proc = run_cli("run", grid, "--out", tmp_path / "r")
    assert "grid key 'attack' is unknown" in proc.stderr and "did you mean attacks" in proc.stderr


def test_grid_file_with_flags_overriding(tmp_path, run_cli):
    grid = tmp_path / "g.toml"
    grid.write_text('methods = ["dummy"]\nattacks = ["none"]\nmetrics = ["dummy"]\nconcepts = ["triangle"]\n'
                    'seeds = [0, 1]\n[set.dummy_metric]\n')
    out = tmp_path / "r"
    run_cli("run", grid, "--attacks", "dummy", "--out", out, check=True)
    rows = run_cli("table", out, "--long", "--format", "csv").stdout.splitlines()[1:]
    assert {r.split(",")[3] for r in rows} == {"dummy"} and {r.split(",")[4] for r in rows} == {"0", "1"}


def test_missing_and_corrupt_run_directories(tmp_path, run_cli):
    proc = run_cli("table", tmp_path / "nope")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_cli("table", tmp_path / "empty")
    assert proc.returncode == 2 and "no results in" in proc.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.sqlite").write_bytes(b"this is not a database" * 100)
    proc = run_cli("table", bad)
    assert proc.returncode == 2 and "not a readable results database" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt,marker", [("csv", "method,dummy"), ("latex", "\\begin{tabular}"),
                                        ("html", "<table"), ("rich", "┃"), ("md", "| --- |")])
def test_table_formats(tmp_path, run_cli, fmt, marker):
    out = tmp_path / "r"
    run_cli("run", *DUMMY, "--concepts", "triangle", "--out", out, check=True)
    assert marker in run_cli("table", out, "--format", fmt, check=True).stdout


def test_table_defaults_to_newest_run(tmp_path, run_cli):
    run_cli("run", *DUMMY, "--concepts", "triangle", "--quiet", cwd=tmp_path, check=True)
    proc = run_cli("table", "--format", "csv", cwd=tmp_path, check=True)
    assert proc.stdout.startswith("method,")


def test_table_metrics_filter(tmp_path, run_cli):
    out = tmp_path / "run"
    run_cli("run", *DUMMY, "--concepts", "triangle", "--out", out, check=True)
    md = run_cli("table", out, "--format", "md", "--stages", "all", "--metrics", "dummy", check=True).stdout
    assert "dummy↓ · post@1" in md
    proc = run_cli("table", out, "--metrics", "asr")
    assert proc.returncode == 2 and "--metrics asr: no such metric" in proc.stderr


def test_setting_changed_names_the_first_difference_and_ignores_one_sided_keys():
    from relearnbench.runner import setting_changed

    old = {"method": {"version": "1", "config": {"lr": 1e-4, "steps": 5}}, "metrics": {"asr": {"v": 1}},
           "device": "cpu"}
    assert setting_changed(old, old) == ""
    new = {**old, "method": {"version": "1", "config": {"lr": 2e-4, "steps": 5, "added": "all"}}}
    assert setting_changed(old, new) == "method.config.lr: 0.0001 -> 0.0002"
    # a field added since, a metric only one run computes, and the device are not settings that changed
    grown = {"method": {"version": "1", "config": {"lr": 1e-4, "steps": 5, "added": "all"}},
             "metrics": {"asr": {"v": 1}, "fid": {"v": 2}}, "device": "cuda"}
    assert setting_changed(old, grown) == ""
    assert setting_changed(old, {**old, "metrics": {"asr": {"v": 2}}}) == "metrics.asr.v: 1 -> 2"
    toy_judge = {**old, "judge": {"judge": "toy"}}
    assert setting_changed({**old, "judge": None}, toy_judge) == "judge: None -> {'judge': 'toy'}"


@pytest.mark.parametrize("name", sorted(catalogue(GRID_DIR)))
def test_shipped_grid_plans(name):
    """Every shipped grid names plugins and concepts that exist and presets that resolve. paper-sd14 also needs
    the nudity prompt CSV, which is not shipped: planning it asks for exactly that."""
    from relearnbench.errors import UserError
    from relearnbench.runner import plan
    from relearnbench.spec import build_spec, load_grid

    assert {"quick", "full", "methods", "paper-sd14"} <= set(catalogue(GRID_DIR))  # the docs name these four
    spec = build_spec(load_grid(name), {}, {})
    if name == "paper-sd14":
        with pytest.raises(UserError, match="concept nudity has no forget prompts"):
            plan(spec)
        return
    p = plan(spec)
    assert {(kind, n) for kind, n, _ in p.plugins} >= {("methods", m) for m in spec.methods}


# started in every worker process through PYTHONPATH: logs each results store it opens and each job it runs
WORKER_SPY = """
import os
if os.environ.get("RELEARNBENCH_TEST_SPY"):
    import relearnbench.executors as executors
    import relearnbench.store as store

    def log(what):
        with open(os.environ["RELEARNBENCH_TEST_SPY"], "a") as f:
            f.write(f"{what} {os.getpid()}\\n")

    init = store.Store.__init__
    def spied_init(self, *a, **k):
        log("store")
        init(self, *a, **k)
    store.Store.__init__ = spied_init
    for name in ("_unlearn", "_attack"):
        def job(*a, _real=getattr(executors, name), **k):
            log("job")
            return _real(*a, **k)
        setattr(executors, name, job)
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_only_the_driver_opens_the_store(jobs, tmp_path, monkeypatch):
    """The jobs get the artifacts folder: a grid opens the results store once, in the driver. With --jobs 2 the
    jobs run in two worker processes, each of which logs (WORKER_SPY) the stores it opens and the jobs it runs."""
    import os

    from relearnbench import store
    from relearnbench.launch import execute
    from relearnbench.spec import build_spec

    (tmp_path / "spy").mkdir()
    (tmp_path / "spy" / "sitecustomize.py").write_text(WORKER_SPY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "spy"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("RELEARNBENCH_TEST_SPY", str(tmp_path / "spy.log"))
    opened, init = [], store.Store.__init__
    monkeypatch.setattr(store.Store, "__init__", lambda self, *a, **k: opened.append(a) or init(self, *a, **k))
    flags = {"methods": "dummy", "attacks": "dummy", "metrics": "dummy", "seeds": "0,1", "jobs": jobs}
    outcome = execute(build_spec(None, flags, {}), tmp_path / "run", quiet=True)
    assert outcome.done == 4 and len(opened) == 1
    log = [line.split() for line in (tmp_path / "spy.log").read_text().splitlines()] if jobs > 1 else []
    assert not [pid for what, pid in log if what == "store"], "a worker opened the results store"
    if jobs > 1:  # an unlearning and an attack job per cell (dummy x dummy: 2 concepts x 2 seeds), none in the driver
        workers = {pid for what, pid in log if what == "job"}
        assert len(log) == 2 * outcome.done and workers and str(os.getpid()) not in workers, log


@pytest.mark.parametrize("change", [{"steps": 15}, {"guidance": 3.0}])  # neither the toy default
def test_the_unlearned_model_key_covers_the_sampler_of_the_generated_training_images(change):
    """A method's training images from the original model (``train_data = "generate"``, the default) are sampled
    at ``generate.steps`` and ``generate.guidance``: a run with either changed must unlearn again, not reuse a model
    trained on other images; the evaluation's sampler (``sample.*``) is not the training data's and keeps the key."""
    from relearnbench.runner import plan, unlearn_key
    from relearnbench.spec import build_spec

    def key(sets):
        p = plan(build_spec(None, {"methods": "dummy", "attacks": "dummy", "metrics": "dummy"}, sets))
        return unlearn_key(p, "toy", "triangle", "dummy", 0)

    assert key({}) == key({"generate": {"batch_size": 7}})  # how many images a sampler call holds is not data
    assert key({}) != key({"generate": change})
    assert key({}) == key({"sample": change})
