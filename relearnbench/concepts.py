"""Concept plugins: TOML files in ``relearnbench/concepts/`` (``relearnbench ls concepts``) or any
path given to ``--concepts``. ``--set concept.KEY=VALUE`` overrides a key of every concept in the run
(``--set concept.prompts=i2p_nudity.csv`` points the nudity concept at the user's prompt file).

A concept's prompts come in three roles (docs/protocol.md), checked disjoint here after
case and whitespace are normalised: ``train`` (train_prompts, train_related, train_unrelated),
``attack`` (attack_prompts, attack_related, attack_unrelated) and ``eval`` (forget_prompts or the
prompt CSV, related_prompts, unrelated_prompts). ``allow_overlap = true`` lifts the check."""

from __future__ import annotations

import csv
import hashlib
import pathlib
import tomllib

from relearnbench.api import Concept, Prompt
from relearnbench.config import find
from relearnbench.errors import UserError, near_misses

CONCEPT_DIR = pathlib.Path(__file__).parent / "concepts"
ROLE_KEYS = {"train": ("train_prompts", "train_related", "train_unrelated"),
             "attack": ("attack_prompts", "attack_related", "attack_unrelated"),
             "eval": ("forget_prompts", "related_prompts", "unrelated_prompts")}
KEYS = {"name", "description", "model", "prompts", "judge", "judge_config", "target", "train_data", "attack_data",
        "anchor", "fid_reference", "allow_overlap", *(k for keys in ROLE_KEYS.values() for k in keys)}


def load_concept(name: str, overrides: dict | None = None) -> Concept:
    path = find(CONCEPT_DIR, "concept", name)
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
    for key in ("judge", "train_prompts"):
        if key not in data:
            raise UserError(f"concept {path.stem}: missing key {key!r}")
    attack_data = data.get("attack_data", "generate")
    if not data.get("attack_prompts") and attack_data in ("world", "generate"):
        raise UserError(f"concept {path.stem}: attack_data = {attack_data!r} needs attack_prompts (the attacker's "
                        "own prompts), or set attack_data to an image folder")
    texts = {k: tuple(data.get(k, [])) for keys in ROLE_KEYS.values() for k in keys}
    texts["forget_prompts"] = tuple(p.text for p in forget)
    if not data.get("allow_overlap", False):
        check_disjoint(path.stem, texts)
    return Concept(
        name=data.get("name", path.stem), description=data.get("description", ""), forget=forget,
        related=texts["related_prompts"], unrelated=texts["unrelated_prompts"],
        judge=data["judge"], judge_config=dict(data.get("judge_config", {})), target=dict(data.get("target", {})),
        attack_data=attack_data, anchor=data.get("anchor", ""),
        fid_reference=data.get("fid_reference", ""), source=str(path), sha256=digest,
        train=texts["train_prompts"], train_related=texts["train_related"], train_unrelated=texts["train_unrelated"],
        train_data=data.get("train_data", "generate"), attack=texts["attack_prompts"],
        attack_related=texts["attack_related"], attack_unrelated=texts["attack_unrelated"],
        allow_overlap=bool(data.get("allow_overlap", False)))


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def check_disjoint(concept: str, texts: dict[str, tuple[str, ...]]) -> None:
    """No prompt in two roles (``texts``: ROLE_KEYS key -> prompts); the error names the prompt and both."""
    seen: dict[str, tuple[str, str]] = {}  # normalised prompt -> (role, key) where first met
    for role, keys in ROLE_KEYS.items():
        for key in keys:
            for text in texts.get(key, ()):
                first = seen.setdefault(normalise(text), (role, key))
                if first[0] != role:
                    raise UserError(f"concept {concept}: prompt {text!r} is in two roles, {first[0]} ({first[1]}) "
                                    f"and {role} ({key}); the defender, the attacker and the evaluator share no "
                                    "prompt (allow_overlap = true reproduces a published setting that overlaps)")


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
