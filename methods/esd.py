"""ESD: Erased Stable Diffusion (Gandikota et al., ICCV 2023, arXiv 2303.07345).

The UNet ε_θ is finetuned so that, conditioned on the concept c, it predicts what the frozen
original ε* predicts with *negative* guidance away from c:

    L_ESD(θ) = ‖ ε_θ(x_t, t, c) − [ ε*(x_t, t, ∅) − η (ε*(x_t, t, c) − ε*(x_t, t, ∅)) ] ‖²

x_t is sampled by DDIM from the model being trained, conditioned on c at guidance 3, stopped at a
random step (the reference code's recipe), or (``xt="noise"``, ours) is a forget image's latent
noised to a random t, which is much cheaper. Variants by the parameters that train: ESD-u
(everything but cross-attention: erases the concept whatever the prompt), ESD-x (cross-attention
only: erases this wording of it), ESD-f (all); registered as ``esd-u-1``, ``esd-x-3``, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import Cond, add_noise, ddim_xt, encode_text_frozen, guided, predict, sample_timesteps
from relearnbench.methods.common import encode_set, frozen_copy, trainable, training_prompts


class ESD(LossMethod):
    """Erased Stable Diffusion (Gandikota et al. 2023)."""

    @dataclass(frozen=True)
    class Config:
        train: Literal["u", "x", "f"] = "u"  # trained: u = all but cross-attention, x = cross-attention, f = all
        eta: float = 1.0  # η, the negative guidance of the target
        steps: int = 1000  # training iterations
        lr: float = 1e-5  # Adam learning rate
        batch_size: int = 1  # forget prompts per step
        xt: Literal["sample", "noise"] = "sample"  # x_t: DDIM-sampled from the trained model, or noised forget images
        ddim_steps: int = 50  # DDIM schedule length that x_t is sampled on (xt=sample)
        start_guidance: float = 3.0  # classifier-free guidance when sampling x_t (xt=sample)
        images: int = 32  # forget images encoded once (xt=noise)
        prompts: Literal["all", "first"] = "all"  # erase every forget prompt, or the first (the concept's name)
        max_grad_norm: float = 0.0  # gradient clipping (0 = none, as the reference code)

    config_name = "esd"
    version = "2"  # 2: the two guidance branches in one UNet call (x_t and the target: same math, other rounding)

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        cfg_ = self.config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.teacher = frozen_copy(model)  # ε*: the frozen original
        self.uncond = encode_text_frozen(model, [""]).to(model.unet.device)
        # ESD erases one concept text; a full prompt ("a purple dotted triangle") would also push away
        # from what its other words add (purple, dotted), which benign prompts share
        texts = training_prompts(concept, cfg_.prompts)
        self.c = encode_text_frozen(model, texts).to(model.unet.device)
        if cfg_.xt == "noise":
            self.forget = encode_set(model, concept, ctx, texts, cfg_.images, seed=ctx.seed)
        return trainable(model.unet, cfg_.train)

    def release(self) -> None:
        self.teacher = self.forget = self.uncond = self.c = None

    def _xt(self, model: Model, c: Cond):
        """(x_t, t) for one step, with no graph: the target is built around them."""
        cfg_, g = self.config, self.generator
        if cfg_.xt == "noise":
            idx = torch.randint(len(self.forget), (len(c),), generator=g).to(c.device)
            x0 = self.forget.x0[idx]
            t = sample_timesteps(model, x0.shape[0], g)
            return add_noise(model, x0, torch.randn(x0.shape, generator=g).to(x0.device), t), t
        return ddim_xt(model, c, self.uncond, cfg_.ddim_steps, cfg_.start_guidance, g)

    def loss(self, model: Model, step: int) -> torch.Tensor:
        g = self.generator
        c = self.c[torch.randint(len(self.c), (self.config.batch_size,), generator=g).to(self.c.device)]
        x_t, t = self._xt(model, c)
        with torch.no_grad():
            target = guided(self.teacher, x_t, t, self.uncond, c, -self.config.eta)  # ε*(∅) − η (ε*(c) − ε*(∅))
        return F.mse_loss(predict(model.unet, x_t, t, c), target)
