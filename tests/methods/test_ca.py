"""Concept Ablation: the concept's prediction is pulled onto the anchor's, on images of the anchor, and only
the published parameter group moves."""

import dataclasses

import torch

from relearnbench.diffusion import encode_text_frozen, noised, predict
from relearnbench.methods.ca import parameter_group
from relearnbench.testing import tiny_concept, tiny_model

SMALL = dict(steps=3, batch_size=2, images=4, weight_decay=0.0)


def test_model_based_loss_is_zero_when_the_concept_is_its_anchor(build, ctx):
    """sg[ε_θ(x_t, c*)] against ε_θ(x_t, c) with c = c*: nothing to ablate. The noise target does not vanish."""
    concept = dataclasses.replace(tiny_concept(), train=("a shape",))  # the train prompt is the anchor itself
    model = tiny_model()
    ca = build("ca", ca=SMALL)
    ca.prepare(model, concept, ctx)
    assert ca.loss(model, 0).item() == 0.0
    noise = build("ca", ca={**SMALL, "loss": "noise"})
    noise.prepare(model, concept, ctx)
    assert noise.loss(model, 0).item() > 1e-3


def test_the_concept_moves_towards_the_anchor_and_only_kv_trains(build, ctx):
    model = tiny_model()
    concept = tiny_concept()
    c = encode_text_frozen(model, ["a triangle"] * 4)
    c_star = encode_text_frozen(model, [concept.anchor] * 4)
    g = torch.Generator().manual_seed(0)
    x_t, t, _ = noised(model, torch.randn(4, 4, 8, 8, generator=g), g)

    def gap():
        with torch.no_grad():
            return (predict(model.unet, x_t, t, c) - predict(model.unet, x_t, t, c_star)).norm()

    before, weights = gap(), {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    build("ca", ca={**SMALL, "steps": 20, "lr": 1e-2, "train": "kv"}).unlearn(model, concept, ctx)
    moved = {n for n, p in model.unet.named_parameters() if not torch.equal(p, weights[n])}
    assert moved == {n for n, _ in parameter_group(model.unet, "kv")}
    assert moved and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in moved)
    assert gap() < 0.5 * before


def test_parameter_groups_are_the_reference_codes():
    unet = tiny_model().unet
    names = {g: {n for n, _ in parameter_group(unet, g)} for g in ("kv", "attn", "f")}
    assert names["kv"] < names["attn"] < names["f"] == {n for n, _ in unet.named_parameters()}
    assert any(".attn1.to_q." in n for n in names["attn"]) and not any("conv" in n for n in names["attn"])
