"""``relearnbench verify RUN_DIR [--repair]``: is a result directory whole?

* ``results.sqlite`` passes SQLite's integrity check;
* every artifact matches the sha256 written beside it, and no write was left half done
  (a temporary file, a sum whose file is gone);
* every finished cell's artifacts (``cell_artifacts``) are there with the hash the cell used.

``--repair`` moves bad and stray files to ``artifacts/corrupt/`` and marks the cells that used them
``recompute``: the next ``relearnbench run`` of the grid redoes those cells (their artifacts first)
and replaces their records in one transaction. No record is deleted here. Imports no torch.
"""

from __future__ import annotations

import pathlib
import sqlite3
from dataclasses import dataclass, field

from relearnbench.artifacts import quarantine, recorded_sha256, sha256_file, write_sum
from relearnbench.errors import UserError
from relearnbench.store import CELL_KEYS, DB_NAME


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # one line each: what was found
    repairs: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)  # problems a --repair cannot fix (all of them without it)


def verify(run_dir: str | pathlib.Path, repair: bool = False) -> Report:
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / DB_NAME).exists():
        raise UserError(f"no results in {run_dir}: expected {run_dir / DB_NAME}")
    report = Report()
    root = run_dir / "artifacts"
    bad = _check_files(root, report, repair)
    try:
        db = sqlite3.connect(run_dir / DB_NAME, timeout=60, isolation_level=None)
        rows = db.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            report.problems += [f"{DB_NAME}: {r[0]}" for r in rows]
            report.unrepaired += report.problems[-len(rows):]
            return report  # cells read from a damaged database would only mislead
        _check_cells(db, root, bad, report, repair)
        db.close()
    except sqlite3.DatabaseError as e:
        report.problems.append(f"{DB_NAME}: not a readable database ({e}); move it away and rerun the grid "
                               "into it: the artifacts are reused")
        report.unrepaired.append(report.problems[-1])
    if not repair:
        report.unrepaired = list(report.problems)
    return report


def _check_files(root: pathlib.Path, report: Report, repair: bool) -> set[str]:
    """Every file under artifacts/ but corrupt/; returns the artifacts (relative paths) found damaged."""
    bad = set()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "corrupt")
    for path in files:
        if not path.exists():  # a sum this repair moved with its damaged file: not a problem of its own
            continue
        name = path.relative_to(root).as_posix()
        if path.name.endswith(".tmp"):
            _bad_file(report, root, path, f"artifacts/{name}: left over from an interrupted write", repair)
        elif path.name.endswith(".sha256"):
            if not path.with_name(path.name[:-len(".sha256")]).exists():
                _bad_file(report, root, path, f"artifacts/{name}: a sum whose file is gone", repair)
        else:
            expected, sha = recorded_sha256(path), sha256_file(path)
            if expected is None:
                report.problems.append(f"artifacts/{name}: no sha256 recorded (written by an older relearnbench)")
                if repair:
                    write_sum(path, sha)
                    report.repairs.append(f"recorded the sha256 of artifacts/{name}")
            elif sha != expected:
                bad.add(name)
                _bad_file(report, root, path, f"artifacts/{name}: damaged (sha256 {sha[:12]}, written as "
                          f"{expected[:12]})", repair)
    return bad


def _bad_file(report: Report, root: pathlib.Path, path: pathlib.Path, problem: str, repair: bool):
    report.problems.append(problem)
    if repair:
        dest = quarantine(root, path)
        if dest is not None:
            report.repairs.append(f"moved {path} to {dest}")


def _check_cells(db: sqlite3.Connection, root: pathlib.Path, bad: set[str], report: Report, repair: bool):
    keys = ",".join(CELL_KEYS)
    used: dict[tuple, list] = {}
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cell_artifacts'").fetchone():  # absent before sums were
        for *cell, path, sha in db.execute(f"SELECT {keys}, path, sha256 FROM cell_artifacts"):
            used.setdefault(tuple(cell), []).append((path, sha))
    stale = []
    for *cell, status in db.execute(f"SELECT {keys}, status FROM cells WHERE status != 'failed'").fetchall():
        cell, name = tuple(cell), "/".join(map(str, cell))
        if status == "recompute":
            report.problems.append(f"cell {name}: marked for recompute; run the grid again into this directory")
            report.unrepaired.append(report.problems[-1])
            continue
        for path, sha in used.get(cell, []):
            file = root / path
            why = ("damaged" if path in bad else "missing" if not file.exists()
                   else "" if recorded_sha256(file) == sha else "recomputed since, with another sha256")
            if why:
                report.problems.append(f"cell {name}: its artifact artifacts/{path} is {why}")
                stale.append(cell)
                break
    _check_sheets(db, bad, report, repair)
    if repair and stale:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(f"UPDATE cells SET status = 'recompute' WHERE {' AND '.join(f'{k} = ?' for k in CELL_KEYS)}",
                       stale)
        db.execute("COMMIT")
        report.repairs.append(f"marked {len(stale)} cells for recompute; the next `relearnbench run` of this grid "
                              "into this directory completes them")


def _check_sheets(db: sqlite3.Connection, bad: set[str], report: Report, repair: bool):
    """Name each cell whose records show a damaged report image (no cell's input: its numbers stand; the report
    leaves a moved image out)."""
    import json

    shown: dict[str, set] = {}
    for *cell, info in db.execute(f"SELECT {','.join(CELL_KEYS)}, info FROM records WHERE info LIKE '%images%'"):
        image = (json.loads(info or "{}").get("images") or "").removeprefix("artifacts/")  # as _check_files names it
        if image in bad:
            shown.setdefault(image, set()).add("/".join(map(str, cell)))
    for image, cells in sorted(shown.items()):
        for name in sorted(cells):
            moved = "moved away" if repair else "--repair moves it away"
            report.problems.append(f"cell {name}: its report image artifacts/{image} is damaged ({moved}, and the "
                                   "report leaves it out; the cell's numbers do not depend on it)")
