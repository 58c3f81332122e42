"""Gradient diagnostics of the evaluated model: the two mechanisms meta-unlearning is credited with.

Meta-unlearning's objective, read to first order (Gao et al., arXiv 2410.12777),

    L_meta ≈ −L(θ; D_FT) + τ ‖g_FT‖² + ζ τ g_FTᵀ g_r,     g = ∇_θ L_DM(θ; D)

rewards (1) a small gradient of the denoising loss on the forget data, so a finetune on it moves
the model slowly, and (2) an obtuse angle between forget and retain gradients, so relearning the
concept hurts the benign concepts (self-destruct). On the model as it is at this stage:

    gradients.norm   = ‖g_f‖,              g_f = ∇_θ L̄_DM(θ; forget images, their captions)
    gradients.cosine = g_fᵀ g_r / (‖g_f‖ ‖g_r‖),   g_r the same on the benign (related + unrelated) images

θ is every UNet weight (what the ``ft`` attack trains). L̄ averages the denoising loss over a fixed
set of timesteps and batches with fixed noise, so two stages or two models are measured on exactly
the same terms. Per-timestep norms and cosines go into the score's info. The data are what the
attacker would finetune on: ``relearnbench.data.images_for`` from the concept's attack-data source.
No direction: neither a larger nor a smaller value is better in itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from relearnbench import seeds
from relearnbench.api import Metric, Score


def flat_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Cosine between two gradients given as lists of per-parameter tensors."""
    return flat_dot(a, b) / math.sqrt(flat_dot(a, a) * flat_dot(b, b) + 1e-300)


def gradient(model, params: list[torch.Tensor], x0: torch.Tensor, c: torch.Tensor, t: int,
             seed: int) -> list[torch.Tensor]:
    """∇_θ L_DM(θ; x0, c) at timestep ``t`` for every item, with noise drawn from ``seed``."""
    from relearnbench.diffusion import denoising_loss

    g = torch.Generator().manual_seed(seed)
    tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=model.unet.device)
    loss = denoising_loss(model, x0, c, generator=g, t=tt)
    return list(torch.autograd.grad(loss, params))


class Gradients(Metric):
    """Forget-loss gradient norm and forget/retain gradient cosine of the UNet."""

    @dataclass(frozen=True)
    class Config:
        timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)  # the fixed timesteps L̄ averages over
        batches: int = 2  # batches of each data set per timestep
        batch_size: int = 8  # images per batch (forget and retain alike)
        data_seed: int = 0  # added to the run seed for the images and the noise: fixed across stages

    config_name = "gradients"
    version = "1"

    def compute(self, ev) -> list[Score]:
        from relearnbench.data import images_for
        from relearnbench.diffusion import encode_images, encode_text_frozen

        c, model, concept = self.config, ev.model, ev.concept
        seed = seeds.of(ev.ctx.seed, "gradients", c.data_seed)
        n = c.batches * c.batch_size

        def data(prompts, offset):
            per_prompt = math.ceil(n / len(prompts))
            images, captions = images_for(prompts, per_prompt, concept, model, ev.ctx, seed=seed + offset)
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + offset))[:n]
            x0 = encode_images(model, images[order])
            cond = encode_text_frozen(model, [captions[i] for i in order.tolist()])
            return x0.split(c.batch_size), cond.split(c.batch_size)

        forget = data(concept.forget_texts, 1)
        retain = data(list(concept.benign) or concept.forget_texts, 2)

        params = [p for p in model.unet.parameters() if p.is_floating_point()]
        was = [p.requires_grad for p in params]
        total_f = [torch.zeros_like(p) for p in params]
        total_r = [torch.zeros_like(p) for p in params]
        by_t = []
        try:
            for p in params:
                p.requires_grad_(True)
            for t in ev.ctx.track(c.timesteps, "gradients", total=len(c.timesteps)):
                g_f = [torch.zeros_like(p) for p in params]
                g_r = [torch.zeros_like(p) for p in params]
                for b in range(c.batches):
                    noise_seed = seeds.of(seed, "gradients-noise", t, b)  # forget and retain batches share it
                    for acc, (x0, cond) in ((g_f, forget), (g_r, retain)):
                        for a, g in zip(acc, gradient(model, params, x0[b], cond[b], t, noise_seed)):
                            a.add_(g, alpha=1 / c.batches)
                by_t.append((t, math.sqrt(flat_dot(g_f, g_f)), cosine(g_f, g_r)))
                for tot, acc in ((total_f, g_f), (total_r, g_r)):
                    for a, g in zip(tot, acc):
                        a.add_(g, alpha=1 / len(c.timesteps))
                del g_f, g_r
        finally:
            for p, w in zip(params, was):
                p.requires_grad_(w)

        norm_f, norm_r = math.sqrt(flat_dot(total_f, total_f)), math.sqrt(flat_dot(total_r, total_r))
        cos = cosine(total_f, total_r)
        info = {"timesteps": list(c.timesteps), "batches": c.batches, "batch_size": c.batch_size,
                "n_params": sum(p.numel() for p in params), "retain_norm": norm_r,
                "dot": flat_dot(total_f, total_r),
                "norm_by_t": {str(t): v for t, v, _ in by_t}, "cosine_by_t": {str(t): v for t, _, v in by_t}}
        m = n * len(c.timesteps)
        return [Score("gradients.norm", norm_f, n=m, info=info), Score("gradients.cosine", cos, n=m, info=info)]
