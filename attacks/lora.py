"""LoRA finetuning attack: relearn the erased concept through a low-rank adapter on the UNet's
attention projections (Hu et al. 2022, "LoRA").

Each adapted projection W (to_q, to_k, to_v, to_out.0) becomes W + (α / r) B A with A ∈ R^{r×d},
B ∈ R^{d'×r}; only A and B are trained, with the same denoising loss, data and loop as ``ft``:

    min_{A, B} L_DM(θ + ΔW(A, B); D_forget)

The adapter is added with peft through diffusers' ``add_adapter`` and removed after the last curve
point, so the UNet's state dict is bit-identical to the unlearned one afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from relearnbench.api import Concept, Context, Model
from relearnbench.attacks.ft import Finetune, relearn
from relearnbench.models import add_adapter, remove_adapter

ADAPTER = "relearnbench_lora_attack"


class LoRA(Finetune):
    """peft LoRA finetune of UNet attention on concept images"""

    @dataclass(frozen=True)
    class Config(Finetune.Config):
        lr: float = 1e-4  # AdamW learning rate of the adapter (LoRA wants a larger one than a full finetune)
        rank: int = 4  # r, the adapter's rank
        alpha: float = 4.0  # α; the update is scaled by α / r
        target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # UNet modules adapted

    config_name = "lora"
    version = "1"

    def run(self, model: Model, concept: Concept, ctx: Context, evaluate) -> None:
        from peft import LoraConfig

        cfg = self.config
        parts = self.parts(model, concept, ctx)
        unet = model.unet
        # B starts at zero (peft's default), so step 0 of the curve is the unlearned model itself
        named = add_adapter(unet, ADAPTER, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha,
                                                      target_modules=list(cfg.target_modules)))
        try:
            params = [p for _, p in named]
            for p in params:
                p.requires_grad_(True)  # float32: the UNet is, and peft makes the adapter in its dtype
            relearn(model, params, parts, cfg, ctx, evaluate, self.config_name)
        finally:
            remove_adapter(unet, ADAPTER)  # someone else's adapters stay; the plain layers and keys come back
            unet.requires_grad_(False)
