"""Inpainting probe (Lu et al. 2025, "When Are Concepts Erased From Diffusion Models?", NeurIPS;
kevinlu4588/WhenAreConceptsErased, ``InpaintingProbe``): mask the centre of an image of the concept and
let the unlearned model regenerate it from its forget prompt, around the part left visible. No training,
no prompt search, and no inpainting weights: the known region is pasted back, re-noised, after every step,

    x_t' ← m ⊙ x_t' + (1 − m) ⊙ add_noise(x0, ε, t'),   and x0 itself after the last step,

with m = 1 inside a centred square of side a (a share of the image side) and ε the image's initial noise.
This is what diffusers' StableDiffusionInpaintPipeline does when its UNet has 4 input channels, which is how
the authors ran it on erased UNets; RePaint (Lugmayr et al. 2022) adds resampling jumps, not done here. It
starts from pure noise (the pipeline's strength 1).

The curve is ASR against a, recorded as ``post@N`` with N = 1000 · a (per mille): 500 is the authors'
setting (a 256-pixel square on 512-pixel images); 0 hands back the source through the VAE; 1000 masks
everything, which is plain sampling.

Control (``inpaint_benign``): the same probe on the concept's benign images, as for ``completion``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from relearnbench.api import Context, Model
from relearnbench.attacks.completion import Completion
from relearnbench.diffusion import add_noise, generate
from relearnbench.evaluate import SampleConfig


def centre_mask(side: float, h: int) -> torch.Tensor:
    """m [1, 1, h, h]: 1 inside the centred square of side round(side · h) latent pixels, 0 elsewhere."""
    k = round(side * h)
    m = torch.zeros(1, 1, h, h)
    lo = (h - k) // 2
    m[..., lo:lo + k, lo:lo + k] = 1
    return m


def paste_known(model: Model, mask: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor):
    """The per-step hook of ``generate``: the known region (mask 0) of latents ``x0`` [N, C, h, w], noised
    with each image's ε to the step's new timestep, replaces the model's; after the last step, x0 itself."""
    def hook(x, t, t_next, rows):
        known = x0[rows].to(x.device)
        if t_next is not None:
            known = add_noise(model, known, noise[rows].to(x.device), torch.full((len(rows),), t_next, device=x.device))
        m = mask.to(x.device)
        return m * x + (1 - m) * known
    return hook


class Inpaint(Completion):
    """inpainting: the unlearned model fills a masked centre of an image of the concept (Lu et al. 2025)"""

    @dataclass(frozen=True)
    class Config(Completion.Config):
        curve: tuple[int, ...] = (0, 250, 500, 750, 1000)  # mask sides evaluated, per mille of the image side

    config_name = "inpaint"
    version = "2"  # 2: both guidance branches in one UNet call (diffusion.denoise: same math, other rounding)

    def probe(self, model: Model, jobs, noise, x0, side: float, sc: SampleConfig, ctx: Context) -> torch.Tensor:
        hook = paste_known(model, centre_mask(side, x0.shape[-1]), x0, noise)
        return generate(model, jobs, noise, steps=sc.steps, on_step=hook, batch_size=sc.batch_size,
                        progress=ctx.progress)
