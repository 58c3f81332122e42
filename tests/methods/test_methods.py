"""Every registered method (but the lead's torch-free dummy), and its +meta and +retain, runs a
couple of steps on a tiny random model and changes the UNet (``none`` leaves it bit-identical)."""

import dataclasses

import pytest
import torch

from relearnbench.registry import METHODS
from relearnbench.testing import TINY_MODELS, context, tiny_concept, tiny_model

# checkpoint loads a file the user names: tests/methods/test_checkpoint.py gives it one
BASES = [n for n in METHODS.list() if n not in ("dummy", "checkpoint")]
# the ESD presets differ from "esd" only by config: wrap one of each train variant, not all six
WRAPPED = [f"{n}+{s}" for n in BASES if not n.endswith("-3") for s in ("meta", "retain")]


@pytest.mark.parametrize("arch", TINY_MODELS)  # every method on SD-1.x and SDXL alike, no per-model branch
@pytest.mark.parametrize("name", BASES + WRAPPED)
def test_method_changes_the_unet(name, arch, build, ctx, unet_state):
    method = build(name)
    model = TINY_MODELS[arch]()
    before = unet_state(model)
    method.unlearn(model, tiny_concept(), ctx)
    after = unet_state(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if name == "none":
        assert changed == []
    else:
        assert changed, f"{name} left every UNet weight unchanged"
    assert all(v.isfinite().all() for v in after.values())
    assert all(not p.requires_grad for p in model.unet.parameters()), "the UNet must be handed back frozen"
    assert all(v.dtype == torch.float32 for v in after.values()), "trainable weights stay float32"
    # the harness reuses one plugin instance for many cells: nothing heavy may stay behind
    held = [k for obj in (method, getattr(method, "base", None)) if obj is not None
            for k, v in vars(obj).items() if isinstance(v, (torch.nn.Module, torch.Tensor, list, dict)) and v]
    assert held == []


@pytest.mark.parametrize("name", BASES + WRAPPED)
@pytest.mark.parametrize("scale", ["toy", "sd14", "sd21", "sdxl"])
def test_presets_resolve(name, scale):
    from relearnbench.config import build

    used = set()
    method = build(METHODS, name, scale, {}, used)
    assert dataclasses.is_dataclass(method.config)
    if "+" in name:
        assert used == {method.base.config_name, "meta"}
        assert method.describe()["config"]["base"]["config"] == dataclasses.asdict(method.base.config)


def test_registry_presets_reach_the_config():
    from relearnbench.config import build

    m = build(METHODS, "esd-x-3+meta", "toy", {})
    assert (m.base.config.train, m.base.config.eta) == ("x", 3.0)


def test_same_seed_same_weights(build):

    states = []
    for seed in (0, 0, 1):
        model = tiny_model()
        build("esd+meta").unlearn(model, tiny_concept(), context(seed=seed))
        states.append(torch.cat([p.flatten() for p in model.unet.parameters()]))
    assert torch.equal(states[0], states[1])
    assert not torch.equal(states[0], states[2])
