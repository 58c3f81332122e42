"""Every registered method (but the lead's torch-free dummy), and its +meta and +retain, runs a
couple of steps on a tiny random model and changes the model, its UNet or its text encoders (``none`` leaves it
bit-identical)."""

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
def test_method_changes_the_model(name, arch, build, ctx, unet_state):
    """The model changed: its UNet, or its text encoders (advunlearn trains the text encoder alone)."""
    method = build(name)
    model = TINY_MODELS[arch]()
    encoders = [k for k in ("text_encoder", "text_encoder_2") if getattr(model, k) is not None]
    before = {"unet": unet_state(model), **{k: state_of(getattr(model, k)) for k in encoders}}
    method.unlearn(model, tiny_concept(), ctx)
    after = {"unet": unet_state(model), **{k: state_of(getattr(model, k)) for k in encoders}}
    changed = [(part, k) for part in before for k in before[part]
               if before[part][k].dtype != after[part][k].dtype or not torch.equal(before[part][k], after[part][k])]
    if name == "none":
        assert changed == []
    else:
        assert changed, f"{name} left every weight of the UNet and the text encoders unchanged"
    assert all(v.isfinite().all() for part in after.values() for v in part.values())
    assert all(not p.requires_grad for p in model.unet.parameters()), "the UNet must be handed back frozen"
    assert all(not p.requires_grad for k in encoders for p in getattr(model, k).parameters()), \
        "the text encoders must be handed back frozen"
    after = after["unet"]
    assert all(v.dtype == torch.float32 for v in after.values()), "trainable weights stay float32"
    # the harness reuses one plugin instance for many cells: nothing heavy may stay behind
    held = [k for obj in (method, getattr(method, "base", None)) if obj is not None
            for k, v in vars(obj).items() if isinstance(v, (torch.nn.Module, torch.Tensor, list, dict)) and v]
    assert held == []


def state_of(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


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
