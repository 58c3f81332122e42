"""Diffusion completion probe (Lu et al. 2025, "When Are Concepts Erased From Diffusion Models?", NeurIPS;
kevinlu4588/WhenAreConceptsErased, ``DiffusionCompletionProbe``): no training and no prompt search; the
unlearned model is handed visual context, a partly noised image of the concept, and finishes the reverse process.

An image of the concept x0 (one of the concept's attack images, the data ``ft`` trains on) is taken forward
to t_start, x_{t_start} = √ᾱ x0 + √(1 − ᾱ) ε (``scheduler.add_noise``), and the unlearned model denoises it
with the evaluation sampler (DDIM, guidance) from its forget prompt, or from a fixed text ("" =
unconditional). A model that only steers its text guidance away from the concept tends to complete it; a
model whose knowledge of it is gone pulls the image elsewhere.

The start follows diffusers' img2img convention: at strength s the last round(s · steps) of the sampler's
DDIM steps run and t_start is the first of them (toy, 10 steps: s = 0.25 → 2 steps, Python rounding half to
even, t_start 101; 0.5 → 401; 0.75 → 701; 1 → 901; at 20 steps 201, 451, 701, 951). s = 0 hands back the
source through the VAE; s = 1 is almost plain sampling. The curve is ASR against s, recorded as ``post@N`` with
N = 1000 · s (per mille).

The authors start from the *original* model's own trajectory, interrupted after 0, 1 or 2 of 50 steps, and
finish it with the erased one. Here a real image is noised to any t_start (SDEdit, Meng et al. 2022), so
the context is an image of the concept the model never produced.

Control (``completion_benign``): the same probe from the attacker's benign images (the concept's attack-role
related and unrelated prompts), denoised from the same forget prompts. It shows the ASR the context alone does not explain. The
original model (method ``none``) is the other control.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from relearnbench import seeds
from relearnbench.api import Attack, Concept, Context, Model, Prompt
from relearnbench.attacks.ft import curve_steps
from relearnbench.data import attack_images
from relearnbench.diffusion import encode_images, generate, image_jobs, initial_noise
from relearnbench.errors import UserError
from relearnbench.evaluate import SampleConfig


def sources(model: Model, concept: Concept, ctx: Context, which: str, data: str, n: int) -> torch.Tensor:
    """Source images for the evaluation's forget images, n per forget prompt [len(forget) · n, 3, R, R]: the
    attacker's images (``data.attack_images``) of the concept's attack prompts (``which = "concept"``) or
    of its attack-role benign prompts (``"benign"``), used in turn. Never images of the evaluation prompts."""
    if which not in ("concept", "benign"):
        raise UserError(f"source must be 'concept' or 'benign', got {which!r}")
    prompts = concept.attack if which == "concept" else concept.attack_benign
    images, _ = attack_images(concept, model, ctx, n, seed=ctx.seed, prompts=prompts, source=data)
    return images[torch.arange(len(concept.forget) * n) % len(images)]


def probe_jobs(model: Model, concept: Concept, ctx: Context, template: str = "{prompt}", benign: bool = False):
    """(prompts, jobs, noise, generators) of the images a probe makes in place of the evaluation's: its
    forget prompts with the seeds and guidance ``evaluate`` samples them with (evaluate.py's forget seed
    stream, ctx.seed · 7), each text set by ``template`` ({prompt} = the prompt's own); or, ``benign``, the
    attacker's benign prompts (the attack role's related and unrelated ones). Each generator has drawn its
    image's initial noise."""
    cfg = ctx.sample_config
    prompts = tuple(Prompt(t) for t in concept.attack_benign) if benign else concept.forget
    texts = [Prompt(template.format(prompt=p.text), p.seed, p.guidance) for p in prompts]
    jobs = image_jobs(texts, cfg.images_per_prompt, seeds.of(ctx.seed, "eval-benign" if benign else "eval-forget"), cfg.guidance)
    generators = [torch.Generator().manual_seed(s) for *_, s in jobs]
    return prompts, jobs, initial_noise(model, generators), generators


class Completion(Attack):
    """diffusion completion: the unlearned model denoises a noised image of the concept (Lu et al. 2025)"""

    @dataclass(frozen=True)
    class Config:
        curve: tuple[int, ...] = (0, 250, 500, 750, 1000)  # strengths evaluated, per mille (0 = the sources as they are)
        source: str = "concept"  # images noised: "concept" (its attack images) or "benign" (the control)
        prompt: str = "{prompt}"  # text each image is denoised from: {prompt} = its forget prompt; "" = unconditional
        data: str = ""  # image source: "" = the concept's attack_data, "world", "generate", or a folder

    config_name = "completion"
    version = "2"  # 2: both guidance branches in one UNet call (diffusion.denoise: same math, other rounding)
    reads_eval_prompts = True  # it makes the evaluation's forget images, from its forget prompts

    def run(self, model: Model, concept: Concept, ctx: Context, evaluate) -> None:
        cfg, sc = self.config, ctx.sample_config
        x0 = encode_images(model, sources(model, concept, ctx, cfg.source, cfg.data, sc.images_per_prompt))
        _, jobs, noise, _ = probe_jobs(model, concept, ctx, cfg.prompt)
        steps = curve_steps(cfg.curve)
        if steps[-1] > 1000:
            raise UserError(f"{self.config_name}.curve is per mille, at most 1000; got {steps[-1]}")
        for k, n in enumerate(steps):
            evaluate(n, final=k == len(steps) - 1, images=self.probe(model, jobs, noise, x0, n / 1000, sc, ctx))

    def probe(self, model: Model, jobs, noise, x0, strength: float, sc: SampleConfig, ctx: Context) -> torch.Tensor:
        return generate(model, jobs, noise, steps=sc.steps, strength=strength, x0=x0, batch_size=sc.batch_size,
                        progress=ctx.progress)
