"""SPM: concept Semi-Permeable Membrane (Lyu et al., CVPR 2024, "One-dimensional Adapter to Rule Them All";
Con6924/SPM), a one-dimensional adapter trained to erase the concept.

A rank-one adapter ΔW = (α / r) B A (r = 1, A ∈ R^{1×d_in}, B ∈ R^{d_out×1}, B starting at zero) is added with peft to
every Linear and Conv2d inside the UNet's transformer blocks (``Transformer2DModel``: proj_in, the self- and
cross-attention q, k, v and out, the feed-forward, proj_out; the code's ``SPMNetwork`` under its pinned diffusers
0.18.2: 1.7 MB on SD-1.4, as its README says). Only A and B train; the UNet's own weights stay frozen:

    L(Δ) = ‖ ε_{θ+Δ}(x_t, t, c) − [ ε_θ(x_t, t, c_s) − η (ε_θ(x_t, t, c) − ε_θ(x_t, t, c_s)) ] ‖²     (erasing)
         + λ · mean_k ‖ ε_{θ+Δ}(x_t, t, a_k) − ε_θ(x_t, t, a_k) ‖²                                    (latent anchoring)

ε_θ the frozen original, c a train prompt (the concept's name as published), c_s the surrogate ("" as published, or
the concept's anchor). x_t is sampled by DDIM from the adapted model, conditioned on c at guidance 3, from noise to a
random step ``stop`` ∈ [1, ddim_steps) and labelled t = T − 1 − ⌊stop·T / ddim_steps⌋, as train_spm.py does. The
anchors a_k are text embeddings drawn around c (src/engine/sampling.py): a Gaussian direction, kept with probability
1 − cos(c, direction), scaled to ‖c‖·U(0.8, 1.2). They are no prompt at all, so nothing of the evaluation (nor of the
attacker) reaches the method. ``la_layout = "code"`` is what train_spm.py computes: it packs [∅, a_1, ∅, a_2, …] into
a classifier-free-guidance call at scale 1, which keeps the second half, so with 4 anchors the term compares ∅, a_3,
∅, a_4; ``"paper"`` compares the k sampled anchors.

The result is a plain UNet: after the last step the adapter is merged into the weights (W ← W + ΔW) and its layers
are removed, so attacks, export and checkpoints handle it as any other unlearned model. Not built: the facilitated
transport of inference (infer_spm.py scales the adapter per prompt by its similarity to the erased concepts); merged,
the adapter acts at full strength on every prompt, as infer_spm.py with ``--spm_multiplier 1``. Nor the code's
dynamic resolution (x_t at random 256-448 px sides): x_t has the model's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import Cond, ddim_to_step, encode_text_frozen, guided, predict
from relearnbench.methods.common import frozen_copy, training_prompts
from relearnbench.models import add_adapter, remove_adapter

ADAPTER = "relearnbench_spm"


def adapter_targets(unet) -> list[str]:
    """The names of the Linear and Conv2d modules inside the UNet's ``Transformer2DModel`` blocks (SPMNetwork's)."""
    return [f"{name}.{child}" for name, block in unet.named_modules() if type(block).__name__ == "Transformer2DModel"
            for child, m in block.named_modules() if type(m) in (torch.nn.Linear, torch.nn.Conv2d)]


def sample_anchors(c: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` latent anchors around the embedding ``c`` [L, D] (src/engine/sampling.py): a Gaussian direction kept
    with probability 1 − cos(c, direction), scaled to ‖c‖ times U(0.8, 1.2); [n, L, D]."""
    out = []
    while len(out) < n:
        d = torch.randn(c.shape, generator=generator, dtype=c.dtype).to(c.device)
        d = d / d.norm()
        if torch.rand((), generator=generator) < 1 - F.cosine_similarity(c.flatten(), d.flatten(), dim=0).cpu():
            out.append((0.8 + 0.4 * torch.rand((), generator=generator)).to(c.device) * d * c.norm())
    return torch.stack(out)


class SPM(LossMethod):
    """SPM (Lyu et al. 2024): a one-dimensional adapter trained to erase, with latent anchoring, merged at the end."""

    @dataclass(frozen=True)
    class Config:
        rank: int = 1  # r, the adapter's rank (one-dimensional)
        alpha: float = 1.0  # α; the update is scaled by α / r
        steps: int = 3000  # training iterations
        lr: float = 1e-4  # AdamW learning rate of the adapter
        weight_decay: float = 1e-2  # AdamW weight decay
        max_grad_norm: float = 0.0  # gradient clipping (0 = none)
        warmup: int = 500  # linear warm-up steps of the cosine schedule with hard restarts
        cycles: int = 3  # the schedule's cosine cycles (hard restarts)
        batch_size: int = 1  # x_t (and concept prompts) per step
        eta: float = 1.0  # η, the erasing guidance (prompt.yaml's guidance_scale)
        surrogate: Literal["empty", "anchor"] = "empty"  # c_s: "" or the concept's anchor
        ddim_steps: int = 30  # DDIM schedule x_t is sampled on (max_denoising_steps)
        start_guidance: float = 3.0  # classifier-free guidance when sampling x_t
        anchors: int = 4  # latent anchors per x_t (sampling_batch_size)
        la_strength: float = 1000.0  # λ, weight of the latent anchoring term (0 = the code's "erase" action)
        la_layout: Literal["code", "paper"] = "code"  # which anchors the term compares (see the docstring)
        prompts: Literal["all", "first"] = "first"  # c: the concept's name, or every train prompt

    config_name = "spm"
    version = "1"

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        from peft import LoraConfig

        cfg = self.config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        # ε_θ: the frozen original (in the model's half precision if any); under spm+meta-full the UNet's own
        # weights train too, so the adapter switched off would no longer be the original
        self.teacher = frozen_copy(model)
        self.uncond = encode_text_frozen(model, [""]).to(model.unet.device)
        self.c = encode_text_frozen(model, training_prompts(concept, cfg.prompts)).to(model.unet.device)
        self.c_s = self.uncond if cfg.surrogate == "empty" else \
            encode_text_frozen(model, [concept.anchor]).to(model.unet.device)
        # B starts at zero and A as kaiming-uniform (peft's default init, the code's SPMLayer's)
        return add_adapter(model.unet, ADAPTER, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha,
                                                           target_modules=adapter_targets(model.unet)))

    def lr_schedule(self, optimizer):
        from diffusers.optimization import get_cosine_with_hard_restarts_schedule_with_warmup

        c = self.config
        return get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, c.warmup, c.steps, c.cycles)

    def finish(self, model: Model) -> None:
        """W ← W + ΔW in every adapted layer, then the adapter's layers go: a plain UNet with the original's keys."""
        model.unet.fuse_lora(adapter_names=[ADAPTER])
        remove_adapter(model.unet, ADAPTER)  # someone else's adapters stay; only ours goes

    def release(self) -> None:
        self.teacher = self.uncond = self.c = self.c_s = None

    def anchor_conds(self, c: Cond) -> Cond:
        """The anchors the latent anchoring term compares for each row of ``c``: ``anchors`` of them per row."""
        cfg, g = self.config, self.generator
        rows = []
        for i in range(len(c)):
            row = c[i:i + 1]
            hidden = sample_anchors(row.hidden[0], cfg.anchors, g)
            pooled = None if row.pooled is None else sample_anchors(row.pooled[0], cfg.anchors, g)  # train_spm_xl.py
            a = Cond(hidden, pooled, None if row.time_ids is None else row.time_ids.expand(cfg.anchors, -1))
            if cfg.la_layout == "code":  # the second half of [∅, a_1, ∅, a_2, ...]
                packed = Cond.cat([Cond.cat([self.uncond, a[k:k + 1]]) for k in range(cfg.anchors)])
                a = packed[cfg.anchors:]
            rows.append(a)
        return Cond.cat(rows)

    def xt(self, model: Model, c: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, t): DDIM from the adapted model to a random step, labelled as train_spm.py labels it."""
        cfg, g = self.config, self.generator
        stop = int(torch.randint(1, cfg.ddim_steps, (1,), generator=g))
        x_t, _ = ddim_to_step(model, c, self.uncond, stop, cfg.ddim_steps, cfg.start_guidance, generator=g)
        T = model.scheduler.config.num_train_timesteps
        return x_t, torch.full((len(c),), T - 1 - int(stop * T / cfg.ddim_steps), device=x_t.device)

    def loss(self, model: Model, step: int) -> torch.Tensor:
        cfg, g = self.config, self.generator
        c = self.c[torch.randint(len(self.c), (cfg.batch_size,), generator=g).to(self.c.device)]
        x_t, t = self.xt(model, c)
        with torch.no_grad():  # ε_θ(c_s) − η (ε_θ(c) − ε_θ(c_s))
            target = guided(self.teacher, x_t, t, self.c_s, c, -cfg.eta)
        loss = F.mse_loss(predict(model.unet, x_t, t, c), target)
        if cfg.la_strength:
            a = self.anchor_conds(c)
            x_a, t_a = x_t.repeat_interleave(cfg.anchors, 0), t.repeat_interleave(cfg.anchors, 0)
            with torch.no_grad():
                anchored = predict(self.teacher, x_a, t_a, a)
            loss = loss + cfg.la_strength * F.mse_loss(predict(model.unet, x_a, t_a, a), anchored)
        return loss
