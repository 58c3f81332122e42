"""A run's description — from a grid TOML and/or flags — validated before any work starts."""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
from dataclasses import dataclass, field

from relearnbench.config import find
from relearnbench.errors import UserError, near_misses

GRID_DIR = pathlib.Path(__file__).parent / "grids"
LISTS = ("models", "concepts", "methods", "attacks", "metrics", "seeds")
SCALARS = ("name", "device", "dtype", "executor", "ray_address", "gpus", "jobs", "description", "cpus_per_task",
           "max_retries", "plugins")
DTYPES = {"float32": "float32", "fp32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}


@dataclass
class Spec:
    name: str = "custom"
    description: str = ""
    models: list[str] = field(default_factory=lambda: ["toy"])
    concepts: list[str] = field(default_factory=lambda: ["triangle", "striped"])
    methods: list[str] = field(default_factory=lambda: ["none"])
    attacks: list[str] = field(default_factory=lambda: ["none"])
    metrics: list[str] = field(default_factory=lambda: ["asr", "fid", "clip", "related"])
    seeds: list[int] = field(default_factory=lambda: [0])
    sets: dict[str, dict] = field(default_factory=dict)  # namespace -> key -> value
    device: str = "cpu"
    dtype: str = "float32"
    executor: str = "local"
    ray_address: str = ""
    gpus: str = ""  # "0,1": one worker process per GPU (local executor)
    jobs: int = 0  # local executor: worker processes (0: one per core, or one per GPU with --device cuda)
    cpus_per_task: int = 1  # ray: CPU cores each task asks for
    max_retries: int = 2  # ray: retries of a task whose worker died (a plugin's exception is not retried)
    plugins: list[str] = field(default_factory=list)  # --plugin modules, loaded by every worker
    only: dict[str, list[str]] = field(default_factory=dict)  # attack -> the methods it runs on (a grid's [only])

    def cells(self):
        """(model, concept, method, attack, seed) in the order that reuses cached artifacts; an attack in ``only``
        crosses only the methods it lists there."""
        for m in self.models:
            for c in self.concepts:
                for meth in self.methods:
                    for s in self.seeds:
                        for a in self.attacks:
                            if a not in self.only or meth in self.only[a]:
                                yield (m, c, meth, a, s)


def load_grid(name_or_path: str) -> dict:
    path = find(GRID_DIR, "grid", name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"grid file {path}: malformed TOML ({e})") from e
    data.setdefault("name", path.stem)
    return data


def build_spec(grid: dict | None, flags: dict, sets: dict[str, dict]) -> Spec:
    """Grid values, then flags (a flag given overrides the grid's key), then ``--set``."""
    values: dict = {}
    for source, label in ((grid or {}), "grid"), (flags, "flag"):
        for key, value in source.items():
            if value is None or value == ():
                continue
            if key in ("set", "only"):
                continue
            if key not in LISTS + SCALARS:
                raise UserError(f"{label} key {key!r} is unknown; "
                                f"{near_misses(key, list(LISTS + SCALARS) + ['set', 'only'])}")
            if key in LISTS:
                value = _as_list(key, value)
            values[key] = value
    spec = Spec(**values)
    grid_sets = (grid or {}).get("set", {})
    if not isinstance(grid_sets, dict):
        raise UserError("grid key 'set' must be a table, e.g. [set.esd] lr = 1e-5")
    merged: dict[str, dict] = {}
    for ns, table in list(grid_sets.items()) + list(sets.items()):
        if not isinstance(table, dict):
            raise UserError(f"grid [set.{ns}] must be a table of key = value")
        merged.setdefault(ns, {}).update(table)
    spec.sets = merged
    spec.only = _only((grid or {}).get("only", {}), spec)
    if spec.dtype not in DTYPES:
        raise UserError(f"--dtype {spec.dtype!r}: expected one of {', '.join(DTYPES)}")
    if not isinstance(spec.jobs, int) or spec.jobs < 0:
        raise UserError(f"--jobs {spec.jobs!r}: expected a number of worker processes (0: one per core)")
    if spec.executor not in ("local", "ray"):
        raise UserError(f"--executor {spec.executor!r}: expected local or ray")
    return spec


def _only(table, spec: Spec) -> dict[str, list[str]]:
    """A grid's ``[only]`` table (``unlearndiffatk = ["rece", "rece+meta"]``): attacks that run on some methods."""
    if not isinstance(table, dict):
        raise UserError('grid key \'only\' must be a table of attack = [methods], e.g. [only] unlearndiffatk = ["rece"]')
    from relearnbench.registry import ATTACKS, METHODS

    out = {}
    for attack, methods in table.items():
        methods = _as_list(f"only.{attack}", methods)
        ATTACKS.check(attack)  # a misspelt name is an error; one the run's --attacks / --methods left out is not
        for m in methods:
            METHODS.check(m)
        if attack in spec.attacks:
            out[attack] = [m for m in methods if m in spec.methods]
    return out


def _as_list(key: str, value) -> list:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise UserError(f"{key}: expected a non-empty comma list or TOML array, got {value!r}")
    if key == "seeds":
        try:
            return [int(v) for v in value]
        except (TypeError, ValueError):
            raise UserError(f"seeds: expected integers, got {value!r}") from None
    return [str(v) for v in value]


def spec_dict(spec: Spec) -> dict:
    return dataclasses.asdict(spec)
