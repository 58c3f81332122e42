"""The results store of one run: ``results.sqlite`` (WAL; one transaction per cell) and
``artifacts/`` (files keyed by a hash of everything that determines them, written to a temporary
name and renamed, so a killed run never leaves half a file).

Every artifact's sha256 is written beside it (``NAME.sha256``) and checked when it is loaded; a file
that fails the check or will not load is moved to ``artifacts/corrupt/`` with a warning, and the
caller recomputes it. A finished cell's row lists the artifacts it used, by hash (``cell_artifacts``),
which ``relearnbench verify`` checks."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

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


_VERIFIED: dict[pathlib.Path, tuple] = {}  # path -> (size, mtime_ns, sha256): each file is hashed once per process


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: pathlib.Path) -> Optional[str]:
    """The sha256 written beside ``path`` (``sha256sum`` format), or None when there is none."""
    try:
        return sidecar(path).read_text().split()[0]
    except (OSError, IndexError):
        return None


def write_sum(path: pathlib.Path, sha: str) -> None:
    side = sidecar(path)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{sha}  {path.name}\n")
        os.replace(tmp, side)
    finally:
        tmp.unlink(missing_ok=True)


def quarantine(root: pathlib.Path, path: pathlib.Path) -> Optional[pathlib.Path]:
    """Move ``path`` (an artifact under ``root``, with its sum) to ``root/corrupt/``, keeping its relative
    path; None when another process moved it first."""
    dest = root / "corrupt" / path.relative_to(root)
    if dest.exists():
        dest = dest.with_name(f"{dest.name}.{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    if sidecar(path).exists() and not path.name.endswith(".sha256"):
        os.replace(sidecar(path), sidecar(dest))
    _VERIFIED.pop(path.resolve(), None)
    return dest


class Artifacts:
    """Content-addressed files: ``artifacts/<kind>/<key><ext>``, each with its sha256 beside it.

    ``load_*`` return None when the file is absent or damaged (then moved to ``artifacts/corrupt/``),
    and the caller computes it again. ``used`` maps every artifact this object read or wrote
    (relative path) to its sha256 through ``load_*`` and ``save_*``: the jobs hand it to the driver,
    which stores it with the cell. Report images (``_atomic`` alone) get a sum but are no cell's input."""

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)
        self.used: dict[str, str] = {}

    def path(self, kind: str, key: str, ext: str) -> pathlib.Path:
        return self.root / kind / f"{key}{ext}"

    def exists(self, kind: str, key: str, ext: str) -> bool:
        return self.path(kind, key, ext).exists()

    def relative(self, path: pathlib.Path) -> str:
        """``path`` as the records name it: relative to the run directory."""
        return str(path.relative_to(self.root.parent))

    def _atomic(self, path: pathlib.Path, write) -> pathlib.Path:
        """Write through a temporary name, record the sha256 beside it, rename; a failed write
        (a full disk, a file-size limit) leaves no partial file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            write(tmp)
            sha = sha256_file(tmp)
            write_sum(path, sha)  # the sum first: a kill between the two leaves no file, not an unsummed one
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        st = path.stat()
        _VERIFIED[path.resolve()] = (st.st_size, st.st_mtime_ns, sha)
        return path

    def _name(self, path: pathlib.Path) -> str:
        return path.relative_to(self.root).as_posix()

    def verified(self, path: pathlib.Path) -> bool:
        """Whether ``path`` exists and matches the sha256 beside it; a damaged file is quarantined.
        A file with no recorded sum (written before sums were) gets one now."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        seen = _VERIFIED.get(path.resolve())
        if seen and seen[:2] == (st.st_size, st.st_mtime_ns):
            sha = seen[2]
        else:
            sha, expected = sha256_file(path), recorded_sha256(path)
            if expected is None:
                write_sum(path, sha)
            elif sha != expected:
                self._quarantine(path, f"sha256 {sha[:12]}, written as {expected[:12]}")
                return False
            _VERIFIED[path.resolve()] = (st.st_size, st.st_mtime_ns, sha)
        self.used[self._name(path)] = sha
        return True

    def _quarantine(self, path: pathlib.Path, why: str) -> None:
        dest = quarantine(self.root, path)
        self.used.pop(self._name(path), None)
        print(f"warning: {path} is damaged ({why}); moved to {dest}, recomputing it", file=sys.stderr, flush=True)

    def _load(self, path: pathlib.Path, read):
        if not self.verified(path):
            return None
        try:
            return read(path)
        except Exception as e:  # verified bytes that do not parse: written damaged, or before sums were
            self._quarantine(path, f"{type(e).__name__}: {e}")
            return None

    def _save(self, path: pathlib.Path, write) -> pathlib.Path:
        self._atomic(path, write)
        self.used[self._name(path)] = _VERIFIED[path.resolve()][2]
        return path

    def save_json(self, kind: str, key: str, obj) -> pathlib.Path:
        return self._save(self.path(kind, key, ".json"), lambda p: p.write_text(json.dumps(obj, indent=1, default=str)))

    def load_json(self, kind: str, key: str):
        """The object, or None when the file is absent or damaged."""
        return self._load(self.path(kind, key, ".json"), lambda p: json.loads(p.read_text()))

    def save_tensors(self, kind: str, key: str, tensors: dict) -> pathlib.Path:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        return self._save(self.path(kind, key, ".safetensors"), lambda p: save_file(tensors, str(p)))

    def save_png(self, kind: str, key: str, image) -> pathlib.Path:
        """``image``: float [3,H,W] in [0, 1]."""
        from torchvision.utils import save_image

        return self._atomic(self.path(kind, key, ".png"), lambda p: save_image(image, str(p), format="png"))

    def load_tensors(self, kind: str, key: str, device="cpu") -> Optional[dict]:
        """The tensors, or None when the file is absent or damaged."""
        from safetensors.torch import load_file

        return self._load(self.path(kind, key, ".safetensors"), lambda p: load_file(str(p), device=str(device)))
