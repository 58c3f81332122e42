"""One generic registry per plugin kind: methods, attacks, metrics, models, judges.

Built-ins are lazy ``"module:Object"`` strings imported on first ``get`` so that ``relearnbench ls``
imports no torch. Third parties register through entry points in the group named like the
registry (``relearnbench.methods`` ...) or with ``--plugin some.module`` (a module that calls
``register``). A duplicate name is an error, never a silent overwrite.

``NAME@LABEL`` is a variant of plugin ``NAME``: the same class under the ``--set`` namespace
``NAME@LABEL``, so one grid can hold several differently-configured copies of a plugin as rows of
one table (``checkpoint@esd``, ``checkpoint@uce``: two external checkpoints).
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from relearnbench.errors import UserError, near_misses

T = TypeVar("T")


@dataclass
class Entry:
    name: str
    target: Any  # the object, or a lazy "module:attr" string
    description: str = ""
    meta: dict = field(default_factory=dict)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "methods", "attacks", ...
        self.group = f"relearnbench.{kind}"
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False
        self._wrappers: dict[str, Entry] = {}  # suffix -> the wrapper plugin of composite names ("esd+meta")

    # -- registering -------------------------------------------------------------------------
    def register(self, name: str, target: Any = None, *, description: str = "", **meta):
        """``REG.register("x", "pkg.mod:Cls", description=...)`` or ``@REG.register("x")``."""
        if target is None:
            def decorator(obj):
                self._add(name, obj, description or _first_line(obj.__doc__), meta)
                return obj
            return decorator
        self._add(name, target, description or (
            "" if isinstance(target, str) else _first_line(target.__doc__)), meta)
        return target

    def _add(self, name, target, description, meta):
        if name in self._entries:
            raise UserError(f"{self.kind[:-1]} {name!r} is registered twice "
                            f"({self._entries[name].target!r} and {target!r}); rename one")
        if "+" in name or "@" in name:
            raise UserError(f"{self.kind[:-1]} name {name!r} may not contain '+' or '@' (wrappers, variants)")
        self._entries[name] = Entry(name, target, description, meta)

    def add_wrapper(self, suffix: str, target: Any, *, description: str = "", **meta):
        """``NAME+suffix`` is the plugin ``target`` (lazy ``"module:Class"``) built around plugin NAME;
        ``fixed={...}`` are config values the suffix stands for (``+retain``: no meta terms)."""
        self._wrappers[suffix] = Entry(suffix, target, description, meta)

    def suffixes(self) -> dict[str, str]:
        """The wrappers, ``{suffix: description}``."""
        return {suffix: e.description for suffix, e in self._wrappers.items()}

    def wrapper(self, suffix: str) -> tuple[Any, dict]:
        """The wrapper class for ``suffix`` and its registration metadata."""
        e = self._wrappers[suffix]
        if isinstance(e.target, str):
            e.target = _import(e.target)
        return e.target, dict(e.meta)

    def _load_entry_points(self):
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=self.group):
            self._add(ep.name, ep.value, "", {"source": ep.dist.name if ep.dist else "entry point"})

    # -- looking up --------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def list(self, pattern: str = "*") -> list[str]:
        return [n for n in self.names() if fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: str) -> bool:
        try:
            self.check(name)
            return True
        except UserError:
            return False

    def check(self, name: str) -> None:
        """Validate a name (composites included) without importing anything heavy."""
        base, _, suffix = name.partition("+")
        base, at, label = base.partition("@")
        if base not in self.names():
            raise UserError(f"unknown {self.kind[:-1]} {base!r}; {near_misses(base, self.names())}")
        if at and not re.fullmatch(r"[A-Za-z0-9_-]+", label):
            raise UserError(f"{self.kind[:-1]} {name!r}: a variant label is letters, digits, '_' and '-' "
                            f"(it names the --set namespace {base}@LABEL)")
        if suffix and suffix not in self._wrappers:
            raise UserError(f"{self.kind[:-1]} {name!r}: unknown wrapper '+{suffix}'; "
                            f"known: {', '.join('+' + s for s in self._wrappers) or '(none)'}")

    def entry(self, name: str) -> Entry:
        base = name.partition("+")[0]
        self.check(base)
        return self._entries[base.partition("@")[0]]

    def meta(self, name: str) -> dict:
        return dict(self.entry(name).meta)

    def description(self, name: str) -> str:
        e = self.entry(name)
        if not e.description:  # a third-party entry point: its docstring, which needs the import
            e.description = _first_line(getattr(self.get(e.name), "__doc__", ""))
        return e.description

    def get(self, name: str) -> T:
        """The plugin registered as ``name``; a composite ``NAME+suffix`` is built by
        ``relearnbench.config.build``, not looked up."""
        self.check(name)
        if "+" in name:
            raise UserError(f"{name!r} is a base {self.kind[:-1]} and a wrapper: build it with "
                            "relearnbench.config.build(registry, name, ...)")
        root, at, label = name.partition("@")
        e = self._entries[root]
        if isinstance(e.target, str):
            e.target = _import(e.target)
            if not e.description:
                e.description = _first_line(getattr(e.target, "__doc__", ""))
        return _variant(e.target, label, self.kind) if at else e.target


_VARIANTS: dict[tuple, type] = {}


def _variant(cls, label: str, kind: str):
    """``cls`` under the config namespace ``NAME@LABEL``; one class per variant, so repeated gets agree."""
    if not isinstance(cls, type) or not getattr(cls, "config_name", ""):
        raise UserError(f"{kind[:-1]} {getattr(cls, '__name__', cls)!r} has no settings, so no @variants")
    key = (cls, label)
    if key not in _VARIANTS:
        _VARIANTS[key] = type(cls.__name__, (cls,), {"config_name": f"{cls.config_name}@{label}",
                                                     "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return _VARIANTS[key]


def _import(path: str):
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot import plugin {path!r}: {e}") from e
    return obj


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


METHODS: Registry = Registry("methods")
ATTACKS: Registry = Registry("attacks")
METRICS: Registry = Registry("metrics")
MODELS: Registry = Registry("models")
JUDGES: Registry = Registry("judges")
REGISTRIES = {r.kind: r for r in (METHODS, ATTACKS, METRICS, MODELS, JUDGES)}


def load_plugin(module: str) -> None:
    """``--plugin some.module``: import a module (or a .py file, whose folder becomes importable, so it can
    import its neighbours) whose import registers plugins; one that registers nothing is an error."""
    import importlib.util
    import pathlib
    import sys

    def count() -> int:
        return sum(len(r._entries) + len(r._wrappers) for r in REGISTRIES.values())

    before, path = count(), pathlib.Path(module)
    try:
        if path.suffix == ".py":
            if not path.exists():
                raise UserError(f"--plugin {module}: no such file")
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = mod
            spec.loader.exec_module(mod)
        elif module in sys.modules:
            return  # imported before (by an entry point, or an earlier --plugin): its plugins are in
        else:
            importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"--plugin {module}: cannot import it ({e}); is it on PYTHONPATH?") from e
    if count() == before:
        raise UserError(f"--plugin {module} registered nothing: it should call METHODS.register, ATTACKS.register, "
                        "METRICS.register, MODELS.register or JUDGES.register (from relearnbench.registry) when imported")


from relearnbench import builtins as _builtins  # noqa: E402  (registers the lazy built-ins)

_builtins.register_all()
