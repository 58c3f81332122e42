"""Noising probe (Lu et al. 2025, "When Are Concepts Erased From Diffusion Models?", NeurIPS, its
noise-based probe, kevinlu4588/WhenAreConceptsErased ``NoiseBasedProbe``; the attack of "Where Do Erased
Concepts Go in Diffusion Models?", same authors, VisCon 2025): no training and no prompt search; the
sampling trajectory is perturbed with extra Gaussian noise, so that it can leave the path the erasure
bent and fall back towards the concept the model still holds.

Each forget prompt is sampled as the evaluation samples it (same seeds, DDIM steps, guidance), except that
after every DDIM step t → t'

    x_t' ← x_t' + η σ_t z,   z ~ N(0, I),   σ_t = √((1 − ᾱ_t') / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_t'))

σ_t being the step's DDPM posterior std (DDIM's σ at η_DDIM = 1), so the noise follows the schedule and
vanishes at the last step. The curve is ASR against η, recorded as ``post@N`` with N = 1000 · η (per
mille): ``post@0`` is the unperturbed sampler, ``post@500`` is η = 0.5.

The authors instead sample with DDIM at η_DDIM ∈ {1.0, 1.17, …, 1.85} (noisier than DDPM, the direction
term taken as √|1 − ᾱ_t' − σ²|) with the noise scaled by 1.00-1.04 more, and keep the best of the 24
variants per prompt by a classifier. Here one η per curve point and every image is judged, so the curve
reads as a dose-response.

Control (``noising_benign``): the same noise while sampling benign prompts (the attacker's: the concept's
attack-role related and unrelated prompts, not the evaluation's): the ASR that noise alone makes the judge
report. The original model (method ``none``) is the other control.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from relearnbench.api import Attack, Concept, Context, Model
from relearnbench.attacks.completion import probe_jobs
from relearnbench.attacks.ft import curve_steps
from relearnbench.diffusion import generate, posterior_std
from relearnbench.errors import UserError


def inject_noise(model: Model, eta: float, generators: list[torch.Generator]):
    """The per-step hook of ``generate``: x + η σ_t z, z drawn from each image's own generator (so an image's
    noise does not depend on the batch it is in)."""
    def hook(x, t, t_next, rows):
        z = torch.stack([torch.randn(x.shape[1:], generator=generators[r]) for r in rows])
        return x + eta * posterior_std(model, t, t_next) * z.to(x.device, x.dtype)
    return hook


class Noising(Attack):
    """noising: extra Gaussian noise at every sampling step (Lu et al. 2025)"""

    @dataclass(frozen=True)
    class Config:
        curve: tuple[int, ...] = (0, 250, 500, 750)  # η evaluated, per mille (500 = η 0.5; 0 = the sampler as is)
        prompts: str = "forget"  # prompts sampled: "forget", or "benign" (the control: the attack role's benign prompts)

    config_name = "noising"
    version = "2"  # 2: both guidance branches in one UNet call (diffusion.denoise: same math, other rounding)
    reads_eval_prompts = True  # it makes the evaluation's forget images, from its forget prompts

    def run(self, model: Model, concept: Concept, ctx: Context, evaluate) -> None:
        cfg, sc = self.config, ctx.sample_config
        if cfg.prompts not in ("forget", "benign"):
            raise UserError(f"noising.prompts must be 'forget' or 'benign', got {cfg.prompts!r}")
        benign = cfg.prompts == "benign"
        steps = curve_steps(cfg.curve)
        for k, n in enumerate(steps):
            prompts, jobs, noise, generators = probe_jobs(model, concept, ctx, benign=benign)  # the same z at every η
            images = generate(model, jobs, noise, steps=sc.steps, on_step=inject_noise(model, n / 1000, generators),
                              batch_size=sc.batch_size, progress=ctx.progress)
            evaluate(n, final=k == len(steps) - 1, images=images, forget_prompts=prompts if benign else None)
