"""Concept inversion (Pham et al. 2024, "Circumventing Concept Erasure Methods for Text-to-Image
Generative Models"): textual inversion of a new word through the *erased* model.

A new token S* is added to the tokenizer; only its input embedding v is learned, with the
unlearned UNet and the text encoder frozen, on images of the concept (Gal et al. 2023):

    v* = argmin_v E_{(x0, y), t, ε} ‖ε − ε_θ(x_t, t, c_φ(template(S*, y); v))‖²

If the erasure only cut the path from the concept's words to the concept, some other input still
reaches it, and v* finds it. The images (x0, y) are the attacker's own (the concept's ``attack``
role); each evaluation prompt P is then evaluated as template(S*, P), keeping its seed and guidance. The word is written into copies of the tokenizer and text encoder that the
harness lends for this attack; the UNet is not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from relearnbench.api import Attack, Concept, Context, Model, Prompt
from relearnbench.data import attack_images
from relearnbench.diffusion import (denoising_loss, encode_images, encode_text_with_embeddings, input_embeddings,
                                    text_encoders, tokenize)
from relearnbench.errors import UserError


class ConceptInversion(Attack):
    """concept inversion: textual inversion through the erased model"""

    @dataclass(frozen=True)
    class Config:
        steps: int = 1000  # optimiser steps (Pham et al.: 5000)
        lr: float = 5e-3  # AdamW base learning rate on the word embedding (Pham et al.: 5e-3)
        scale_lr: bool = False  # multiply lr by batch_size × grad_accum, as Pham et al.'s --scale_lr
        batch_size: int = 4  # images per micro-batch
        grad_accum: int = 1  # micro-batches whose mean gradient makes one step (Pham et al.: 4)
        weight_decay: float = 1e-2  # AdamW weight decay (diffusers' textual-inversion default)
        images_per_prompt: int = 8  # training images made per attack prompt
        token: str = "<concept>"  # the new word added to the tokenizer
        init_word: str = "object"  # v starts at this word's embedding (the mean over its tokens)
        template: str = "{token} {prompt}"  # caption of a training image and evaluation prompt ({prompt} = its text)
        data: str = ""  # image source: "" = the concept's attack_data, "world", "generate", or a folder

    config_name = "ci"
    version = "1"

    def lr(self) -> float:
        """The learning rate the optimiser gets: Pham et al.'s concept_inversion.py with --scale_lr multiplies
        it by gradient_accumulation_steps × train_batch_size × num_processes (one process here)."""
        c = self.config
        return c.lr * c.batch_size * c.grad_accum if c.scale_lr else c.lr

    def run(self, model: Model, concept: Concept, ctx: Context, evaluate) -> None:
        cfg = self.config
        if "{token}" not in cfg.template:
            raise UserError(f"ci.template must contain {{token}}, got {cfg.template!r}")
        images, texts = attack_images(concept, model, ctx, cfg.images_per_prompt, seed=ctx.seed, source=cfg.data)
        x0 = encode_images(model, images)  # fixed data: encoded once
        captions = [cfg.template.format(token=cfg.token, prompt=t) for t in texts]

        # the new word: a row appended to each (copied) text encoder's embedding table (SDXL has two, whose
        # tokenizers share one vocabulary), learned as a float32 v per encoder
        for tokenizer, encoder in text_encoders(model):
            if tokenizer.add_tokens([cfg.token]) == 0:
                raise UserError(f"ci.token {cfg.token!r} is already a word of this tokenizer; pick another")
            encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # the row is set below
        token_id = model.tokenizer.convert_tokens_to_ids(cfg.token)
        tables = input_embeddings(model)
        init_ids = [i for i in tokenize(model, [cfg.init_word])[0].tolist()[1:]
                    if i not in (model.tokenizer.eos_token_id, model.tokenizer.pad_token_id)]
        if not init_ids:
            raise UserError(f"ci.init_word {cfg.init_word!r} has no tokens")
        vs = [table[init_ids].float().mean(0).clone().requires_grad_(True) for table in tables]

        ids = tokenize(model, captions)
        mask = ids == token_id
        optimizer = torch.optim.AdamW(vs, lr=self.lr(), weight_decay=cfg.weight_decay)
        g = torch.Generator().manual_seed(ctx.seed)
        for step in ctx.track(range(cfg.steps), "ci textual inversion", total=cfg.steps):
            optimizer.zero_grad(set_to_none=True)
            for _ in range(cfg.grad_accum):  # accelerate's accumulate: the mean of the micro-batches' gradients
                idx = torch.randint(len(x0), (cfg.batch_size,), generator=g)
                n = int(mask[idx].sum())
                c = encode_text_with_embeddings(model, ids[idx], mask[idx], [v.expand(n, -1) for v in vs])
                loss = denoising_loss(model, x0[idx], c, generator=g)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"ci: loss is {loss.item()} at step {step}; lower --set ci.lr")
                (loss / cfg.grad_accum).backward()
            optimizer.step()

        with torch.no_grad():
            for table, v in zip(tables, vs):
                table[token_id] = v.to(table.dtype)
        evaluate(None, forget_prompts=[Prompt(cfg.template.format(token=cfg.token, prompt=p.text), p.seed, p.guidance)
                                       for p in concept.forget])
