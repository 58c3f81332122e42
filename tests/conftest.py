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


@pytest.fixture(scope="session")
def tiny():
    from relearnbench.testing import tiny_model

    return tiny_model()


needs_toy = pytest.mark.skipif(not (TOY_ASSETS / "manifest.json").exists(),
                               reason="toy assets not built (relearnbench toy build)")
