"""What several methods share: which UNet parameters a variant trains, and training sets encoded once.

Methods see only the concept's ``train`` role (docs/protocol.md): its texts, and images
from its ``train_data`` source (``relearnbench.data.images_for``: by default the original model,
before unlearning, samples them, as in the authors' code; the toy world's renderer or a folder otherwise).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from relearnbench.api import Concept, Context, Model
from relearnbench.data import images_for
from relearnbench.diffusion import Cond, encode_images, encode_text_frozen
from relearnbench.errors import UserError
from relearnbench.models import trainable  # noqa: F401 (ESD's parameter sets; the memory model reads them too)


def frozen_copy(model: Model) -> torch.nn.Module:
    """A frozen copy of the UNet as it is now (the original, before a method trains it): a teacher whose weights
    never train, so it is kept in the model's half precision when the run has one (``--dtype``)."""
    teacher = copy.deepcopy(model.unet).requires_grad_(False)
    if model.dtype is not None and model.dtype != teacher.dtype:
        teacher.to(dtype=model.dtype)
    return teacher


def training_prompts(concept: Concept, prompts: str) -> list[str]:
    """The concept texts a method erases (the ``train_prompts``, never the evaluation prompts): ``"all"``
    of them, or the ``"first"``, the concept's name (the reference ESD and SalUn recipes train on one
    concept text, e.g. "nudity")."""
    if prompts not in ("all", "first"):
        raise UserError(f"prompts={prompts!r}: expected all or first")
    if not concept.train:
        raise UserError(f"concept {concept.name} has no train_prompts: a method trains only on those")
    return list(concept.train) if prompts == "all" else list(concept.train[:1])


@dataclass
class Encoded:
    """Images as VAE latents and their captions as text embeddings, on the UNet's device."""

    x0: torch.Tensor  # [N, C, h, w] float32 latents
    texts: Cond  # [P] conditionings of the distinct captions
    index: torch.Tensor  # [N] which caption goes with each image

    def __len__(self) -> int:
        return self.x0.shape[0]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, Cond]:
        """(x0, c) of the images ``idx``."""
        return self.x0[idx], self.texts[self.index[idx]]

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, Cond]:
        """A random batch of ``size`` distinct images (all of them if fewer)."""
        idx = torch.randperm(len(self), generator=generator)[:size].to(self.x0.device)
        return self.take(idx)

    def batches(self, count: int, size: int, generator: torch.Generator):
        """``count`` batches of ``size`` from one shuffle: disjoint while the images last (an epoch)."""
        order = torch.randperm(len(self), generator=generator).to(self.x0.device)
        for b in range(count):
            yield self.take(order[(torch.arange(size, device=order.device) + b * size) % len(self)])

    def halves(self) -> tuple["Encoded", "Encoded"]:
        """Even and odd images: a train / held-out split that keeps every prompt in both."""
        even, odd = slice(0, None, 2), slice(1, None, 2)
        return (Encoded(self.x0[even], self.texts, self.index[even]),
                Encoded(self.x0[odd], self.texts, self.index[odd]))


def encode_set(model: Model, concept: Concept, ctx: Context, prompts: Sequence[str], n_images: int,
               seed: int = 0) -> Encoded:
    """``n_images`` training images of ``prompts`` (spread evenly over them) from the concept's
    ``train_data`` source, encoded once."""
    prompts = list(prompts)
    if not prompts:
        raise UserError(f"concept {concept.name}: a method needs images of an empty prompt list "
                        "(does the concept declare train_related and train_unrelated?)")
    prompts = prompts[:n_images]  # hundreds of prompts (I2P) for a few dozen images: use the first ones
    per = math.ceil(n_images / len(prompts))
    images, captions = images_for(prompts, per, concept, model, ctx, source=concept.train_data, seed=seed)
    if len(images) == len(prompts) * per:  # prompt-major; interleave so truncation keeps every prompt
        order = [i * per + j for j in range(per) for i in range(len(prompts))][:n_images]
        images, captions = images[order], [captions[i] for i in order]
    distinct = sorted(set(captions))
    device = model.unet.device
    return Encoded(x0=encode_images(model, images).to(device),
                   texts=encode_text_frozen(model, distinct).to(device),
                   index=torch.tensor([distinct.index(c) for c in captions], device=device))
