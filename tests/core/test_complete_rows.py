"""leaderboards/complete_rows.py: a copy of a run's database with only the methods whose cells are all done."""

import pathlib
import sqlite3
import subprocess
import sys

from relearnbench.store import SCHEMA

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "leaderboards" / "complete_rows.py"


def test_keeps_only_whole_methods_and_the_asked_attacks_and_seeds(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    db = sqlite3.connect(run / "results.sqlite")
    db.executescript(SCHEMA)
    cells = [(c, m, a, s, "done") for c in ("triangle", "striped") for m in ("esd", "ca") for a in ("none", "ft")
             for s in (0, 1)]
    cells.remove(("striped", "ca", "ft", 1, "done"))  # ca is part-way
    cells += [("triangle", "esd", "p4d", 0, "done"), ("triangle", "esd", "ft", 2, "done"),  # outside the copy
              ("triangle", "uce", "none", 0, "failed")]
    for c, m, a, s, status in cells:
        db.execute("INSERT INTO cells (model, concept, method, attack, seed, status) VALUES ('toy', ?, ?, ?, ?, ?)",
                   (c, m, a, s, status))
        db.execute("INSERT INTO records (model, concept, method, attack, seed, stage, metric, value) "
                   "VALUES ('toy', ?, ?, ?, ?, 'pre', 'asr', 1.0)", (c, m, a, s))
    db.commit()

    out = tmp_path / "copy"
    done = subprocess.run([sys.executable, SCRIPT, run, out, "--attacks", "none,ft", "--seeds", "0,1"],
                          capture_output=True, text=True, check=True)
    assert "1 methods whole (esd)" in done.stdout and "part-way: ca" in done.stdout

    copy = sqlite3.connect(out / "results.sqlite")
    for table in ("cells", "records"):
        rows = set(copy.execute(f"SELECT concept, method, attack, seed FROM {table}"))
        assert rows == {(c, "esd", a, s) for c in ("triangle", "striped") for a in ("none", "ft") for s in (0, 1)}
    assert db.execute("SELECT COUNT(*) FROM cells").fetchone() == (len(cells),)  # the run itself is untouched
