"""The results store of one run: ``results.sqlite`` (WAL; one transaction per cell) and
``artifacts/`` (files keyed by a hash of everything that determines them, written to a temporary
name and renamed, so a killed run never leaves half a file)."""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from relearnbench.errors import UserError

DB_NAME = "results.sqlite"
CELL_KEYS = ("model", "concept", "method", "attack", "seed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    model TEXT, concept TEXT, method TEXT, attack TEXT, seed INTEGER,
    status TEXT NOT NULL,            -- done | failed
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
    peak_mb REAL,                    -- its peak memory: RSS on CPU, max allocated on CUDA
    eval_seconds REAL,               -- wall seconds of sampling and scoring this stage
    status TEXT, config_hash TEXT, versions TEXT, info TEXT
);
CREATE INDEX IF NOT EXISTS records_cell ON records (model, concept, method, attack, seed);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
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

    def write_cell(self, cell: tuple, records: Iterable[Record], *, status: str, config: dict, config_hash: str,
                   versions: dict, error: str = "", traceback: str = "") -> None:
        """All records of a cell and its status in one transaction: a crash keeps all or nothing."""
        records = list(records)
        with self._transaction():
            self.db.execute(f"DELETE FROM records WHERE {_where()}", cell)
            self.db.execute("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (*cell, status, error, traceback, config_hash, json.dumps(config, default=str),
                             json.dumps(versions), time.time()))
            self.db.executemany(
                "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(*cell, r.stage, r.metric, r.value, r.lo, r.hi, r.n, r.seconds, r.peak_mb, r.eval_seconds,
                  status, config_hash, json.dumps(versions), json.dumps(r.info, default=str)) for r in records])

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


def _where() -> str:
    return " AND ".join(f"{k} = ?" for k in CELL_KEYS)


class Artifacts:
    """Content-addressed files: ``artifacts/<kind>/<key><ext>``."""

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)

    def path(self, kind: str, key: str, ext: str) -> pathlib.Path:
        return self.root / kind / f"{key}{ext}"

    def exists(self, kind: str, key: str, ext: str) -> bool:
        return self.path(kind, key, ext).exists()

    def _atomic(self, path: pathlib.Path, write) -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, path)
        return path

    def save_json(self, kind: str, key: str, obj) -> pathlib.Path:
        return self._atomic(self.path(kind, key, ".json"),
                            lambda p: p.write_text(json.dumps(obj, indent=1, default=str)))

    def load_json(self, kind: str, key: str):
        return json.loads(self.path(kind, key, ".json").read_text())

    def save_tensors(self, kind: str, key: str, tensors: dict) -> pathlib.Path:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        return self._atomic(self.path(kind, key, ".safetensors"), lambda p: save_file(tensors, str(p)))

    def load_tensors(self, kind: str, key: str, device="cpu") -> dict:
        from safetensors.torch import load_file

        return load_file(str(self.path(kind, key, ".safetensors")), device=str(device))
