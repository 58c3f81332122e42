"""ESD: each variant trains exactly its parameter set, and training moves ε_θ(x_t, c) to the
negatively guided target of the frozen original."""

import copy

import pytest
import torch

from relearnbench.diffusion import add_noise, encode_text_frozen, predict
from relearnbench.testing import tiny_concept, tiny_model


def in_variant(name: str, train: str) -> bool:
    """ESD's parameter sets, written out independently of the method: u = not cross-attention (nor
    the time embedding and output conv, as the reference code), x = cross-attention, f = all."""
    cross = "attn2" in name.split(".")
    if train == "f":
        return True
    if train == "x":
        return cross
    return not cross and not name.startswith(("time_embedding.", "conv_out."))


@pytest.mark.parametrize("train", ["u", "x", "f"])
def test_variant_trains_exactly_its_parameters(train, build, ctx, unet_state):
    model = tiny_model()
    before = unet_state(model)
    build("esd", esd={"train": train, "steps": 1, "lr": 1e-3}).unlearn(model, tiny_concept(), ctx)
    after = unet_state(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {n for n, _ in model.unet.named_parameters() if in_variant(n, train)}


def test_training_reaches_the_negatively_guided_target(build, ctx):
    """On held-out draws, ε_θ(x_t, c) moves towards ε*(∅) − η(ε*(c) − ε*(∅)), and ends far closer to
    it than to the positively guided ε*(∅) + η(ε*(c) − ε*(∅)) (a sign error would do the opposite)."""
    from relearnbench.methods.common import encode_set

    model, concept = tiny_model(), tiny_concept()
    teacher = copy.deepcopy(model.unet)
    eta = 20.0  # a random model barely tells c from ∅: a large η makes the target stand apart
    method = build("esd", esd={"xt": "noise", "train": "f", "eta": eta, "steps": 40, "lr": 1e-3, "batch_size": 8})
    data = encode_set(model, concept, ctx, concept.train, 8, seed=99)  # held-out forget images
    g = torch.Generator().manual_seed(123)
    t = torch.randint(0, 1000, (8,), generator=g)
    x_t = add_noise(model, data.x0, torch.randn(data.x0.shape, generator=g), t)
    c = encode_text_frozen(model, list(concept.train[:1]) * 8)
    uncond = encode_text_frozen(model, [""] * 8)
    with torch.no_grad():
        e0, ep = predict(teacher, x_t, t, uncond), predict(teacher, x_t, t, c)
        target, flipped = e0 - eta * (ep - e0), e0 + eta * (ep - e0)

    def distances():
        with torch.no_grad():
            out = predict(model.unet, x_t, t, c)
        return (out - target).pow(2).mean().item(), (out - flipped).pow(2).mean().item()

    to_target0, to_flipped0 = distances()
    method.unlearn(model, concept, ctx)
    to_target1, to_flipped1 = distances()
    assert to_target1 < 0.8 * to_target0
    assert to_flipped1 > to_flipped0
    assert to_target1 < 0.5 * to_flipped1


@pytest.mark.parametrize("prompts, count", [("all", 2), ("first", 1)])
def test_prompts_first_erases_the_concepts_name_only(prompts, count, build, ctx):
    """``prompts="first"`` (the toy preset, as the reference code's single concept text) conditions
    every step on the first train prompt; ``"all"`` on each of them."""
    model, concept = tiny_model(), tiny_concept()
    method = build("esd", esd={"prompts": prompts})
    method.prepare(model, concept, ctx)
    assert len(method.c) == count
    assert torch.equal(method.c.hidden[0], encode_text_frozen(model, [concept.train[0]]).hidden[0])
