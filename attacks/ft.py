"""Finetuning attacks: relearn an erased concept by plain denoising finetuning of the UNet.

An adversary who holds the released (unlearned) weights minimises the ordinary denoising loss

    L_DM(θ; D) = E_{(x0, c) ∈ D, t, ε} ‖target(x0, ε, t) − ε_θ(√ᾱ_t x0 + √(1 − ᾱ_t) ε, t, c)‖²

with AdamW over all UNet weights θ (``lora`` trains a low-rank adapter instead). The data D is
what separates the attacks (Gao et al. 2024, "Meta-Unlearning on Diffusion Models", §5):

* ``ft``: images of the erased concept, one set per attack prompt (the paper's HRM-m);
* ``ft_clean``: images of the attacker's benign prompts only, related and unrelated (CLEAN);
* ``ft_adaptive``: each batch mixes concept images with related-benign ones, a share
  ``related_fraction`` of every batch from the related set. Meta-unlearning makes related concepts
  self-destruct under a forget-data finetune; keeping them in the batch counteracts that while the
  concept is relearned. Ours: the paper leaves adaptive attacks open.

The data is the attacker's own (the concept's ``attack`` role, ``relearnbench.data.attack_images``):
its ``attack_prompts`` / ``attack_related`` / ``attack_unrelated`` or its image folder, never the
prompts the methods trained on or the ones the metrics score.

The relearning curve: ``evaluate(step)`` at every step of ``curve`` (0 = before any update), so
the tables can show ASR after N steps and the area under the curve.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from relearnbench.api import Attack, Concept, Context, Model
from relearnbench.data import attack_images
from relearnbench.diffusion import Cond, denoising_loss, encode_images, encode_text_frozen
from relearnbench.errors import UserError


@dataclass
class Data:
    """A fixed training set, encoded once: latents x0 and one text embedding per unique caption."""

    x0: torch.Tensor  # [N, 4, h, w] float32
    c: Cond  # [U] float32, one row per unique caption
    caption: torch.Tensor  # [N] index into c
    texts: list[str]  # the unique captions, in the order of c

    def __len__(self):
        return self.x0.shape[0]


def encode_data(model: Model, images: torch.Tensor, captions: list[str]) -> Data:
    unique = sorted(set(captions))
    return Data(encode_images(model, images), encode_text_frozen(model, unique),
                torch.tensor([unique.index(t) for t in captions]), unique)


def load_data(prompts, n_per_prompt: int, concept: Concept, model: Model, ctx: Context, source: str) -> Data:
    images, captions = attack_images(concept, model, ctx, n_per_prompt, seed=ctx.seed, prompts=prompts, source=source)
    return encode_data(model, images, captions)


def _shuffled(n: int, generator: torch.Generator):
    """Endless indices, a fresh permutation every epoch."""
    while True:
        yield from torch.randperm(n, generator=generator).tolist()


def curve_steps(curve) -> list[int]:
    steps = sorted(set(int(s) for s in curve))
    if not steps or steps[0] < 0:
        raise UserError(f"curve must list non-negative steps, got {tuple(curve)}")
    return steps


def relearn(model: Model, params: list, parts: list[tuple[Data, int]], config, ctx: Context, evaluate,
            name: str) -> None:
    """The finetuning loop every finetune attack shares. ``parts``: (data set, images per batch from it)."""
    g = torch.Generator().manual_seed(ctx.seed)
    streams = [_shuffled(len(d), g) for d, _ in parts]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = curve_steps(config.curve)
    if steps[0] == 0:
        evaluate(0, final=len(steps) == 1)  # before any update: the executor reuses the pre-attack scores
    model.unet.train()
    for step in ctx.track(range(1, steps[-1] + 1), f"{name} finetune", total=steps[-1]):
        x0, c = [], []
        for (d, k), stream in zip(parts, streams):
            idx = torch.tensor(list(itertools.islice(stream, k)), dtype=torch.long)
            x0.append(d.x0[idx])
            c.append(d.c[d.caption[idx]])
        loss = denoising_loss(model, torch.cat(x0), Cond.cat(c), generator=g)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss is {loss.item()} at step {step}; lower --set {name}.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        if step in steps:
            optimizer.zero_grad(set_to_none=True)  # the next step sets them anew: no gradients held while sampling
            if step == steps[-1]:
                optimizer.state.clear()  # nothing steps again: the last evaluation holds no AdamW moments
            model.unet.eval()
            evaluate(step, final=step == steps[-1])  # intermediate points score the curve metrics only
            model.unet.train()
    optimizer.zero_grad(set_to_none=True)
    model.unet.eval()


class Finetune(Attack):
    """full UNet finetune on images of the erased concept"""

    @dataclass(frozen=True)
    class Config:
        curve: tuple[int, ...] = (0, 50, 100, 200, 300)  # steps evaluated (0 = before the attack); the last ends it
        lr: float = 1e-5  # AdamW learning rate
        batch_size: int = 4  # images per step
        weight_decay: float = 1e-2  # AdamW weight decay
        max_grad_norm: float = 1.0  # clip the gradient norm (0 = off)
        images_per_prompt: int = 8  # training images made per prompt
        data: str = ""  # image source: "" = the concept's attack_data, "world", "generate", or a folder

    config_name = "ft"
    version = "1"

    def prompts(self, concept: Concept) -> tuple[str, ...]:
        return concept.attack

    def parts(self, model: Model, concept: Concept, ctx: Context) -> list[tuple[Data, int]]:
        data = load_data(self.prompts(concept), self.config.images_per_prompt, concept, model, ctx, self.config.data)
        return [(data, self.config.batch_size)]

    def run(self, model: Model, concept: Concept, ctx: Context, evaluate) -> None:
        parts = self.parts(model, concept, ctx)
        params = list(model.unet.parameters())
        for p in params:
            p.requires_grad_(True)
        try:
            relearn(model, params, parts, self.config, ctx, evaluate, self.config_name)
        finally:
            model.unet.requires_grad_(False)


class CleanFinetune(Finetune):
    """full UNet finetune on benign data only (CLEAN)"""

    config_name = "ft_clean"

    def prompts(self, concept: Concept) -> tuple[str, ...]:
        return concept.attack_benign


class OnePromptFinetune(Finetune):
    """full UNet finetune on images of one harmful prompt (the meta-unlearning paper's HRM-s)"""

    config_name = "ft_one"

    def prompts(self, concept: Concept) -> tuple[str, ...]:
        return concept.attack[:1]


class AdaptiveFinetune(Finetune):
    """finetune on concept data mixed with related benign data (against self-destruct)"""

    @dataclass(frozen=True)
    class Config(Finetune.Config):
        related_fraction: float = 0.5  # share of every batch drawn from related-benign images
        related_data: str = ""  # source of the related images ("" = the concept's attack_data)

    config_name = "ft_adaptive"

    def parts(self, model: Model, concept: Concept, ctx: Context) -> list[tuple[Data, int]]:
        cfg = self.config
        if not 0 <= cfg.related_fraction <= 1:
            raise UserError(f"ft_adaptive.related_fraction must lie in [0, 1], got {cfg.related_fraction}")
        n_related = round(cfg.batch_size * cfg.related_fraction)
        parts = []
        if n_related < cfg.batch_size:
            forget = load_data(concept.attack, cfg.images_per_prompt, concept, model, ctx, cfg.data)
            parts.append((forget, cfg.batch_size - n_related))
        if n_related > 0:
            if not concept.attack_related and not cfg.related_data:
                raise UserError(f"ft_adaptive: concept {concept.name} has no attack_related prompts to mix in")
            related = load_data(concept.attack_related, cfg.images_per_prompt, concept, model, ctx, cfg.related_data)
            parts.append((related, n_related))
        return parts
