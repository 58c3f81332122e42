"""A minimal third-party relearnbench plugin: two methods, one attack, one metric."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from relearnbench.api import Attack, LossMethod, Method, Metric, Score
from relearnbench.diffusion import ddim_to_step, encode_text, encode_text_frozen, predict


class Shrink(Method):
    """shrink the cross-attention keys of the concept's tokens (a crude erasure, for illustration)"""

    @dataclass(frozen=True)
    class Config:
        strength: float = 0.5  # how much of each key projection to remove along the concept's embedding

    config_name = "shrink"

    @torch.no_grad()
    def unlearn(self, model, concept, ctx):
        # the defender's texts (the train role); the concept's evaluation prompts are for metrics only
        c = encode_text(model, list(concept.train)).hidden.mean(dim=(0, 1)).float()  # mean concept embedding
        c = c / c.norm()
        for name, module in model.unet.named_modules():
            if name.endswith("attn2.to_k"):
                w = module.weight  # (out, d): project the concept direction out of the keys
                w -= self.config.strength * (w @ c)[:, None] * c[None, :].to(w.dtype)


class Ablate(LossMethod):
    """concept ablation (Kumari et al. 2023, model-based): the concept's prompts predict what the anchor's do

        L(θ) = ‖ε_θ(x_t, t, c*) − sg[ε_θ(x_t, t, c_anchor)]‖²,  x_t sampled from the model with c_anchor

    A loss-based method: exposing ``loss`` is all it takes for relearnbench to offer ``ablate+meta`` and
    ``ablate+retain`` too.
    """

    @dataclass(frozen=True)
    class Config:
        steps: int = 400  # training steps
        lr: float = 2e-6  # Adam learning rate
        ddim_steps: int = 20  # DDIM schedule x_t is sampled on
        guidance: float = 3.0  # classifier-free guidance when sampling x_t

    config_name = "ablate"

    def prepare(self, model, concept, ctx):
        self.generator = torch.Generator().manual_seed(ctx.seed)
        device = model.unet.device
        self.concept = encode_text_frozen(model, list(concept.train)).to(device)  # the train role only
        self.anchor = encode_text_frozen(model, [concept.anchor]).to(device)
        self.uncond = encode_text_frozen(model, [""]).to(device)
        # the cross-attention keys and values: where the text reaches the image
        return [(n, p) for n, p in model.unet.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n]

    def loss(self, model, step):
        c, g = self.config, self.generator
        stop = int(torch.randint(c.ddim_steps, (1,), generator=g))
        with torch.no_grad():
            x_t, t = ddim_to_step(model, self.anchor, self.uncond, stop, c.ddim_steps, c.guidance, generator=g)
            t = t.to(x_t.device)
            target = predict(model.unet, x_t, t, self.anchor)
        forget = self.concept[torch.randint(len(self.concept), (1,), generator=g).to(self.concept.device)]
        return F.mse_loss(predict(model.unet, x_t, t, forget), target)

    def release(self):
        self.concept = self.anchor = self.uncond = None


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
