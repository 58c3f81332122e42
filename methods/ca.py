"""CA: Concept Ablation (Kumari et al., ICCV 2023, arXiv 2303.13516; nupurkmr9/concept-ablation).

The concept c is ablated by mapping it onto an anchor c* (the concept's ``anchor``: "a shape" for a
toy shape, "" for nudity): on images x0 of the anchor, the model conditioned on the concept is
trained to predict what it predicts for the anchor,

    model-based:  L(θ) = ‖ ε_θ(x_t, t, c) − sg[ε_θ(x_t, t, c*)] ‖²        (the paper's default, eq. 4)
    noise-based:  L(θ) = ‖ ε_θ(x_t, t, c) − ε ‖²                           (eq. 3: x0 from the anchor)

x_t = add_noise(x0, ε, t), x0 an anchor image, c a train prompt; sg is a stop-gradient of the
*current* model's prediction (the reference code runs the same UNet under ``torch.no_grad``, not a
frozen copy). With ``prior_loss_weight`` > 0 the anchor images also keep their anchor prompt
(prior preservation, ``+ w ‖ε_θ(x_t', t', c*) − ε‖²``), as the authors' nudity recipe. Trained
weights: ``kv`` cross-attention keys and values (the code's ``cross-attn``), ``attn`` every attention
projection (``attn``), ``f`` all (``full-weight``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import denoising_loss, encode_text_frozen, noised, predict
from relearnbench.errors import UserError
from relearnbench.methods.common import encode_set, training_prompts


def parameter_group(unet, train: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The reference code's parameter groups (train.py ``create_custom_diffusion``): ``kv`` =
    ``attn2.to_k``/``attn2.to_v``, ``attn`` = every ``to_q``/``to_k``/``to_v``/``to_out``, ``f`` = all."""
    keys = {"kv": ("attn2.to_k", "attn2.to_v"), "attn": ("to_q", "to_k", "to_v", "to_out"), "f": ("",)}
    if train not in keys:
        raise UserError(f"ca.train={train!r}: expected kv, attn or f")
    return [(n, p) for n, p in unet.named_parameters() if any(k in n for k in keys[train])]


class CA(LossMethod):
    """Concept Ablation (Kumari et al. 2023): the concept's prediction matched to the anchor's."""

    @dataclass(frozen=True)
    class Config:
        loss: Literal["model", "noise"] = "model"  # target: sg[ε_θ(x_t, c*)] (model-based) or ε (noise-based)
        train: Literal["kv", "attn", "f"] = "kv"  # trained: cross-attention k/v, all attention projections, all
        steps: int = 100  # training steps
        lr: float = 1.6e-5  # AdamW learning rate (the code's lr already scaled by batch and GPUs)
        weight_decay: float = 1e-2  # AdamW weight decay
        max_grad_norm: float = 1.0  # gradient clipping
        batch_size: int = 8  # anchor images (and concept prompts) per step
        images: int = 64  # anchor images encoded once
        prompts: Literal["all", "first"] = "all"  # c: every train prompt, or the first (the concept's name)
        prior_loss_weight: float = 0.0  # w of the prior preservation term on the anchor images (0 = none)

    config_name = "ca"
    version = "1"

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        cfg = self.config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        # images of the anchor captioned with it (c*), which the original model samples as the reference code's
        # class images (whatever the concept's train_data: a renderer or a folder has no image of "a shape");
        # at this point ``model`` is the original, so it samples them when the context lends no other copy
        generating = dataclasses.replace(ctx, base=ctx.base or (lambda: model))
        self.anchor = encode_set(model, dataclasses.replace(concept, train_data="generate"), generating,
                                 [concept.anchor], cfg.images, seed=ctx.seed)
        self.c = encode_text_frozen(model, training_prompts(concept, cfg.prompts)).to(model.unet.device)
        return parameter_group(model.unet, cfg.train)

    def release(self) -> None:
        self.anchor = self.c = None

    def loss(self, model: Model, step: int) -> torch.Tensor:
        cfg, g = self.config, self.generator
        x0, c_star = self.anchor.batch(cfg.batch_size, g)
        c = self.c[torch.randint(len(self.c), (x0.shape[0],), generator=g).to(x0.device)]
        x_t, t, eps = noised(model, x0, g)
        if cfg.loss == "model":
            with torch.no_grad():
                target = predict(model.unet, x_t, t, c_star)  # sg[ε_θ(x_t, t, c*)]
        else:
            target = eps
        loss = F.mse_loss(predict(model.unet, x_t, t, c), target)
        if cfg.prior_loss_weight:
            x0p, cp = self.anchor.batch(cfg.batch_size, g)
            loss = loss + cfg.prior_loss_weight * denoising_loss(model, x0p, cp, generator=g)
        return loss
