"""Typed, frozen plugin configs: dataclass defaults, then the TOML preset beside the plugin for the
model's scale (``toy`` or ``sd14``), then the registry entry's preset, then ``--set`` overrides.
An unknown key is an error naming it; a bad value names the key path and the expected type."""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import pathlib
import tomllib
import typing
from typing import Any

from relearnbench.errors import UserError, near_misses


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (1e-5, true, [0, 2]), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["esd.lr=1e-5", "sample.steps=10"]`` -> ``{"esd": {"lr": 1e-5}, "sample": {"steps": 10}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        namespace, dot, field = key.strip().partition(".")
        if not eq or not dot or not namespace or not field:
            raise UserError(f"malformed --set {item!r}: expected plugin.key=value, e.g. --set esd.lr=1e-5")
        out.setdefault(namespace, {})[field] = parse_value(value.strip())
    return out


def coerce(path: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; the error names ``path`` and the type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(path, value, a)
            except UserError:
                pass
        raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise UserError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):  # --set lora.curve=0,2: each item parsed as a --set value is
            value = [parse_value(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]  # --set gradients.timesteps=500: a list of one
        item = args[0] if args else Any
        return tuple(coerce(f"{path}[{i}]", v, item) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # --set model.path=123 is still a path
    elif isinstance(value, tp):
        return value
    raise UserError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def catalogue(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """The TOML files of a data folder by name (``relearnbench/concepts``, ``relearnbench/grids``)."""
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def listing(folder: pathlib.Path, pattern: str = "*") -> list[tuple[str, str]]:
    """(name, description) of the catalogue's files whose name matches ``pattern`` (``relearnbench ls``)."""
    out = []
    for name, path in catalogue(folder).items():
        if fnmatch.fnmatch(name, pattern):
            with path.open("rb") as f:
                out.append((name, tomllib.load(f).get("description", "")))
    return out


def find(folder: pathlib.Path, kind: str, name: str) -> pathlib.Path:
    """A catalogue name, or the path of a ``.toml`` file; the error lists near misses."""
    if name.endswith(".toml"):
        path = pathlib.Path(name)
        if not path.exists():
            raise UserError(f"{kind} file {name} does not exist")
        return path
    known = catalogue(folder)
    if name not in known:
        raise UserError(f"unknown {kind} {name!r}; {near_misses(name, list(known))} "
                        f"(or pass a path to a {kind} .toml file)")
    return known[name]


def make_config(config_cls, namespace: str, *layers: dict) -> Any:
    """Instantiate ``config_cls`` from its defaults and ``layers`` applied in order."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in fields:
                raise UserError(f"unknown config key {namespace}.{key}; {near_misses(key, sorted(fields))}")
            values[key] = coerce(f"{namespace}.{key}", value, hints[key])
    return config_cls(**values)


def preset_path(plugin_cls) -> pathlib.Path | None:
    """The TOML presets beside a plugin's module (``methods/esd.toml``), if any."""
    try:
        path = pathlib.Path(inspect.getfile(plugin_cls)).with_suffix(".toml")
    except TypeError:
        return None
    return path if path.exists() else None


# A later Stable Diffusion's presets build on SD-1.4's: a plugin file's [sd14] values apply to sd21 and sdxl models
# unless their own table ([sdxl], [sdxl.ft], ...) sets the key. Ours: most methods and attacks published SD-1.4
# settings only; a value published for the later model sits in its own table (esd.toml's [sdxl]: ESD's SDXL script)
SCALE_BASE = {"sd21": "sd14", "sdxl": "sd14"}


def scale_chain(scale: str) -> list[str]:
    """The preset tables a scale reads, later ones overriding: ``["sd14", "sdxl"]`` for sdxl, ``[scale]`` else."""
    return [SCALE_BASE[scale], scale] if scale in SCALE_BASE else [scale]


def preset_file_layer(plugin_cls, scale: str, sub: str | None = None) -> dict:
    """The ``[scale]`` table of the TOML file beside the plugin's module (``methods/esd.toml``), over its base
    scale's (``scale_chain``). A shared file holds several plugins' presets in sub-tables (``[toy.ft]``,
    ``[toy.lora]``); a wrapper's file holds one per base it wraps (``[toy.uce]`` of meta.toml), which ``sub`` names."""
    path = preset_path(plugin_cls)
    if path is None:
        return {}
    with path.open("rb") as f:
        tables = tomllib.load(f)
    out = {}
    for s in scale_chain(scale):
        out.update(_preset_table(plugin_cls, tables.get(s, {}), sub))
    return out


def _preset_table(plugin_cls, table: dict, sub: str | None) -> dict:
    if sub is not None:
        return table.get(sub, {}) if isinstance(table.get(sub), dict) else {}
    name = getattr(plugin_cls, "config_name", None)
    if name and isinstance(table.get(name), dict):
        return table[name]
    return {k: v for k, v in table.items() if not isinstance(v, dict)}


def instantiate(plugin_cls, scale: str, sets: dict, preset: dict | None = None, used: set | None = None):
    """Build a plugin with its resolved config; ``used`` collects the ``--set`` namespaces read."""
    name = getattr(plugin_cls, "config_name", "") or plugin_cls.__name__.lower()
    if used is not None:
        used.add(name)
    config = make_config(plugin_cls.Config, name, preset_file_layer(plugin_cls, scale), preset or {},
                         sets.get(name, {}))
    return plugin_cls(config)


def build(registry, name: str, scale: str, sets: dict, used: set | None = None):
    """The plugin registered as ``name``, with the registry entry's preset. ``NAME+suffix`` is composed:
    plugin NAME, then the wrapper registered for the suffix around it, configured from the ``[scale]``
    table of its preset file, that file's table for the base (``[toy.uce]``), the settings the suffix
    stands for, then ``--set``."""
    base_name, _, suffix = name.partition("+")
    registry.check(name)
    base = instantiate(registry.get(base_name), scale, sets, registry.meta(base_name).get("preset"), used)
    if not suffix:
        return base
    if not base.needs_model:
        raise UserError(f"{name}: {base_name} does not touch a model, so there is nothing to wrap")
    wrapper, meta = registry.wrapper(suffix)
    ns, user, fixed = wrapper.config_name, sets.get(wrapper.config_name, {}), meta.get("fixed", {})
    for key, value in fixed.items():
        if key in user and user[key] != value:
            raise UserError(f"{name} stands for {ns}.{key} = {value}; --set {ns}.{key}={user[key]} contradicts it")
    if used is not None:
        used.add(ns)
    layers = [preset_file_layer(wrapper, scale), preset_file_layer(wrapper, scale, base.config_name)]
    config = make_config(wrapper.Config, ns, *layers, user, fixed)
    reached = reaching(wrapper, base, sets, config)
    if reached:
        config = make_config(wrapper.Config, ns, *layers, reached, user, fixed)
    return wrapper(config, base, suffix)


def reaching(wrapper, base, sets: dict, config) -> dict:
    """One rule for the keys a wrapper has of its own in place of its base's (its ``replaces``: ``meta.lr``
    for ``esd.lr``): a ``--set`` on the base's key reaches the wrapper too, unless the wrapper's own key is
    set. ``--set esd.lr=1e-3`` trains ``esd+meta`` at 1e-3 whatever ``meta.lr`` a preset holds. A key the
    wrapper leaves at 0 where 0 means the base's value (its ``borrows``) already follows it and stays 0,
    so its artifacts keep their keys."""
    user, own = sets.get(base.config_name, {}), sets.get(wrapper.config_name, {})
    fields = {f.name for f in dataclasses.fields(base.config)}
    borrows = getattr(wrapper, "borrows", ())
    return {key: user[key] for key in getattr(wrapper, "replaces", ())
            if key in user and key in fields and key not in own and (getattr(config, key) or key not in borrows)}
