"""SalUn: Saliency Unlearning (Fan et al., ICLR 2024, arXiv 2310.12508), its Stable Diffusion recipe.

A weight saliency mask m keeps the fraction of UNet weights where the forget loss is steepest,

    m = 1[ |∇_θ ℓ_f(θ)| ≥ top-k threshold ],  ℓ_f = −‖ε − ((1+w) ε_θ(x_t, c_f) − w ε_θ(x_t, ∅))‖²

over the forget images (w = 7.5 as the authors), and only those weights move. The training loss
remaps the forget concept to a pseudo prompt c' on the forget images and keeps the retain set:

    L(θ) = ‖ε_θ(x_t, t, c_f) − sg[ε_θ(x_t, t, c')]‖² + α L_DM(θ; D_r)

c' is the concept's anchor (as the NSFW script maps "nude" to "wearing clothes") or, with
``remap="unrelated"``, a random train_unrelated prompt per image (the class-wise random-label
variant). The forget images are of every train prompt or (``prompts="first"``) of the first, the
concept's name, as the NSFW recipe's one prompt; the retain set is of the train benign prompts.
``captions`` gives a concept the recipe's own captions instead (the NSFW script: forget images of
"a photo of a nude person", c' and the retain images "a photo of a person wearing clothes"). The
mask keeps the largest gradient magnitudes, as the paper and the authors' mask script (which ranks
the negated magnitudes in ascending order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from relearnbench import seeds
from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import add_noise, denoising_loss, encode_text_frozen, guide, predict, sample_timesteps
from relearnbench.errors import UserError
from relearnbench.methods.common import encode_set, trainable, training_prompts


class SalUn(LossMethod):
    """Saliency Unlearning (Fan et al. 2024): masked remapping loss plus retain loss."""

    @dataclass(frozen=True)
    class Config:
        train: Literal["f", "x"] = "f"  # parameters eligible for the mask: f = all, x = cross-attention only
        mask_fraction: float = 0.5  # share of those weights kept by the saliency mask (1.0 = no mask)
        mask_guidance: float = 7.5  # w in the mask's guided forget loss
        remap: Literal["anchor", "unrelated"] = "anchor"  # c': the concept's anchor, or random unrelated prompts
        alpha: float = 0.1  # α, weight of the retain denoising loss
        steps: int = 1000  # training steps
        lr: float = 1e-5  # Adam learning rate
        batch_size: int = 8  # forget images (and as many retain images) per step
        forget_images: int = 64  # forget images encoded once (the mask is computed over all of them)
        prompts: Literal["all", "first"] = "all"  # forget images of every train prompt, or of the first (the name)
        retain_images: int = 64  # train_related + train_unrelated images encoded once
        max_grad_norm: float = 0.0  # gradient clipping (0 = none, as the reference code)
        # "concept=forget caption|remap caption": that concept's forget images are of the first caption, and c'
        # and its retain images of the second (the authors' NSFW recipe), instead of its prompts and anchor
        captions: tuple[str, ...] = ()

    config_name = "salun"
    version = "1"

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        c = self.config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        recipe = self.recipe(concept)
        forget = [recipe[0]] if recipe else training_prompts(concept, c.prompts)
        self.forget = encode_set(model, concept, ctx, forget, c.forget_images, seed=ctx.seed)
        retain = [recipe[1]] if recipe else concept.train_benign
        self.retain = encode_set(model, concept, ctx, retain, c.retain_images,
                                 seed=seeds.of(ctx.seed, "salun-retain-data"))
        device = model.unet.device
        self.uncond = encode_text_frozen(model, [""]).to(device)
        pseudo = [recipe[1]] if recipe else [concept.anchor] if c.remap == "anchor" else list(concept.train_unrelated)
        self.pseudo = encode_text_frozen(model, pseudo).to(device)
        named = trainable(model.unet, "f" if c.train == "f" else "x")
        self.masks = self._saliency(model, [p for _, p in named])
        return named

    def recipe(self, concept: Concept) -> tuple[str, str] | None:
        """(forget caption, remap caption) that ``captions`` gives this concept, or None."""
        for item in self.config.captions:
            name, eq, pair = item.partition("=")
            forget, bar, remap = pair.partition("|")
            if not eq or not bar or not forget.strip() or not remap.strip():
                raise UserError(f"salun.captions: expected 'concept=forget caption|remap caption', got {item!r}")
            if name.strip() == concept.name:
                return forget.strip(), remap.strip()
        return None

    def _saliency(self, model: Model, params: list) -> list:
        """Boolean masks, one per parameter: the top ``mask_fraction`` of |∇ ℓ_f| over all of them."""
        c = self.config
        if c.mask_fraction >= 1.0:
            return []
        grads = [torch.zeros_like(p) for p in params]
        for p in params:
            p.requires_grad_(True)
        for idx in torch.arange(len(self.forget), device=self.forget.x0.device).split(c.batch_size):
            x0, cf = self.forget.take(idx)
            t = sample_timesteps(model, x0.shape[0], self.generator)
            noise = torch.randn(x0.shape, generator=self.generator).to(x0.device)
            x_t = add_noise(model, x0, noise, t)
            guided = guide(predict(model.unet, x_t, t, self.uncond.expand(len(cf))), predict(model.unet, x_t, t, cf),
                         1 + c.mask_guidance)  # (1+w) ε(c) − w ε(∅)
            for acc, g in zip(grads, torch.autograd.grad(-F.mse_loss(noise, guided), params, allow_unused=True)):
                if g is not None:
                    acc += g
        return top_fraction([g.abs() for g in grads], c.mask_fraction)

    def loss(self, model: Model, step: int) -> torch.Tensor:
        g, n = self.generator, self.config.batch_size
        x0, cf = self.forget.batch(n, g)
        t = sample_timesteps(model, x0.shape[0], g)
        x_t = add_noise(model, x0, torch.randn(x0.shape, generator=g).to(x0.device), t)
        pseudo = self.pseudo[torch.randint(len(self.pseudo), (x0.shape[0],), generator=g).to(x0.device)]
        with torch.no_grad():
            target = predict(model.unet, x_t, t, pseudo)
        forget = F.mse_loss(predict(model.unet, x_t, t, cf), target)
        xr, cr = self.retain.batch(n, g)
        return forget + self.config.alpha * denoising_loss(model, xr, cr, generator=g)

    def release(self) -> None:
        self.forget = self.retain = self.masks = self.uncond = self.pseudo = None

    def edit_grads(self, params: list) -> None:
        for p, m in zip(params, self.masks):
            if p.grad is not None:
                p.grad.mul_(m)


def top_fraction(scores: list[torch.Tensor], fraction: float) -> list[torch.Tensor]:
    """Masks keeping the largest ``fraction`` of all the scores together (one threshold for all)."""
    flat = torch.cat([s.flatten() for s in scores]).float().cpu()
    k = max(1, int(round(flat.numel() * (1 - fraction))))  # the k-th smallest is the threshold
    threshold = torch.kthvalue(flat, k).values.item()
    return [s > threshold for s in scores]
