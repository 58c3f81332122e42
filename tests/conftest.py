import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOY_ASSETS = ROOT / "relearnbench" / "toy" / "assets"


def cli(*args, cwd=None, env=None, check=False, timeout=600):
    """Run the installed console script the way a user would; returns CompletedProcess."""
    exe = pathlib.Path(sys.executable).parent / "relearnbench"
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"relearnbench {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def run_cli():
    return cli


CONSTANT_PLUGIN = (  # a --plugin file: a torch-free metric 'constant' that always scores 0.25
    "from relearnbench.api import Metric, Score\n"
    "from relearnbench.registry import METRICS\n"
    "@METRICS.register('constant', higher_is_better=True)\n"
    "class Constant(Metric):\n"
    "    '''always 0.25'''\n"
    "    config_name = 'constant'\n"
    "    needs_model = False\n"
    "    def compute(self, ev):\n"
    "        return [Score('constant', 0.25)]\n")


@pytest.fixture
def constant_plugin(tmp_path):
    """The path of a written CONSTANT_PLUGIN file."""
    path = tmp_path / "constant_metric.py"
    path.write_text(CONSTANT_PLUGIN)
    return path


@pytest.fixture(scope="session")
def tiny():
    from relearnbench.testing import tiny_model

    return tiny_model()


needs_toy = pytest.mark.skipif(not (TOY_ASSETS / "manifest.json").exists(),
                               reason="toy assets not built (relearnbench toy build)")
