"""ScissorHands: the trimmed weights are exactly those a direct SNIP computation here (|θ · Σ_B |∇ L_DM||, one
threshold over every UNet weight) ranks above the sparsity quantile, within the re-initialised modules; they get
fresh values (kaiming-uniform bounds, zero biases) and every other weight stays bit for bit; the repair loss is the
retain loss plus λ times the forget term, computed by hand."""

import copy
import math
from fnmatch import fnmatchcase

import pytest
import torch
import torch.nn.functional as F

from relearnbench.errors import UserError
from relearnbench.testing import tiny_concept, tiny_model

SMALL = dict(steps=2, batch_size=2, forget_images=4, retain_images=4, snip_batches=3, sparsity=0.9)
ATTN1 = "up_blocks.1.attentions.1.transformer_blocks.0.attn1."  # a prefix, as the [sd14] preset
DECODER_ATTN1 = "up_blocks.*.attn1.*"  # a pattern, as the [toy] preset


def eps(unet, x_t, t, c):
    return unet(x_t, t, encoder_hidden_states=c.hidden).sample


def snip_by_hand(unet, forget, scheduler, seed, batches, sparsity):
    """Pruned masks by name: |θ · Σ_B |∂L_DM/∂θ|| above the k-th smallest score, k = ⌊sparsity · N⌋."""
    g = torch.Generator().manual_seed(seed)
    names, params = zip(*unet.named_parameters())
    acc = [torch.zeros_like(p) for p in params]
    for _ in range(batches):
        idx = torch.randperm(len(forget), generator=g)[:2]
        x0, c = forget.x0[idx], forget.texts[forget.index[idx]]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        loss = F.mse_loss(eps(unet, scheduler.add_noise(x0, noise, t), t, c), noise)
        for a, d in zip(acc, torch.autograd.grad(loss, params, allow_unused=True)):
            if d is not None:
                a += d.abs()
    scores = [(a * p.detach()).abs() for a, p in zip(acc, params)]
    flat = torch.cat([s.flatten() for s in scores]).sort().values
    threshold = flat[int(sparsity * flat.numel()) - 1]
    return {n: s > threshold for n, s in zip(names, scores)}


@pytest.mark.parametrize("modules", [(), (ATTN1,), (DECODER_ATTN1,)], ids=["everywhere", "prefix", "pattern"])
def test_the_trim_is_snip_and_nothing_else_moves(build, ctx, modules):
    model = tiny_model()
    original = copy.deepcopy(model.unet).requires_grad_(True)
    method = build("scissorhands", scissorhands={**SMALL, "reinit_modules": modules})
    method.prepare(model, tiny_concept(), ctx)
    masks = snip_by_hand(original, method.forget, model.scheduler, ctx.seed, 3, 0.9)
    total = sum(m.numel() for m in masks.values())
    assert 0.09 * total < sum(int(m.sum()) for m in masks.values()) <= 0.1 * total + 1  # one threshold for all
    trimmed = dict(model.unet.named_parameters())
    seen = 0
    for n, p0 in original.named_parameters():
        p, m = trimmed[n].detach(), masks[n]
        if modules and not any(n.startswith(x) or fnmatchcase(n, x) for x in modules):
            m = torch.zeros_like(m)
        assert torch.equal(p[~m], p0.detach()[~m]), f"{n} moved outside the trimmed weights"
        if not m.any():
            continue
        seen += int(m.sum())
        if n.endswith("bias"):
            assert (p[m] == 0).all(), n
        elif p.dim() == 1:
            assert (p[m] == 1).all(), n
        else:
            bound = math.sqrt(6.0 / (p[0].numel()))  # kaiming uniform, gain √2, fan_in
            assert (p[m].abs() <= bound).all(), n
            assert (p[m] != p0.detach()[m]).float().mean() > 0.99, n
    assert seen > 0
    if modules:
        before = dict(original.named_parameters())
        moved = {n for n, p in model.unet.named_parameters() if not torch.equal(p, before[n])}
        assert moved and all(".attn1." in n and n.startswith("up_blocks.") for n in moved)
    method.release()


def test_reinit_modules_that_name_nothing_are_an_error(build, ctx):
    method = build("scissorhands", scissorhands={**SMALL, "reinit_modules": ("output_blocks.4.",)})
    with pytest.raises(UserError, match="names no UNet parameter"):
        method.prepare(tiny_model(), tiny_concept(), ctx)


@pytest.mark.parametrize("repair", ["remap", "ascent"])
def test_the_repair_loss_is_retain_plus_lambda_times_the_forget_term(build, ctx, repair):
    model = tiny_model()
    method = build("scissorhands", scissorhands={**SMALL, "repair": repair, "lam": 0.3})
    method.prepare(model, tiny_concept(), ctx)
    g = torch.Generator()
    g.set_state(method.generator.get_state())
    sched, unet, forget, retain = model.scheduler, model.unet, method.forget, method.retain
    idx = torch.randperm(len(forget), generator=g)[:2]
    x0, cf = forget.x0[idx], forget.texts[forget.index[idx]]
    with torch.no_grad():
        if repair == "remap":  # t, then ε; both predictions at the same x_t
            t = torch.randint(0, 1000, (2,), generator=g)
            x_t = sched.add_noise(x0, torch.randn(x0.shape, generator=g), t)
            f = F.mse_loss(eps(unet, x_t, t, cf), eps(unet, x_t, t, method.pseudo.expand(2)))
        else:  # − L_DM on the forget images: ε, then t
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, 1000, (2,), generator=g)
            f = -F.mse_loss(eps(unet, sched.add_noise(x0, noise, t), t, cf), noise)
        idx = torch.randperm(len(retain), generator=g)[:2]
        xr, cr = retain.x0[idx], retain.texts[retain.index[idx]]
        noise = torch.randn(xr.shape, generator=g)
        t = torch.randint(0, 1000, (2,), generator=g)
        r = F.mse_loss(eps(unet, sched.add_noise(xr, noise, t), t, cr), noise)
    got = method.loss(model, 0)
    assert torch.allclose(got, r + 0.3 * f, rtol=1e-5, atol=1e-6), (got, r, f)
    method.release()
