"""Training images for methods and attacks, from the source the concept declares for the role:
``train_data`` for the defender (methods), ``attack_data`` for the attacker (``attack_images``).

* ``world``: the toy world's procedural renderer (real images of the prompt).
* ``generate``: images the *original* model samples from the prompts, generated once and cached.
* a folder: ``metadata.jsonl`` lines ``{"file_name": ..., "text": ...}`` (the diffusers convention).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

from relearnbench import seeds
from relearnbench.api import Concept, Context, Model, Prompt
from relearnbench.errors import UserError
from relearnbench.images import folder_images, resize

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GenerateConfig:
    """How the original model samples training images (source ``generate``): the defender's train role and
    the attacker's generated attack data. The evaluation's sampler is ``sample.*`` alone (``SampleConfig``), so
    changing it keeps every unlearned model. Presets in ``data.toml`` beside this file."""

    steps: int = 20  # sampler steps
    guidance: float = 5.0  # classifier-free guidance scale
    batch_size: int = 32  # images per sampler call (groups the calls; the images do not depend on it)
    scheduler: Literal["ddim", "pndm"] = "ddim"  # ddim on the model's noise schedule, or pndm (diffusers' SD default)
    negative_prompt: str = ""  # the text of the unguided branch ("" = the empty prompt)

    def generation(self) -> dict:
        """What the images depend on besides their prompts, count and seed. Keys the images' cache and every
        unlearned model trained on them; the scheduler and negative prompt enter only when set, so images made
        before those fields existed keep their keys."""
        out = {"steps": self.steps, "guidance": self.guidance}
        if self.scheduler != "ddim":
            out["scheduler"] = self.scheduler
        if self.negative_prompt:
            out["negative_prompt"] = self.negative_prompt
        return out


GenerateConfig.config_name = "generate"  # the --set namespace: --set generate.steps=50


def images_for(prompts: Sequence[str], n_per_prompt: int, concept: Concept, model: Model, ctx: Context,
               source: str = "", seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """(images [N,3,R,R] in [0,1], caption per image) for ``prompts`` at ``model.resolution``."""
    source = source or concept.attack_data
    if source == "world":
        from relearnbench.toy.world import sample_images

        images, _ = sample_images(list(prompts), n_per_prompt, seed)
        # captioned with the prompt each image was drawn for, not the renderer's full caption: a role's data
        # carries that role's texts only ("a green triangle" drawn striped is captioned "a green striped
        # triangle", which may be an evaluation prompt)
        return resize(images, model.resolution), [p for p in prompts for _ in range(n_per_prompt)]
    if source == "generate":
        return _generated(prompts, n_per_prompt, model, ctx, seed)
    return folder_images(pathlib.Path(source), model.resolution)


def attack_images(concept: Concept, model: Model, ctx: Context, n_per_prompt: int, seed: int = 0,
                  prompts: Sequence[str] | None = None, source: str = "") -> tuple[torch.Tensor, list[str]]:
    """The attacker's own images (the concept's ``attack`` role): (images [N,3,R,R] in [0,1], captions).

    From ``source`` or the concept's ``attack_data``: an image folder as it is, else ``n_per_prompt``
    images of each of ``prompts`` (default: the concept's ``attack_prompts``) rendered by the toy world
    or sampled by the original model. The finetuning attacks, concept inversion and UnlearnDiffAtk's
    reference images all come from here; never from the evaluation prompts."""
    prompts = tuple(concept.attack if prompts is None else prompts)
    source = source or concept.attack_data
    if not prompts and source in ("world", "generate"):
        raise UserError(f"concept {concept.name} has no attack prompts to make the attacker's images from")
    return images_for(prompts, n_per_prompt, concept, model, ctx, source=source, seed=seed)


def _generated(prompts, n_per_prompt, model, ctx, seed):
    from relearnbench.diffusion import sample

    cfg: GenerateConfig = ctx.generate_config
    key = hashlib.sha256(json.dumps([model.fingerprint, list(prompts), n_per_prompt, seed,
                                     *cfg.generation().values()]).encode()).hexdigest()[:20]
    captions = [p for p in prompts for _ in range(n_per_prompt)]
    cached = ctx.artifacts.load_tensors("data", key) if ctx.artifacts is not None else None
    if cached is not None:
        return cached["images"], captions
    if ctx.base is None:
        raise UserError("generating training images needs the original model, which this context lacks")
    base = ctx.base()  # the original model, not the unlearned one: the attacker has clean data
    images = sample(base, [Prompt(p) for p in prompts], n_per_prompt, steps=cfg.steps, guidance=cfg.guidance,
                    seed=seeds.of(seed, "generated-images"), batch_size=cfg.batch_size, progress=ctx.progress,
                    scheduler=cfg.scheduler, negative_prompt=cfg.negative_prompt)
    if ctx.artifacts is not None:
        ctx.artifacts.save_tensors("data", key, {"images": images})
    return images, captions
