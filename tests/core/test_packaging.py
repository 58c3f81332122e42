import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAPPING = {"relearnbench": "relearnbench", "relearnbench.methods": "methods",
           "relearnbench.attacks": "attacks", "relearnbench.metrics": "metrics"}


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == MAPPING
    found = set()
    for name, folder in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == set(cfg["packages"]), "list every sub-package in [tool.setuptools] packages"


def test_plugins_import_under_the_namespace_only():
    import relearnbench.attacks.dummy
    import relearnbench.methods.dummy  # noqa: F401

    assert "methods" not in sys.modules and "attacks" not in sys.modules


def test_third_party_package_registers_through_entry_points(tmp_path, run_cli):
    """tests/plugin_example is a complete third-party package; install it into a scratch folder and
    run a grid with its method, attack and metric."""
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(ROOT / "tests" / "plugin_example")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    env = {"PYTHONPATH": str(target)}
    listing = run_cli("ls", "methods", "shr*", env=env, check=True).stdout
    assert "shrink" in listing and "cross-attention keys" in listing
    out = tmp_path / "run"
    run_cli("run", "--model", "tiny", "--concepts", "triangle", "--methods", "none,shrink",
            "--attacks", "weight_noise", "--metrics", "brightness", "--set", "sample.images_per_prompt=1",
            "--set", "sample.steps=2", "--set", "shrink.strength=1.0", "--out", out, env=env, check=True)
    rows = [r.split(",") for r in run_cli("table", out, "--long", "--format", "csv", env=env).stdout.splitlines()[1:]]
    stages = {(r[2], r[5]) for r in rows}
    assert {("shrink", "pre"), ("shrink", "post@1"), ("shrink", "post@2"), ("none", "post")} <= stages
    pre = {r[2]: float(r[7]) for r in rows if r[5] == "pre"}
    assert pre["shrink"] != pre["none"]  # the method changed the model's images


def test_plugin_flag_loads_a_local_file(tmp_path, run_cli):
    plugin = tmp_path / "myplug.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from relearnbench.api import Metric, Score\n"
        "from relearnbench.registry import METRICS\n"
        "@METRICS.register('constant', higher_is_better=True)\n"
        "class Constant(Metric):\n"
        "    '''always 0.25'''\n"
        "    config_name = 'constant'\n"
        "    needs_model = False\n"
        "    def compute(self, ev):\n"
        "        return [Score('constant', 0.25)]\n")
    out = tmp_path / "run"
    run_cli("--plugin" if False else "run", "--plugin", plugin, "--methods", "dummy", "--attacks", "dummy",
            "--metrics", "constant", "--concepts", "triangle", "--out", out, check=True)
    md = run_cli("table", out, "--plugin", plugin, "--format", "md", check=True).stdout
    assert "constant↑" in md and "0.250" in md
