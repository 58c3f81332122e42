"""Plugins import the core and their own kind only: a metric finds a judge through the JUDGES
registry and CLIP through relearnbench.clip, never by importing another kind's module."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parents[2]
FOLDERS = ("methods", "attacks", "metrics")
OWN_KIND = {"relearnbench.metrics.judges": "judges"}  # the judges live beside the metrics, a kind of their own


def kind_of(module: str) -> str | None:
    """The plugin kind of a ``relearnbench.*`` module, None for the core."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "relearnbench" or parts[1] not in FOLDERS:
        return None
    return OWN_KIND.get(".".join(parts[:3]), parts[1])


def imports(path: pathlib.Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # from relearnbench import metrics
    return out


@pytest.mark.parametrize("folder", FOLDERS)
def test_plugins_import_no_other_kind(folder):
    files = sorted((ROOT / folder).glob("*.py"))
    assert files
    wrong = []
    for path in files:
        own = kind_of(f"relearnbench.{folder}.{path.stem}")
        wrong += [f"{folder}/{path.name} imports {m}" for m in imports(path) if kind_of(m) not in (None, own)]
    assert wrong == []


def test_the_walk_sees_a_cross_kind_import(tmp_path):
    path = tmp_path / "fid.py"
    path.write_text("def f():\n    from relearnbench.metrics.judges import ToyJudge\n")
    assert [m for m in imports(path) if kind_of(m) == "judges"]
    assert kind_of("relearnbench.metrics.stats") == "metrics" and kind_of("relearnbench.clip") is None


def test_the_core_imports_no_plugin():
    """The core reaches a plugin through its registry (``METHODS.get``), never by importing its module, so a plugin
    can move or be replaced without the core; builtins.py names them as lazy strings, not imports."""
    wrong = [f"relearnbench/{p.relative_to(ROOT / 'relearnbench')} imports {m}"
             for p in sorted((ROOT / "relearnbench").rglob("*.py"))
             for m in imports(p) if kind_of(m) is not None]
    assert wrong == []
