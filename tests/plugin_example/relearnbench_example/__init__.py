"""A minimal third-party relearnbench plugin: one method, one attack, one metric."""

from dataclasses import dataclass

import torch

from relearnbench.api import Attack, Method, Metric, Score
from relearnbench.diffusion import encode_text


class Shrink(Method):
    """shrink the cross-attention keys of the concept's tokens (a crude erasure, for illustration)"""

    @dataclass(frozen=True)
    class Config:
        strength: float = 0.5  # how much of each key projection to remove along the concept's embedding

    config_name = "shrink"

    @torch.no_grad()
    def unlearn(self, model, concept, ctx):
        c = encode_text(model, concept.forget_texts).mean(dim=(0, 1)).float()  # mean concept embedding
        c = c / c.norm()
        for name, module in model.unet.named_modules():
            if name.endswith("attn2.to_k"):
                w = module.weight  # (out, d): project the concept direction out of the keys
                w -= self.config.strength * (w @ c)[:, None] * c[None, :].to(w.dtype)


class WeightNoise(Attack):
    """add Gaussian noise to the UNet weights and evaluate after each of a few rounds"""

    @dataclass(frozen=True)
    class Config:
        sigma: float = 1e-3  # noise standard deviation per round
        rounds: int = 2  # curve points after the first

    config_name = "weight_noise"

    @torch.no_grad()
    def run(self, model, concept, ctx, evaluate):
        gen = torch.Generator().manual_seed(ctx.seed)
        evaluate(0)
        for r in range(1, self.config.rounds + 1):
            for p in model.unet.parameters():
                p += self.config.sigma * torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
            evaluate(r)


class Brightness(Metric):
    """mean pixel brightness of the forget-prompt images"""

    config_name = "brightness"

    def compute(self, ev):
        images, _, _ = ev.images("forget")
        per_image = images.mean(dim=(1, 2, 3))
        return [Score("brightness", float(per_image.mean()), n=len(per_image))]
