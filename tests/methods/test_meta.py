"""The meta-unlearning wrapper: order 2 differentiates through the inner steps (checked against
finite differences), order 1 subtracts the gradients at the finetuned copy, the switches and the
+retain control do what they say, and the simulated finetune reuses one buffer."""

import pytest
import torch

from relearnbench.diffusion import denoising_loss
from relearnbench.errors import UserError
from relearnbench.registry import METHODS
from relearnbench.testing import context, tiny_concept, tiny_model

pytestmark = pytest.mark.usefixtures("fakes")  # the dummy method, attack and metric

ALL_TERMS = dict(forget_ft=1.0, related_ft=1.0, unrelated_ft=1.0, related=1.0, unrelated=1.0)


def test_second_order_gradient_matches_finite_differences(build, ctx):
    """dJ/dθ along a random direction, J(θ) = Σ L(θ; D_r) − Σ L(θ_FT(θ); D), θ_FT two SGD steps of
    size τ = 1 (large, so that the inner steps' Jacobian matters): autograd through the inner steps
    agrees with central differences; the first-order approximation does not."""
    method = build("none+meta", meta=dict(order=2, tau=1.0, max_grad_norm=0.0, inner_steps=2, **ALL_TERMS))
    model = tiny_model()
    method.data = method._data(model, tiny_concept(), ctx)
    named = list(model.unet.named_parameters())
    params = [p.requires_grad_(True) for _, p in named]

    def J(second_order=True):
        method.generator = torch.Generator().manual_seed(3)  # the same batches, noise and t every time
        return method.objective(model, named, second_order=second_order)

    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)]
    norm = torch.sqrt(sum((x * x).sum() for x in v))
    v = [x / norm for x in v]
    along = lambda grads: sum((g * x).sum() for g, x in zip(grads, v)).item()  # noqa: E731
    exact = along(torch.autograd.grad(J(), params))
    first_order = along(torch.autograd.grad(J(second_order=False), params))
    eps = 3e-3
    with torch.no_grad():
        for p, x in zip(params, v):
            p.add_(eps * x)
    plus = J().item()
    with torch.no_grad():
        for p, x in zip(params, v):
            p.sub_(2 * eps * x)
    minus = J().item()
    fd = (plus - minus) / (2 * eps)
    assert abs(exact - fd) < 0.02 * abs(fd)
    assert abs(first_order - fd) > 0.2 * abs(fd)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_first_order_subtracts_the_forget_gradient_at_the_copy(sign, build, ctx, monkeypatch):
    """Only γ'_f on, no inner step (θ' = θ): the outer step ascends the held-out forget loss; the
    opposite weight descends it."""
    off = dict(related_ft=0.0, unrelated_ft=0.0, related=0.0, unrelated=0.0)
    method = build("none+meta", meta=dict(forget_ft=sign, inner_steps=0, steps=3, lr=1e-3, **off))
    monkeypatch.setattr(method, "release", lambda: None)  # keep the data to evaluate on
    model = tiny_model()
    method.unlearn(model, tiny_concept(), ctx)
    x0, c = method.data["forget_test"].take(torch.arange(len(method.data["forget_test"])))

    def loss(m):
        with torch.no_grad():
            return denoising_loss(m, x0, c, generator=torch.Generator().manual_seed(5)).item()

    assert (loss(model) - loss(tiny_model())) * sign > 0


@pytest.mark.parametrize("forward_batch", [0, 3])
def test_terms_evaluated_together_equal_each_term_alone(forward_batch, build, ctx):
    """The terms' batches go through the UNet together, ``forward_batch`` images per call at most (0:
    one call; 3: each batch of 2 alone): the calls' sum is Σ w·L of each batch evaluated alone with
    the same draws (the batches, then ε and t per batch, term after term)."""
    meta = dict(term_batches=2, batch_size=2, timesteps=(5, 50), forward_batch=forward_batch)
    method = build("none+meta", meta=dict(meta, **ALL_TERMS, retain=True))
    model = tiny_model()
    method.data = method._data(model, tiny_concept(), ctx)
    terms = [(0.5, method.data["related"]), (-2.0, method.data["forget_test"])]
    method.generator = torch.Generator().manual_seed(1)
    calls = list(method.losses(model, model.unet, terms))
    g = torch.Generator().manual_seed(1)
    alone = 0.0
    for w, data in terms:
        for x0, c in data.batches(2, 2, g):
            for t in (5, 50):
                alone += w * denoising_loss(model, x0, c, generator=g, t=torch.full((2,), t))
    assert len(calls) == (1 if forward_batch == 0 else 8)
    assert torch.allclose(sum(calls), alone, rtol=1e-5, atol=1e-6)


def test_retain_control_is_meta_without_its_meta_terms(build, ctx):
    weights = []
    for name, meta in (("esd+retain", {}), ("esd+meta", dict(forget_term=False, retain_diff=False)), ("esd+meta", {})):
        model = tiny_model()
        build(name, meta=meta).unlearn(model, tiny_concept(), ctx)
        weights.append(torch.cat([p.flatten() for p in model.unet.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_retain_control_refuses_meta_terms(build):
    with pytest.raises(UserError, match=r"esd\+retain"):
        build("esd+retain", meta=dict(forget_term=True))


@pytest.mark.parametrize("switch", ["forget_term", "retain_diff", "retain"])
def test_each_switch_changes_the_update(switch, build, ctx):
    weights = []
    for on in (True, False):
        model = tiny_model()
        build("esd+meta", meta={switch: on}).unlearn(model, tiny_concept(), ctx)
        weights.append(torch.cat([p.flatten() for p in model.unet.parameters()]))
    assert not torch.equal(weights[0], weights[1])


def test_simulated_finetune_reuses_one_buffer(build, ctx, monkeypatch):
    from diffusers import UNet2DConditionModel

    import relearnbench.methods.meta as meta

    copies = []
    deepcopy = meta.copy.deepcopy

    def counting(obj, *a, **k):
        if isinstance(obj, UNet2DConditionModel):
            copies.append(obj)
        return deepcopy(obj, *a, **k)

    monkeypatch.setattr(meta.copy, "deepcopy", counting)
    build("none+meta", meta=dict(steps=4, inner_steps=2)).unlearn(tiny_model(), tiny_concept(), ctx)
    assert len(copies) == 1


def test_closed_form_base_is_the_starting_point(build, ctx):
    """uce+meta: the UCE edit, then the meta objective; a vanishing outer step leaves UCE's weights."""
    edited, wrapped = tiny_model(), tiny_model()
    build("uce").unlearn(edited, tiny_concept(), ctx)
    build("uce+meta", meta=dict(steps=1, lr=1e-12, weight_decay=0.0)).unlearn(wrapped, tiny_concept(), ctx)
    for a, b in zip(edited.unet.parameters(), wrapped.unet.parameters()):
        assert torch.allclose(a, b, atol=1e-9)
    key = next(k for k in edited.unet.state_dict() if k.endswith("attn2.to_v.weight"))
    assert (wrapped.unet.state_dict()[key] - tiny_model().unet.state_dict()[key]).abs().max() > 1e-4


def test_wrapping_errors_are_clear(build):
    with pytest.raises(UserError, match="nothing to wrap"):
        build("dummy+meta")
    with pytest.raises(UserError, match="unknown wrapper"):
        build("esd+bogus")
    with pytest.raises(UserError, match=r"set meta\.steps and meta\.lr"):
        build("uce+meta", meta=dict(steps=0)).unlearn(tiny_model(), tiny_concept(), context(seed=0))


def test_wrapper_is_built_around_the_base():
    """The base with its own config, then the wrapper from meta.toml's table for that base, then --set."""
    from relearnbench.config import build

    m = build(METHODS, "uce+meta", "toy", {"uce": {"lamb": 0.5}})
    assert type(m.base).__name__ == "UCE" and m.base.config.lamb == 0.5
    assert (m.config.steps, m.config.related, m.config.inner_lr) == (60, 1.0, 1e-4)  # [toy.uce], then [toy]
    assert build(METHODS, "esd+meta", "toy", {"meta": {"related": 0.5}}).config.related == 0.5
    assert build(METHODS, "esd+retain", "toy", {}).describe()["class"] == "relearnbench.methods.meta.ESD_retain"


@pytest.mark.parametrize("scale", ["toy", "sd14"])
def test_order_two_moves_theta_as_far_as_order_one(scale, build, ctx):
    """At the default settings (τ = inner_lr·√N, inner clipping) order 2's simulated finetune moves θ about
    as far as order 1's AdamW steps; τ = inner_lr, the old default, moved it less than a tenth as far."""
    model, concept = tiny_model(), tiny_concept()
    keep = dict(inner_steps=3, inner_batch=4, forget_images=8, retain_images=4)
    if scale == "sd14":
        keep.update(inner_lr=1e-5)
    displacement = _benchmark("meta_displacement").displacement
    moved = {order: displacement(build("none+meta", meta=dict(keep, order=order)), model, concept, ctx)
             for order in (1, 2)}
    assert moved[2] > moved[1] / 10, moved
    assert moved[1] / 2 < moved[2] < 2 * moved[1], moved
    old = displacement(build("none+meta", meta=dict(keep, order=2, tau=build("none+meta").config.inner_lr)),
                       model, concept, ctx)
    assert old < moved[1] / 10


def _benchmark(name: str):
    """A script of benchmarks/ as a module (benchmarks/meta_displacement.py holds the displacement helper)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    loader = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def test_presets_name_the_weights(build):
    from relearnbench.config import build as resolve

    effective = resolve(METHODS, "esd-u-1+meta", "sd14", {})
    assert effective.config.preset == "authors-effective"
    assert effective.gammas() == dict(unrelated=0.1, related=0.01, forget_ft=0.01, related_ft=1.0, unrelated_ft=1.0)
    uce = resolve(METHODS, "uce+meta", "sd14", {})
    assert uce.gammas()["related"] == 0.1 and uce.config.steps == 100
    paper = resolve(METHODS, "esd-u-1+meta", "sd14", {"meta": {"preset": "paper"}}).gammas()
    assert paper["related"] == paper["related_ft"] and paper["unrelated"] == paper["unrelated_ft"]
    intended = resolve(METHODS, "esd-u-1+meta", "sd14", {"meta": {"preset": "authors-intended",
                                                                        "related_ft": 0.5}}).gammas()
    assert (intended["forget_ft"], intended["unrelated_ft"], intended["related_ft"]) == (0.1, 0.01, 0.5)
    with pytest.raises(UserError, match="authors-effective"):
        resolve(METHODS, "esd+meta", "sd14", {"meta": {"preset": "authors"}}).gammas()


# the published weights (methods/meta.toml's provenance; sail-sg/Meta-Unlearning scripts/esd_meta.sh and meta.sh pass
# --gamma2_1 three times: the code runs the last, 0.01, and γ2_2 = γ2_3 keep their default 1.0), as
# {base's row: (terms at θ, added; terms at θ_FT, subtracted)}, each term (weight, data)
PRESET_TERMS = {
    ("authors-effective", "none"): ({(0.1, "unrelated"), (0.01, "related")},
                                    {(-0.01, "forget_test"), (-1.0, "related"), (-1.0, "unrelated")}),
    ("authors-effective", "uce"): ({(0.1, "unrelated"), (0.1, "related")},
                                   {(-0.01, "forget_test"), (-1.0, "related"), (-1.0, "unrelated")}),
    ("authors-intended", "none"): ({(0.1, "unrelated"), (0.01, "related")},
                                   {(-0.1, "forget_test"), (-0.1, "related"), (-0.01, "unrelated")}),
    ("authors-intended", "uce"): ({(0.1, "unrelated"), (0.1, "related")},
                                  {(-0.1, "forget_test"), (-0.1, "related"), (-0.01, "unrelated")}),
    ("paper", "none"): ({(0.1, "unrelated"), (0.1, "related")},  # ζ form: the retain terms equal at θ and θ_FT
                        {(-0.1, "forget_test"), (-0.1, "related"), (-0.1, "unrelated")}),
}


@pytest.mark.parametrize("preset,base", PRESET_TERMS)
def test_terms_of_each_preset(preset, base, build, ctx):
    """Meta.terms(): which weight and sign goes with which data, at θ and at θ_FT, for each preset at the sd14
    scale (whose table sets no weight). The data sets are told apart by their sizes: 2 forget-train prompts whose
    5 images split 3 (finetune) / 2 (held out), 3 related and 4 unrelated prompts of 4 images each."""
    import dataclasses

    concept = dataclasses.replace(tiny_concept(), train_related=("a red diamond", "a green diamond", "a dotted diamond"),
                                  train_unrelated=("a square", "a cross", "a circle", "a yellow square"))
    method = build(f"{base}+meta", "sd14", meta=dict(preset=preset, forget_images=5, retain_images=4))
    method.prepare(tiny_model(), concept, ctx)
    names = {(2, 3): "forget_train", (2, 2): "forget_test", (3, 4): "related", (4, 4): "unrelated"}
    got = {at: sorted((w, names[len(d.texts), len(d.x0)]) for w, d in method.terms(at)) for at in ("theta", "ft")}
    method.release()
    theta, ft = PRESET_TERMS[preset, base]
    assert got == {"theta": sorted(theta), "ft": sorted(ft)}
    if (preset, base) != ("authors-effective", "none"):
        return
    # the switches drop exactly their terms (once: the same code for every preset)
    off = build(f"{base}+meta", "sd14", meta=dict(preset=preset, forget_images=5, retain_images=4, forget_term=False,
                                                   retain=False))
    off.prepare(tiny_model(), concept, ctx)
    assert off.terms("theta") == [] and sorted(w for w, _ in off.terms("ft")) == sorted(w for w, k in ft if k != "forget_test")
    off.release()
