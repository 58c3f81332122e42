"""Shared pieces of every test folder, and how the default run is chosen.

The default run (``python -m pytest``, ``-m 'not slow'`` in pyproject) keeps one fast path through every
feature; ``python -m pytest -m slow`` runs the rest. A test is slow when it is marked ``@pytest.mark.slow``
(a case ``pytest.param(..., marks=pytest.mark.slow)``), and by one rule for the tests parametrized over the
tiny models (``arch`` in ``relearnbench.testing.TINY_MODELS``), applied below at collection so that the
registry-driven tests hold no per-plugin branch and a new plugin follows it the moment it registers:

* every case on ``tiny`` runs by default: every method (and its +meta / +retain), attack and metric;
* on ``tiny-sdxl`` a case runs by default only when its plugin (its ``name`` parameter) is one of the
  representatives of its folder's kind in SDXL_DEFAULT, one per distinct path through SDXL's conditioning
  (pooled text embeddings and time ids, two tokenizers); the other plugins' tiny-sdxl cases are slow;
* a tiny-sdxl case of a test that enumerates plugins in other ways (a ``kind`` parameter: test_dtype's
  bf16 runs) is slow; a tiny-sdxl case with neither parameter (test_cond's unit checks) runs by default.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOY_ASSETS = ROOT / "relearnbench" / "toy" / "assets"

# per test folder, the plugins whose tiny-sdxl cases stay in the default run (see the module docstring)
SDXL_DEFAULT = {
    "methods": {"esd", "uce", "esd+meta", "salun+retain"},  # a loss method, the closed form, each wrapper
    "attacks": {"ft", "ci", "unlearndiffatk", "noising"},  # finetuning, an embedding, a prompt attack, a probe
    "metrics": {"asr", "clip", "gradients"},  # the judge, CLIP, the UNet's gradients
}
PLUGIN_PARAMS = ("name", "kind")  # the parameters by which a test enumerates plugins


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    """Mark slow the tiny-sdxl cases that SDXL_DEFAULT leaves out of the default run."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("arch") != "tiny-sdxl" or not any(k in params for k in PLUGIN_PARAMS):
            continue
        if params.get("name") not in SDXL_DEFAULT.get(item.path.parent.name, ()):
            item.add_marker(pytest.mark.slow)


def cli(*args, cwd=None, env=None, check=False, timeout=600):
    """Run the installed console script the way a user would; returns CompletedProcess."""
    exe = pathlib.Path(sys.executable).parent / "relearnbench"
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"relearnbench {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def run_cli():
    return cli


@pytest.fixture(scope="session")
def fakes():
    """The test fakes (the torch-free ``dummy`` method, attack and metric) registered in this process and,
    through RELEARNBENCH_FAKES=1 in its environment, in every ``relearnbench`` a test starts from now on.
    A user's ``ls`` never lists them. Use: ``pytestmark = pytest.mark.usefixtures("fakes")``."""
    from relearnbench.builtins import register_fakes

    register_fakes()


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


def _to_compvis(state: dict, layers_per_block: int) -> dict:
    """A diffusers SD-1.x UNet state dict in the CompVis (original Stable Diffusion) key names, as
    ``model.diffusion_model.*`` in a training checkpoint's ``state_dict``. This key map lives only
    in the tests, to build test files; relearnbench converts the other way with diffusers' own converter."""
    L = layers_per_block
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
              "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    up_has_attention = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        head = next((h for h in fixed if key.startswith(h + ".")), None)
        if head:
            new = fixed[head] + key[len(head):]
        elif parts[0] in ("down_blocks", "up_blocks", "mid_block"):
            if parts[0] == "mid_block":
                i, kind, j, rest = 0, parts[1], int(parts[2]), parts[3:]
                place = f"middle_block.{2 * j if kind == 'resnets' else 1}"
            else:
                i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
                if parts[0] == "down_blocks":
                    layer = i * (L + 1) + j + 1
                    place = {"resnets": f"input_blocks.{layer}.0", "attentions": f"input_blocks.{layer}.1",
                             "downsamplers": f"input_blocks.{(i + 1) * (L + 1)}.0.op"}[kind]
                else:
                    layer = i * (L + 1) + j  # an up level has one layer more than a down level
                    place = {"resnets": f"output_blocks.{layer}.0", "attentions": f"output_blocks.{layer}.1",
                             "upsamplers": f"output_blocks.{i * (L + 1) + L}.{2 if i in up_has_attention else 1}"}[kind]
            if kind == "resnets":
                rest = [resnet.get(rest[0], rest[0])] + rest[1:]
            elif kind == "downsamplers":
                rest = rest[1:]  # "conv.weight" -> "op.weight"
            new = f"{place}.{'.'.join(rest)}"
        else:
            raise KeyError(key)
        out[f"model.diffusion_model.{new}"] = value
    return out


@pytest.fixture
def to_compvis():
    """to_compvis(state, layers_per_block): a diffusers UNet state dict in CompVis key names."""
    return _to_compvis
