"""Concept plugins: TOML files in ``relearnbench/concepts/`` (``relearnbench ls concepts``) or any
path given to ``--concepts``. ``--set concept.KEY=VALUE`` overrides a key of every concept in the run
(``--set concept.prompts=i2p_nudity.csv`` points the nudity concept at the user's prompt file)."""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import pathlib
import tomllib

from relearnbench.api import Concept, Prompt
from relearnbench.errors import UserError, near_misses

CONCEPT_DIR = pathlib.Path(__file__).parent / "concepts"
KEYS = {"name", "description", "model", "forget_prompts", "prompts", "related_prompts", "unrelated_prompts",
        "judge", "judge_config", "target", "attack_data", "anchor", "fid_reference"}


def known() -> dict[str, pathlib.Path]:
    return {p.stem: p for p in sorted(CONCEPT_DIR.glob("*.toml"))}


def list_concepts(pattern: str = "*") -> list[tuple[str, str]]:
    out = []
    for name, path in known().items():
        if fnmatch.fnmatch(name, pattern):
            with path.open("rb") as f:
                out.append((name, tomllib.load(f).get("description", "")))
    return out


def resolve_path(name: str) -> pathlib.Path:
    if name.endswith(".toml"):
        path = pathlib.Path(name)
        if not path.exists():
            raise UserError(f"concept file {name} does not exist")
        return path
    if name not in known():
        raise UserError(f"unknown concept {name!r}; {near_misses(name, list(known()))} "
                        "(or pass a path to a concept .toml file)")
    return known()[name]


def load_concept(name: str, overrides: dict | None = None) -> Concept:
    path = resolve_path(name)
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"concept file {path}: malformed TOML ({e})") from e
    for key in list(data) + list(overrides or {}):
        if key not in KEYS:
            raise UserError(f"concept {path.stem}: unknown key concept.{key}; {near_misses(key, sorted(KEYS))}")
    data.update(overrides or {})
    digest = hashlib.sha256(raw + repr(sorted((overrides or {}).items())).encode()).hexdigest()

    if data.get("prompts"):  # a CSV with UnlearnDiffAtk's columns prompt,evaluation_seed,evaluation_guidance
        forget = _read_prompt_csv(pathlib.Path(data["prompts"]), path)
        digest = hashlib.sha256(digest.encode() + pathlib.Path(data["prompts"]).read_bytes()).hexdigest()
    else:
        forget = tuple(Prompt(p) for p in data.get("forget_prompts", []))
    if not forget:
        hint = " (set one with --set concept.prompts=FILE.csv)" if "prompts" in data else ""
        raise UserError(f"concept {path.stem} has no forget prompts{hint}")
    for key in ("judge",):
        if key not in data:
            raise UserError(f"concept {path.stem}: missing key {key!r}")
    return Concept(
        name=data.get("name", path.stem), description=data.get("description", ""), forget=forget,
        related=tuple(data.get("related_prompts", [])), unrelated=tuple(data.get("unrelated_prompts", [])),
        judge=data["judge"], judge_config=dict(data.get("judge_config", {})), target=dict(data.get("target", {})),
        attack_data=data.get("attack_data", "generate"), anchor=data.get("anchor", ""),
        fid_reference=data.get("fid_reference", ""), source=str(path), sha256=digest)


def _read_prompt_csv(csv_path: pathlib.Path, concept_path: pathlib.Path) -> tuple[Prompt, ...]:
    if not csv_path.exists():
        raise UserError(f"concept {concept_path.stem}: prompt file {csv_path} does not exist")
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "prompt" not in rows[0]:
        raise UserError(f"{csv_path}: expected a CSV with columns prompt,evaluation_seed,evaluation_guidance")
    return tuple(Prompt(r["prompt"],
                        int(r["evaluation_seed"]) if r.get("evaluation_seed") not in (None, "") else None,
                        float(r["evaluation_guidance"]) if r.get("evaluation_guidance") not in (None, "") else None)
                 for r in rows)
