"""ScissorHands (Wu and Harandi, ECCV 2024, arXiv 2401.06187; JingWu321/Scissorhands), its Stable Diffusion code.

Trim, then repair. The trim scores every UNet weight θ_j by its connection sensitivity on the forget data (SNIP,
Lee et al. 2019), summed over a few forget batches B,

    s_j = | θ_j · Σ_B |∂ℓ_f(θ; B) / ∂θ_j| |,   ℓ_f = L_DM(θ; D_f)                    (the nudity script)
                                               ℓ_f = ‖ε − ((1+w) ε_θ(x_t, c_f) − w ε_θ(x_t, ∅))‖²   (``guided``)

keeps the weights below the ``sparsity`` quantile of all the scores together, and re-initialises the rest,
θ ← m ⊙ θ + (1 − m) ⊙ θ_init (kaiming-uniform or truncated-normal weights, zero biases; a norm's scale to one),
in the ``reinit_modules`` only (the reference code: the self-attention of two decoder blocks; empty = everywhere).
The repair then finetunes the trained weights, as the reference scripts (no mask, no projection):

    remap:   L(θ) = L_DM(θ; D_r) + λ ‖ε_θ(x_t, t, c_f) − sg[ε_θ(x_t, t, c')]‖²         (the nudity script)
    ascent:  L(θ) = L_DM(θ; D_r) − λ L_DM(θ; D_f)                                      (the class script)

D_f: images of the train prompts, D_r: of the train benign prompts, c': ``pseudo`` or the concept's anchor. The
paper's repair projects the gradient GEM-style; the SD code carries the projection but never calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

import torch

from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import add_noise, denoising_loss, encode_text_frozen, guided, sample_timesteps
from relearnbench.errors import UserError
from relearnbench.methods.common import trainable
from relearnbench.methods.erasediff import forget_and_retain, remap_loss


class ScissorHands(LossMethod):
    """ScissorHands (Wu and Harandi 2024): SNIP-trimmed weights re-initialised, then a repair finetune."""

    @dataclass(frozen=True)
    class Config:
        sparsity: float = 0.995  # share of weights kept: the top 1 − sparsity by connection sensitivity are trimmed
        snip_batches: int = 10  # forget batches the sensitivity sums |gradient| over (the code's prune_num)
        snip_loss: Literal["denoise", "guided"] = "denoise"  # ℓ_f: the denoising loss, or the guided one (w below)
        snip_guidance: float = 7.5  # w of the guided ℓ_f
        reinit: Literal["kaiming", "normal"] = "kaiming"  # trimmed weights: kaiming-uniform, or trunc. normal std .02
        # UNet parameter-name prefixes or fnmatch patterns where trimmed weights are re-initialised (empty = all)
        reinit_modules: tuple[str, ...] = ()
        repair: Literal["remap", "ascent"] = "remap"  # repair's forget term: remap to c', or gradient ascent
        lam: float = 0.1  # λ, weight of the repair's forget term
        pseudo: str = ""  # c' of the remap ("" = the concept's anchor)
        train: Literal["u", "x", "f"] = "f"  # weights the repair trains: all but cross-attention, cross-attention, all
        steps: int = 100  # repair steps
        lr: float = 1e-5  # Adam learning rate
        batch_size: int = 16  # forget images (and as many retain images) per step, and per sensitivity batch
        forget_images: int = 64  # forget images encoded once (D_f)
        retain_images: int = 64  # train_related + train_unrelated images encoded once (D_r)
        prompts: Literal["all", "first"] = "all"  # forget images of every train prompt, or of the first (the name)
        max_grad_norm: float = 0.0  # gradient clipping (0 = none, as the reference SD scripts)

    config_name = "scissorhands"
    version = "1"

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        c = self.config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.forget, self.retain = forget_and_retain(model, concept, ctx, c)
        device = model.unet.device
        self.pseudo = encode_text_frozen(model, [c.pseudo or concept.anchor]).to(device)
        self.uncond = encode_text_frozen(model, [""]).to(device)
        self.trim(model, self.sensitivity(model))
        return trainable(model.unet, c.train)

    def release(self) -> None:
        self.forget = self.retain = self.pseudo = self.uncond = None

    def sensitivity(self, model: Model) -> dict[str, torch.Tensor]:
        """s_j = |θ_j · Σ_B |∇ℓ_f(B)|_j| of every UNet weight (0 where ℓ_f does not reach)."""
        c, g = self.config, self.generator
        named = list(model.unet.named_parameters())
        grads = {n: torch.zeros_like(p) for n, p in named}
        was = [p.requires_grad for _, p in named]
        model.unet.requires_grad_(True)
        for _ in range(c.snip_batches):
            x0, cf = self.forget.batch(c.batch_size, g)
            if c.snip_loss == "denoise":
                loss = denoising_loss(model, x0, cf, generator=g)
            else:
                t = sample_timesteps(model, x0.shape[0], g)
                noise = torch.randn(x0.shape, generator=g).to(x0.device)
                eps = guided(model.unet, add_noise(model, x0, noise, t), t, self.uncond, cf, 1 + c.snip_guidance)
                loss = torch.nn.functional.mse_loss(noise, eps)  # ‖ε − ((1+w) ε(c) − w ε(∅))‖²
            for (n, _), d in zip(named, torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)):
                if d is not None:
                    grads[n] += d.abs()
        for (_, p), w in zip(named, was):
            p.requires_grad_(w)
        return {n: (grads[n] * p.detach()).abs() for n, p in named}

    def trim(self, model: Model, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Re-initialise the weights scoring above the ``sparsity`` quantile (of every score) in the
        ``reinit_modules``; returns the masks of the weights re-initialised, by parameter name."""
        c = self.config
        flat = torch.cat([s.flatten() for s in scores.values()]).float().cpu()
        threshold = torch.kthvalue(flat, max(1, int(c.sparsity * flat.numel()))).values.item()  # k-th smallest
        where = [(n, p) for n, p in model.unet.named_parameters() if reinitialised(n, c.reinit_modules)]
        if not where:
            raise UserError(f"scissorhands.reinit_modules={list(c.reinit_modules)} names no UNet parameter of "
                            f"{model.name} (a prefix such as up_blocks.1.attentions.1.transformer_blocks.0.attn1. "
                            f"or a pattern such as up_blocks.*.attn1.*)")
        masks = {}
        with torch.no_grad():
            for n, p in where:
                pruned = scores[n] > threshold
                if pruned.any():
                    p.copy_(torch.where(pruned, self.initial(n, p), p))
                masks[n] = pruned
        return masks

    def initial(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """A fresh draw for ``p``: the reference code's initialiser for a weight matrix or kernel, zero for a bias,
        one for a norm's scale (the values torch gives a new layer)."""
        g = self.generator
        fresh = torch.empty(p.shape, dtype=torch.float32)
        if name.endswith("bias"):
            fresh.zero_()
        elif p.dim() < 2:
            fresh.fill_(1.0)
        elif self.config.reinit == "kaiming":
            torch.nn.init.kaiming_uniform_(fresh, a=0, nonlinearity="relu", generator=g)
        else:
            torch.nn.init.trunc_normal_(fresh, std=0.02, generator=g)  # timm's trunc_normal_(std=.02)
        return fresh.to(p.device, p.dtype)

    def loss(self, model: Model, step: int) -> torch.Tensor:
        c, g = self.config, self.generator
        x0, cf = self.forget.batch(c.batch_size, g)
        if c.repair == "remap":
            forget = remap_loss(model, x0, cf, self.pseudo, g)
        else:
            forget = -denoising_loss(model, x0, cf, generator=g)
        xr, cr = self.retain.batch(c.batch_size, g)
        return denoising_loss(model, xr, cr, generator=g) + c.lam * forget


def reinitialised(name: str, modules) -> bool:
    """Whether parameter ``name`` lies in ``modules`` (prefixes or fnmatch patterns; none = every parameter)."""
    return not modules or any(name.startswith(m) or fnmatchcase(name, m) for m in modules)
