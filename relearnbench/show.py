"""``relearnbench show NAME``: a plugin's ``--set`` keys with their types, defaults and comments, and the
values its presets resolve to at each model scale (what a run would use without a ``--set``)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from relearnbench.errors import UserError, near_misses

KINDS = ("methods", "attacks", "metrics", "judges")
CORE = ("sample", "generate", "model", "unlearn")  # the core's --set namespaces


def scales() -> tuple[str, ...]:
    """The preset scales of the registered models (``toy``, ``sd14``, ``sd21``, ``sdxl``): toy first, then each
    base scale before the scales that build on it (``config.SCALE_BASE``)."""
    from relearnbench.config import SCALE_BASE
    from relearnbench.registry import MODELS

    found = {MODELS.meta(m).get("preset", "sd14") for m in MODELS.names()}
    return tuple(sorted(found, key=lambda s: (s in SCALE_BASE, s != "toy", s)))


def columns(resolved: dict[str, object]) -> tuple[list[str], list[str]]:
    """The scales worth a column, and the others: a scale that builds on another (sdxl on sd14) gets one only
    where a value of its own table differs from its base's; else it runs its base's values, said under the table."""
    from relearnbench.config import SCALE_BASE

    shown, same = [], []
    for s in resolved:
        base = SCALE_BASE.get(s)
        if base in resolved and resolved[s] == resolved[base]:
            same.append(s)
        else:
            shown.append(s)
    return shown, same


def field_comments(config_cls) -> dict[str, str]:
    """{field: its comment, at the end of its line or in the comment lines right above it} from the source
    of ``config_cls`` and the dataclasses it extends (the test that every field is commented reads this too)."""
    out: dict[str, str] = {}
    for klass in config_cls.__mro__:
        if not dataclasses.is_dataclass(klass):
            continue
        above: list[str] = []
        for line in (line.strip() for line in inspect.getsource(klass).splitlines()):
            if line.startswith("#"):
                above.append(line.lstrip("# "))
                continue
            m = re.match(r"(\w+)\s*:[^#]*(?:#\s*(.*))?$", line)
            if m and (m.group(2) or above):
                out.setdefault(m.group(1), (m.group(2) or " ".join(above)).strip())
            above = []
    return out


def _type(tp) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(repr, typing.get_args(tp)))
    return getattr(tp, "__name__", None) if not typing.get_args(tp) else str(tp).replace("typing.", "")


def config_rows(config_cls, resolved: dict[str, object], shown) -> list[list[str]]:
    """One row per field: key, type, default, the value at each scale of ``shown``, comment."""
    hints, comments = typing.get_type_hints(config_cls), field_comments(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        at_scale = [repr(getattr(resolved[s], f.name)) if resolved.get(s) is not None else "-" for s in shown]
        rows.append([f.name, _type(hints[f.name]), repr(default), *at_scale, comments.get(f.name, "")])
    return rows


def _table(config_cls, resolved: dict[str, object]) -> str:
    """The keys at each scale, and a line naming the scales that run another scale's values."""
    from relearnbench.config import SCALE_BASE

    shown, same = columns(resolved)
    rows = config_rows(config_cls, resolved, shown)
    head = ["key", "type", "default", *shown, "comment"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    text = "\n".join("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
                      for r in [head, *rows])
    bases = {SCALE_BASE[s]: [t for t in same if SCALE_BASE[t] == SCALE_BASE[s]] for s in same}
    notes = [f"{', '.join(v)} models: the {k} column (their presets build on {k}'s and change none of these)"
             for k, v in bases.items()]
    return "\n".join([text, *("  " + n for n in notes)])


def _find(name: str):
    from relearnbench.registry import REGISTRIES

    kinds = [k for k in KINDS if name in REGISTRIES[k]]
    if not kinds:
        known = sorted({n for k in KINDS for n in REGISTRIES[k].list()} | set(CORE))
        raise UserError(f"no plugin named {name!r}; {near_misses(name, known)}")
    return kinds[0], REGISTRIES[kinds[0]]


def show(name: str) -> str:
    """The text ``relearnbench show NAME`` prints."""
    from relearnbench.config import build, make_config, preset_file_layer

    if name in CORE:  # the core's own namespaces
        from relearnbench.data import GenerateConfig
        from relearnbench.evaluate import SampleConfig
        from relearnbench.memory import UnlearnConfig
        from relearnbench.models import ModelConfig

        cls = {"sample": SampleConfig, "generate": GenerateConfig, "model": ModelConfig, "unlearn": UnlearnConfig}[name]
        resolved = {s: make_config(cls, name, preset_file_layer(cls, s)) for s in scales()}
        return f"{name}: core settings\n--set {name}.KEY=VALUE\n{_table(cls, resolved)}\n"
    wrapped = _wrapper(name)
    if wrapped:
        return wrapped
    kind, registry = _find(name)
    base_name, _, suffix = name.partition("+")
    resolved = {}
    for scale in scales():
        try:
            resolved[scale] = build(registry, name, scale, {})
        except UserError:
            resolved[scale] = None
    if not suffix:
        cls = registry.get(name)
        parts = [f"{name} ({kind[:-1]}): {registry.description(name)}"]
    else:  # X+meta, X+retain: the base method's keys, then the wrapper's
        cls, _ = registry.wrapper(suffix)
        parts = [f"{name} ({kind[:-1]}): {base_name}, then +{suffix}: {registry.suffixes()[suffix]}"]
        parts += _section(registry.get(base_name), f"the base method {base_name}",
                          {s: p and p.base.config for s, p in resolved.items()})
    parts += _section(cls, f"the +{suffix} wrapper" if suffix else f"version {cls.version}",
                      {s: p and p.config for s, p in resolved.items()})
    return "\n".join(parts) + "\n"


def _wrapper(suffix: str) -> str:
    """``show meta``: a wrapper's keys (``NAME+meta``), at each scale as resolved around one base method, or ""
    where ``suffix`` names no wrapper."""
    from relearnbench.config import build
    from relearnbench.registry import REGISTRIES

    registry = next((REGISTRIES[k] for k in KINDS if suffix in REGISTRIES[k].suffixes()), None)
    if registry is None:
        return ""
    cls, _ = registry.wrapper(suffix)
    for base in sorted(registry.list(), key=lambda n: n != "esd"):  # esd first: the paper's base method
        resolved = {}
        for scale in scales():
            try:
                resolved[scale] = build(registry, f"{base}+{suffix}", scale, {}).config
            except UserError:
                resolved[scale] = None
        if any(resolved.values()):
            break
    else:
        base, resolved = "", {}
    kind = registry.kind[:-1]
    head = [f"+{suffix} ({kind} wrapper): {registry.suffixes()[suffix]}",
            f"use it as NAME+{suffix} around a {kind} (e.g. {base or 'esd'}+{suffix}); "
            f"`relearnbench show {base or 'NAME'}+{suffix}` lists the base's keys too"]
    if base:
        head.append(f"the values at each scale: around {base} (a base may have its own preset rows)")
    return "\n".join(head + _section(cls, f"the +{suffix} wrapper", resolved)) + "\n"


def _section(cls, label: str, resolved: dict) -> list[str]:
    if not dataclasses.fields(cls.Config):
        return ["(no settings)"]
    return [f"--set {cls.config_name}.KEY=VALUE  ({label})", _table(cls.Config, resolved)]
