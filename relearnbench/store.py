"""The results store of one run: ``results.sqlite`` (WAL; one transaction per cell) beside the run's
``artifacts/`` folder (``relearnbench.artifacts``: the cached files, their checksums and quarantine). A
finished cell's row lists the artifacts it used, by hash (``cell_artifacts``), which ``relearnbench verify``
checks. Only the driver writes the store."""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from relearnbench.artifacts import Artifacts
from relearnbench.errors import UserError

DB_NAME = "results.sqlite"
CELL_KEYS = ("model", "concept", "method", "attack", "seed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    model TEXT, concept TEXT, method TEXT, attack TEXT, seed INTEGER,
    status TEXT NOT NULL,            -- done | failed | recompute (verify --repair: an artifact it used is bad)
    error TEXT, traceback TEXT,
    config_hash TEXT, config TEXT,   -- the resolved configuration (JSON) and its hash
    versions TEXT, finished REAL,
    PRIMARY KEY (model, concept, method, attack, seed)
);
CREATE TABLE IF NOT EXISTS records (
    model TEXT, concept TEXT, method TEXT, attack TEXT, seed INTEGER,
    stage TEXT,                      -- pre | post | post@N
    metric TEXT, value REAL, lo REAL, hi REAL, n INTEGER,
    seconds REAL,                    -- wall seconds of the stage that made this model (unlearn / attack to N)
    peak_mb REAL,                    -- its peak memory in MiB: resident on CPU, max allocated on CUDA
    eval_seconds REAL,               -- wall seconds of sampling and scoring this stage
    status TEXT, config_hash TEXT, versions TEXT, info TEXT,
    reserved_mb REAL,                -- CUDA: the most the caching allocator reserved making this model (0 on CPU)
    eval_peak_mb REAL,               -- peak memory of sampling and scoring this stage, as peak_mb
    eval_reserved_mb REAL            -- CUDA: the most reserved while evaluating this stage
);
CREATE INDEX IF NOT EXISTS records_cell ON records (model, concept, method, attack, seed);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cell_artifacts (  -- the artifacts a cell's numbers came from
    model TEXT, concept TEXT, method TEXT, attack TEXT, seed INTEGER,
    path TEXT,                       -- relative to artifacts/, e.g. unlearn/<key>.safetensors
    sha256 TEXT
);
"""


@dataclass
class Record:
    stage: str
    metric: str
    value: float
    lo: Optional[float] = None
    hi: Optional[float] = None
    n: int = 0
    seconds: float = 0.0
    peak_mb: float = 0.0
    eval_seconds: float = 0.0
    info: dict = field(default_factory=dict)
    reserved_mb: float = 0.0
    eval_peak_mb: float = 0.0
    eval_reserved_mb: float = 0.0


class Store:
    def __init__(self, run_dir: str | os.PathLike, create: bool = True):
        self.dir = pathlib.Path(run_dir)
        if not create and not (self.dir / DB_NAME).exists():
            raise UserError(f"no results in {self.dir}: expected {self.dir / DB_NAME} "
                            "(run `relearnbench run --out DIR` first)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.artifacts = Artifacts(self.dir / "artifacts")
        try:
            self.db = sqlite3.connect(self.dir / DB_NAME, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            _add_columns(self.db, "records", RECORD_COLUMNS_SINCE)
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.dir / DB_NAME} is not a readable results database ({e}); "
                            "move it away and rerun into a fresh --out") from e

    def close(self):
        self.db.close()

    # -- cells ---------------------------------------------------------------------------------
    def status(self, cell: tuple) -> Optional[str]:
        row = self.db.execute(f"SELECT status FROM cells WHERE {_where()}", cell).fetchone()
        return row[0] if row else None

    def statuses(self) -> dict[tuple, str]:
        return {tuple(r[:5]): r[5] for r in self.db.execute(f"SELECT {','.join(CELL_KEYS)}, status FROM cells")}

    def configs(self) -> dict[tuple, dict]:
        """The stored configuration (``runner.cell_config``, through JSON) of every finished cell."""
        rows = self.db.execute(f"SELECT {','.join(CELL_KEYS)}, config FROM cells WHERE status = 'done'")
        return {tuple(r[:5]): json.loads(r[5] or "{}") for r in rows}

    def artifacts_used(self, cell: tuple) -> dict[str, str]:
        """The artifacts (relative path -> sha256) a finished cell's numbers came from."""
        rows = self.db.execute(f"SELECT path, sha256 FROM cell_artifacts WHERE {_where()}", tuple(cell))
        return dict(rows.fetchall())

    def write_cell(self, cell: tuple, records: Iterable[Record], *, status: str, config: dict, config_hash: str,
                   versions: dict, error: str = "", traceback: str = "", artifacts: dict | None = None) -> None:
        """All records of a cell, its status and the artifacts it used (relative path -> sha256) in one
        transaction: a crash keeps all or nothing."""
        records = list(records)
        with self._transaction():
            self.db.execute(f"DELETE FROM records WHERE {_where()}", cell)
            self.db.execute(f"DELETE FROM cell_artifacts WHERE {_where()}", cell)
            self.db.executemany("INSERT INTO cell_artifacts VALUES (?,?,?,?,?,?,?)",
                                [(*cell, path, sha) for path, sha in sorted((artifacts or {}).items())])
            self.db.execute("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (*cell, status, error, traceback, config_hash, json.dumps(config, default=str),
                             json.dumps(versions), time.time()))
            self.db.executemany(
                f"INSERT INTO records ({RECORD_COLUMNS}) VALUES ({','.join('?' * 21)})",
                [(*cell, r.stage, r.metric, r.value, r.lo, r.hi, r.n, r.seconds, r.peak_mb, r.eval_seconds,
                  status, config_hash, json.dumps(versions), json.dumps(r.info, default=str),
                  r.reserved_mb, r.eval_peak_mb, r.eval_reserved_mb) for r in records])

    def _transaction(self):
        db = self.db

        class _T:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *a):
                db.execute("ROLLBACK" if exc_type else "COMMIT")
        return _T()

    def set_meta(self, key: str, value: Any):
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str)))

    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- reading -------------------------------------------------------------------------------
    def records_frame(self):
        import pandas as pd

        try:
            return pd.read_sql_query("SELECT * FROM records", self.db)
        except Exception as e:  # pandas wraps sqlite's DatabaseError
            raise UserError(f"cannot read {self.dir / DB_NAME}: {e}") from e

    def cells_frame(self):
        import pandas as pd

        return pd.read_sql_query("SELECT * FROM cells", self.db)


RECORD_COLUMNS = ", ".join([*CELL_KEYS, "stage", "metric", "value", "lo", "hi", "n", "seconds", "peak_mb",
                            "eval_seconds", "status", "config_hash", "versions", "info", "reserved_mb",
                            "eval_peak_mb", "eval_reserved_mb"])
RECORD_COLUMNS_SINCE = {"reserved_mb": "REAL", "eval_peak_mb": "REAL", "eval_reserved_mb": "REAL"}  # 2026-12-07


def _add_columns(db, table: str, columns: dict) -> None:
    """Columns added to ``table`` since a results file was made (a run resumed, or read, by a newer version)."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in have:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError:  # another process added it first, or the file is read-only
                pass


def _where() -> str:
    return " AND ".join(f"{k} = ?" for k in CELL_KEYS)
