"""EraseDiff: each outer step's loss is L_DM(θ; D_r) + λ (f(θ) − f(θ^K)) computed here by hand from raw UNet calls;
the lower level's K passes step the shared Adam and hand the weights back untouched; only the trained set moves and
the forget prompt's prediction is pulled onto the pseudo prompt's."""

import torch
import torch.nn.functional as F

from relearnbench.diffusion import encode_text_frozen
from relearnbench.methods.common import trainable
from relearnbench.testing import tiny_concept, tiny_model

SMALL = dict(steps=4, batch_size=2, forget_images=4, retain_images=4, inner_steps=2, lr=1e-3)


def eps(model, x_t, t, c):
    return model.unet(x_t, t, encoder_hidden_states=c.hidden).sample


def by_hand(model, method, g, target):
    """The outer loss at the current weights, drawing as the method does: a forget batch, t, the forget noise, a
    retain batch, the retain noise, its t."""
    sched, forget, retain = model.scheduler, method.forget, method.retain
    idx = torch.randperm(len(forget), generator=g)[:2]
    x0, cf = forget.x0[idx], forget.texts[forget.index[idx]]
    t = torch.randint(0, 1000, (2,), generator=g)
    if target == "remap":
        noise = torch.randn(x0.shape, generator=g)
        x_t = sched.add_noise(x0, noise, t)
        with torch.no_grad():
            f = F.mse_loss(eps(model, x_t, t, cf), eps(model, x_t, t, method.pseudo.expand(2)))
    else:
        u = torch.rand(x0.shape, generator=g)  # the paper's uniform noise, in x_t and as the target
        with torch.no_grad():
            f = F.mse_loss(eps(model, sched.add_noise(x0, u, t), t, cf), u)
    idx = torch.randperm(len(retain), generator=g)[:2]
    xr, cr = retain.x0[idx], retain.texts[retain.index[idx]]
    noise = torch.randn(xr.shape, generator=g)
    tr = torch.randint(0, 1000, (2,), generator=g)
    with torch.no_grad():
        r = F.mse_loss(eps(model, sched.add_noise(xr, noise, tr), tr, cr), noise)
    return r, f


def test_the_outer_loss_is_retain_plus_lambda_times_the_constraint(build, ctx):
    for target in ("remap", "uniform"):
        model = tiny_model()
        method = build("erasediff", erasediff={**SMALL, "target": target, "lam": 0.7})
        for _, p in method.prepare(model, tiny_concept(), ctx):
            p.requires_grad_(True)
        method.loss(model, 0)  # step 0 opens a round: the lower level sets f(θ^K)
        f_K = method.f_K.item()
        assert f_K > 0
        g = torch.Generator()
        g.set_state(method.generator.get_state())
        r, f = by_hand(model, method, g, target)
        got = method.loss(model, 1)  # inside the round: no lower level, the same draws
        assert torch.allclose(got, r + 0.7 * (f - f_K), rtol=1e-5, atol=1e-6), (target, got, r, f, f_K)
        assert got.requires_grad
        method.release()


def test_the_lower_level_steps_the_shared_adam_and_restores_the_weights(build, ctx):
    model = tiny_model()
    method = build("erasediff", erasediff=SMALL)
    named = method.prepare(model, tiny_concept(), ctx)
    params = [p for _, p in named]
    for p in params:
        p.requires_grad_(True)
    opt = method.optimizer(params)
    before = [p.detach().clone() for p in params]
    f_K = method.lower_level(model)
    assert all(torch.equal(p, b) for p, b in zip(params, before)), "θ must be restored after θ^K"
    assert method.round == 2  # 4 forget images at batch 2: one pass is 2 steps
    assert {int(opt.state[p]["step"]) for p in params} == {2 * 2}  # K = 2 passes of 2 Adam steps, on the outer Adam
    assert all(p.grad is None for p in params)
    assert torch.isfinite(f_K) and f_K > 0
    method.release()


def test_only_the_trained_set_moves_and_the_concept_goes_to_the_pseudo_prompt(build, ctx):
    model, concept = tiny_model(), tiny_concept()
    c = encode_text_frozen(model, [concept.train[0]] * 4)
    c_pseudo = encode_text_frozen(model, [concept.anchor] * 4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    x_t = model.scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), t)

    def gap():
        with torch.no_grad():
            return (eps(model, x_t, t, c) - eps(model, x_t, t, c_pseudo)).norm()

    start, weights = gap(), {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    build("erasediff", erasediff={**SMALL, "steps": 20, "lam": 5.0}).unlearn(model, concept, ctx)
    moved = {n for n, p in model.unet.named_parameters() if not torch.equal(p, weights[n])}
    allowed = {n for n, _ in trainable(model.unet, "u")}
    assert moved and moved <= allowed and not any(".attn2." in n for n in moved)
    assert gap() < 0.7 * start
