import pathlib
import subprocess
import sys
import tomllib

import pytest

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

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


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    """tests/plugin_example, a complete third-party package, installed into a scratch folder."""
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(ROOT / "tests" / "plugin_example")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {"PYTHONPATH": str(target)}


def test_third_party_package_registers_through_entry_points(tmp_path, run_cli, example_env):
    """A grid with the installed package's method, attack and metric."""
    env = example_env
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


# slow (35 s): the default run spies on ablate+meta and ablate+retain in process (tests/methods/test_methods_heldout.py)
# and runs a --plugin loss method wrapped in +meta through the CLI (test_docs_plugins.py)
@pytest.mark.slow
def test_third_party_loss_method_gets_meta_with_no_code(tmp_path, run_cli, example_env):
    """The package's ``ablate`` only exposes its per-step loss; ``ablate+meta`` and ``ablate+retain`` then
    exist, run, and move the weights differently from ``ablate`` and from each other."""
    env = example_env
    listing = run_cli("ls", "methods", env=env, check=True).stdout
    assert "ablate" in listing and "+meta" in listing and "+retain" in listing
    out = tmp_path / "run"
    tiny_meta = ["steps=2", "lr=1e-3", "inner_steps=1", "inner_batch=2", "forget_images=4", "retain_images=2",
                 "batch_size=2"]
    run_cli("run", "--model", "tiny", "--concepts", "triangle", "--methods", "ablate,ablate+meta,ablate+retain",
            "--attacks", "none", "--metrics", "brightness", "--set", "sample.images_per_prompt=1",
            "--set", "sample.steps=2", "--set", "ablate.steps=2", "--set", "ablate.lr=1e-3",
            "--set", "ablate.ddim_steps=2", *[a for kv in tiny_meta for a in ("--set", f"meta.{kv}")],
            "--out", out, env=env, check=True)
    rows = [r.split(",") for r in run_cli("table", out, "--long", "--format", "csv", env=env).stdout.splitlines()[1:]]
    pre = {r[2]: float(r[7]) for r in rows if r[5] == "pre"}
    assert set(pre) == {"ablate", "ablate+meta", "ablate+retain"}
    assert len(set(pre.values())) == 3  # three different models


def test_plugin_flag_loads_a_local_file(tmp_path, run_cli, constant_plugin):
    plugin = constant_plugin
    out = tmp_path / "run"
    run_cli("--plugin" if False else "run", "--plugin", plugin, "--methods", "dummy", "--attacks", "dummy",
            "--metrics", "constant", "--concepts", "triangle", "--out", out, check=True)
    md = run_cli("table", out, "--plugin", plugin, "--format", "md", check=True).stdout
    assert "constant↑" in md and "0.250" in md
