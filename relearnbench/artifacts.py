"""Artifacts: the files a run's jobs compute and cache under ``artifacts/`` (unlearned weights, generated images,
evaluations, report images), keyed by a hash of everything that determines them, written to a temporary name
and renamed, so a killed run never leaves half a file.

Every artifact's sha256 is written beside it (``NAME.sha256``) and checked when it is loaded; a file that fails
the check or will not load is moved to ``artifacts/corrupt/`` with a warning, and the caller recomputes it. Jobs
get an ``Artifacts`` and never the results store (``relearnbench.store``), which the driver alone writes."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
import time
from typing import Optional

_VERIFIED: dict[pathlib.Path, tuple] = {}  # path -> (size, mtime_ns, sha256): each file is hashed once per process


def cache_root() -> pathlib.Path:
    """The harness's cache beside the runs: $RELEARNBENCH_CACHE, else $XDG_CACHE_HOME/relearnbench
    (~/.cache/relearnbench). The memory model's kept figures and the fetched detector weights live in it."""
    return pathlib.Path(os.environ.get("RELEARNBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "relearnbench"))


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
