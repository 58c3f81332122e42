"""The full-size SD-1.4 architecture (random weights, built from its configs) end to end through the
harness on CPU: the same loader, sampler and metric path as real Stable Diffusion, at a tiny sample count."""

import sqlite3

import pytest


@pytest.mark.slow
def test_sd14_random_runs_the_base_cell_end_to_end(run_cli, tmp_path):
    out = tmp_path / "run"
    run_cli("run", "--model", "sd14-random", "--concepts", "triangle", "--methods", "none", "--attacks", "none",
            "--metrics", "asr", "--set", "sample.steps=2", "--set", "sample.images_per_prompt=1",
            "--out", out, "--quiet", check=True, timeout=1800)
    db = sqlite3.connect(out / "results.sqlite")
    (status,), = db.execute("SELECT status FROM cells WHERE model = 'sd14-random'").fetchall()
    rows = db.execute("SELECT stage, value, n FROM records WHERE metric = 'asr' ORDER BY stage").fetchall()
    assert status == "done"
    assert [r[0] for r in rows] == ["post", "post@0", "pre"]  # the none attack: its step 0 is the model as unlearned
    assert all(0 <= v <= 100 and n == 8 for _, v, n in rows)  # one image per forget prompt, judged
