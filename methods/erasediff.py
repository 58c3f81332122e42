"""EraseDiff (Wu, Le, Hayat and Harandi, CVPR 2025, arXiv 2401.05779; JingWu321/EraseDiff).

Unlearning as a constrained problem: keep the denoising loss on the retain data D_r low, subject to the
forget data D_f sitting at a minimum of a forget objective f that drives them off their trajectory,

    min_θ  F(θ) = L_DM(θ; D_r)    s.t.   q(θ) = f(θ) − f(θ^K) ≤ 0
    f(θ) = ‖ε_θ(x_t, t, c_f) − sg[ε_θ(x_t, t, c')]‖²       (the code: the forget images remapped to c')
    f(θ) = ‖ε_θ(x_t^u, t, c_f) − ε_u‖²,  ε_u ~ U(0, 1)      (``target="uniform"``: arXiv v1-v2's uniform noise)

x_t = add_noise(x0, ε, t) for a forget image x0 (the same x_t under c_f and c'), c_f a train prompt, c' the
pseudo prompt (``pseudo``, else the concept's anchor). Solved by BOME's first-order bi-level update (Liu et al.
2022, Algorithm 1), as the authors' code: each round

    1. θ^K: K passes of Adam on f over D_f from θ (the lower level), then θ restored;
    2. one pass of outer steps  θ ← θ − Adam(∇[F(θ) + λ q(θ)]),  q(θ) = f(θ) − f(θ^K), f(θ^K) a constant,

so each outer step is one loss, L(θ) = L_DM(θ; D_r) + λ (f(θ) − f(θ^K)), and erasediff+meta / +retain add their
terms to it. f(θ^K) (the mean forget loss of the last inner pass) changes q's value, not its gradient; the inner
steps still act on the outer update, because they step the outer optimizer (the weights are restored, Adam's
moments are not), as the reference scripts share one ``torch.optim.Adam``. Under +meta, which makes its own
optimizer, the inner steps have an Adam of their own. A round is ⌈forget_images / batch_size⌉ outer steps (one
pass over D_f, the code's ``len(forget_dl)``); trained weights: ESD's sets (the code's ``noxattn`` is ESD's ``u``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from relearnbench import seeds
from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import add_noise, denoising_loss, encode_text_frozen, loss_target, predict, sample_timesteps
from relearnbench.methods.common import Encoded, encode_set, trainable, training_prompts


class EraseDiff(LossMethod):
    """EraseDiff (Wu et al. 2024): retain loss, forget constraint, first-order bi-level update."""

    @dataclass(frozen=True)
    class Config:
        target: Literal["remap", "uniform"] = "remap"  # f: remap to sg[ε_θ(x_t, c')] (the code), or uniform noise
        pseudo: str = ""  # c': the prompt the forget images are remapped to ("" = the concept's anchor)
        lam: float = 1.0  # λ, weight of the constraint q = f(θ) − f(θ^K) in the outer loss
        inner_steps: int = 2  # K: passes of Adam on f over the forget data that give θ^K (0 = none, f(θ^K) = 0)
        train: Literal["u", "x", "f"] = "u"  # trained: all but cross-attention (noxattn), cross-attention, all
        steps: int = 160  # outer steps
        lr: float = 1e-5  # Adam learning rate (inner and outer)
        batch_size: int = 16  # forget images (and as many retain images) per step
        forget_images: int = 64  # forget images encoded once (D_f)
        retain_images: int = 64  # train_related + train_unrelated images encoded once (D_r)
        prompts: Literal["all", "first"] = "all"  # forget images of every train prompt, or of the first (the name)
        max_grad_norm: float = 0.0  # gradient clipping (0 = none, as the reference SD scripts)

    config_name = "erasediff"
    version = "1"

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        c = self.config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.forget, self.retain = forget_and_retain(model, concept, ctx, c)
        self.pseudo = encode_text_frozen(model, [c.pseudo or concept.anchor]).to(model.unet.device)
        self.round = math.ceil(len(self.forget) / c.batch_size)  # outer steps a round: one pass over D_f
        self.f_K = torch.zeros(())  # f(θ^K) of the current round
        named = trainable(model.unet, c.train)
        self.params = [p for _, p in named]
        return named

    def optimizer(self, params: list):
        """The outer Adam, kept: the inner passes step it too, as the reference code's single optimizer."""
        self.opt = super().optimizer(params)
        return self.opt

    def release(self) -> None:
        self.forget = self.retain = self.pseudo = self.f_K = self.params = self.opt = None

    def forget_loss(self, model: Model, x0: torch.Tensor, cf, g: torch.Generator) -> torch.Tensor:
        """f(θ) on one batch of forget images ``x0`` captioned ``cf``."""
        if self.config.target == "remap":
            return remap_loss(model, x0, cf, self.pseudo, g)
        t = sample_timesteps(model, x0.shape[0], g)
        eps = torch.rand(x0.shape, generator=g).to(x0.device)  # ε_u ~ U(0, 1)
        return F.mse_loss(predict(model.unet, add_noise(model, x0, eps, t), t, cf), loss_target(model, x0, eps, t))

    def lower_level(self, model: Model) -> torch.Tensor:
        """θ^K from θ by K passes of Adam on f, θ restored; returns f(θ^K), the last pass's mean forget loss."""
        c, g = self.config, self.generator
        if c.inner_steps <= 0:
            return torch.zeros(())
        if getattr(self, "opt", None) is None:  # under +meta: the wrapper's optimizer is not ours to step
            self.opt = torch.optim.Adam(self.params, lr=c.lr)
        theta = [p.detach().clone() for p in self.params]
        for _ in range(c.inner_steps):
            total = 0.0
            for x0, cf in self.forget.batches(self.round, c.batch_size, g):
                self.opt.zero_grad(set_to_none=True)
                loss = self.forget_loss(model, x0, cf, g)
                loss.backward()
                self.opt.step()
                total += loss.item()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, p0 in zip(self.params, theta):
                p.copy_(p0)
        return torch.tensor(total / self.round)

    def loss(self, model: Model, step: int) -> torch.Tensor:
        c, g = self.config, self.generator
        if step % self.round == 0:
            self.f_K = self.lower_level(model)
        x0, cf = self.forget.batch(c.batch_size, g)
        q = self.forget_loss(model, x0, cf, g) - self.f_K.to(x0.device)  # q(θ) = f(θ) − f(θ^K)
        xr, cr = self.retain.batch(c.batch_size, g)
        return denoising_loss(model, xr, cr, generator=g) + c.lam * q  # F(θ) + λ q(θ)


def remap_loss(model: Model, x0: torch.Tensor, cf, pseudo, g: torch.Generator) -> torch.Tensor:
    """‖ε_θ(x_t, t, c_f) − sg[ε_θ(x_t, t, c')]‖²: forget images ``x0`` captioned ``cf`` remapped to the one
    conditioning ``pseudo`` (c'), both predictions at the same x_t (t, then ε, drawn from ``g``)."""
    t = sample_timesteps(model, x0.shape[0], g)
    x_t = add_noise(model, x0, torch.randn(x0.shape, generator=g).to(x0.device), t)
    with torch.no_grad():
        target = predict(model.unet, x_t, t, pseudo.expand(x0.shape[0]))
    return F.mse_loss(predict(model.unet, x_t, t, cf), target)


def forget_and_retain(model: Model, concept: Concept, ctx: Context, c) -> tuple[Encoded, Encoded]:
    """D_f (``c.forget_images`` of the train prompts, ``c.prompts``) and D_r (``c.retain_images`` of the train
    benign prompts), encoded once."""
    forget = encode_set(model, concept, ctx, training_prompts(concept, c.prompts), c.forget_images, seed=ctx.seed)
    retain = encode_set(model, concept, ctx, concept.train_benign, c.retain_images,
                        seed=seeds.of(ctx.seed, "retain-data"))
    return forget, retain
