"""SDD: Safe self-Distillation Diffusion (Kim et al., "Towards Safe Self-Distillation of Internet-Scale
Text-to-Image Diffusion Models", 2023; nannullna/safe-diffusion, and the meta-unlearning authors' copy
sail-sg/Meta-Unlearning src/sdd_baseline.py).

The student ε_θ learns to answer the concept c_s as it answers the empty prompt, on latents that its
EMA teacher θ⁻ samples from the concept:

    L_SDD(θ) = ‖ ε_θ(x_t, t, c_s) − sg[ε_θ(x_t, t, ∅)] ‖²,   x_t ~ DDIM_θ⁻(c_s, guidance s_g) stopped at a random step
    θ⁻ ← d θ⁻ + (1 − d) θ   after every step (d = 0.999)

The target is the student's own unconditional prediction, under stop-gradient; the teacher only
samples x_t, and its EMA weights are the unlearned model the authors save (``result = "ema"``). SDD's
default trains the cross-attention weights (``train = "x"``, their ``--finetuning_method xattn``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import ddim_xt, encode_text_frozen, predict
from relearnbench.errors import UserError
from relearnbench.methods.common import trainable, training_prompts


class SDD(LossMethod):
    """Safe self-Distillation Diffusion (Kim et al. 2023): the concept's prediction distilled to the empty prompt's."""

    @dataclass(frozen=True)
    class Config:
        train: Literal["u", "x", "f"] = "x"  # trained: u = all but cross-attention, x = cross-attention, f = all
        steps: int = 1500  # training iterations
        lr: float = 1e-5  # AdamW learning rate
        weight_decay: float = 1e-4  # AdamW weight decay
        max_grad_norm: float = 1.0  # gradient clipping (0 = none)
        batch_size: int = 1  # x_t per step (one concept text each)
        ddim_steps: int = 50  # DDIM schedule length that x_t is sampled on
        start_guidance: float = 3.0  # s_g, classifier-free guidance when the teacher samples x_t
        ema_decay: float = 0.999  # d, the teacher's EMA decay (0 = the teacher stays the original; result = student)
        result: Literal["ema", "student"] = "ema"  # which weights are the unlearned model: θ⁻ or θ
        prompts: Literal["all", "first"] = "all"  # the concept texts c_s: every train prompt, or the first

    config_name = "sdd"
    version = "1"

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        cfg_ = self.config
        if not cfg_.ema_decay and cfg_.result == "ema":
            raise UserError("sdd.ema_decay=0 keeps the teacher at the original model, so result=ema would hand it "
                            "back unchanged: set sdd.result=student (the authors' SDD+meta) or an ema_decay in (0, 1)")
        self.generator = torch.Generator().manual_seed(ctx.seed)
        named = trainable(model.unet, cfg_.train)
        # θ⁻ starts as the original; it averages float32 weights, so it stays float32 whatever model.dtype is
        self.teacher = copy.deepcopy(model.unet).requires_grad_(False)
        # (θ⁻, θ) of every weight; those that train (``requires_grad``: ours, or every weight under meta.weights =
        # "full") are averaged
        self.pairs = list(zip(self.teacher.parameters(), model.unet.parameters()))
        self.uncond = encode_text_frozen(model, [""]).to(model.unet.device)
        self.c = encode_text_frozen(model, training_prompts(concept, cfg_.prompts)).to(model.unet.device)
        return named

    def release(self) -> None:
        self.teacher = self.pairs = self.uncond = self.c = None

    def _trained(self) -> list:
        return [(ema, p) for ema, p in self.pairs if p.requires_grad]

    @torch.no_grad()
    def _ema(self) -> None:
        d = self.config.ema_decay
        if d:
            for ema, p in self._trained():
                ema.mul_(d).add_(p.detach(), alpha=1 - d)

    def loss(self, model: Model, step: int) -> torch.Tensor:
        cfg_, g = self.config, self.generator
        if step:  # the update after the previous step's optimizer step (the last one: ``finish``)
            self._ema()
        c = self.c[torch.randint(len(self.c), (cfg_.batch_size,), generator=g).to(self.c.device)]
        x_t, t = ddim_xt(model, c, self.uncond, cfg_.ddim_steps, cfg_.start_guidance, g, unet=self.teacher)
        with torch.no_grad():
            target = predict(model.unet, x_t, t, self.uncond.expand(len(c)))  # sg[ε_θ(x_t, t, ∅)]
        return F.mse_loss(predict(model.unet, x_t, t, c), target)

    def finish(self, model: Model) -> None:
        self._ema()
        if self.config.result == "ema":
            with torch.no_grad():
                for ema, p in self._trained():
                    p.copy_(ema)
