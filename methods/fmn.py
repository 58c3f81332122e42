"""FMN: Forget-Me-Not (Zhang et al., 2023, arXiv 2303.17591; SHI-Labs/Forget-Me-Not), attention re-steering.

On images x0 of the concept captioned with its train prompts c, the cross-attention probabilities
that every ``attn2`` layer l gives the concept's tokens are driven to zero:

    L(θ) = ‖ concat_l  A_l(x_t, t, c)[:, :, concept positions] ‖₂,   A_l = softmax(Q_l K_lᵀ / √d)

(the norm of all of them together, not its square: the authors' ``AttnController.loss``). The
concept positions of a prompt are the tokens of the concept's keyword (its name, ``"garbage_truck"``
-> "garbage truck", as the authors caption "a photo of {concept}") and, with ``pooler``, the
end-of-text token the text encoder pools. The maps are read by a diffusers attention processor put on
each ``attn2`` while the method runs: it computes the probabilities from the layer's own ``to_q`` and
``to_k`` and hands the layer's output to its original processor, so the network computes what it
always did. The authors first learn the concept as textual-inversion tokens (``use_ti``); here the
concept's own words are re-steered (their ``use_ti: false``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from relearnbench.api import Concept, Context, LossMethod, Model
from relearnbench.diffusion import noised, predict, tokenize
from relearnbench.errors import UserError
from relearnbench.methods.common import encode_set, trainable, training_prompts


class ConceptMaps:
    """A diffusers attention processor for one ``attn2``: while ``positions`` [B, L] is set, keeps the
    attention probabilities of those token positions in ``maps``; the output is the original
    processor's."""

    def __init__(self, original, maps: list, positions: list):
        self.original, self.maps, self.positions = original, maps, positions

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if self.positions and encoder_hidden_states is not None:
            mask = self.positions[0]  # [B, L]
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # [B·heads, HW, d]
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))  # [B·heads, L, d]
            probs = attn.get_attention_scores(query, key, None)  # [B·heads, HW, L]
            rows = mask.repeat_interleave(attn.heads, dim=0)[:, None, :]  # head_to_batch_dim is batch-major
            self.maps.append(probs.masked_select(rows.expand_as(probs)))
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


class FMN(LossMethod):
    """Forget-Me-Not (Zhang et al. 2023): the concept tokens' cross-attention maps driven to zero."""

    @dataclass(frozen=True)
    class Config:
        train: Literal["f", "x"] = "f"  # trained: f = the whole UNet (only_optimize_ca false), x = cross-attention
        keyword: str = ""  # the concept's words in its prompts ("" = its name, "_" and "-" as spaces)
        pooler: bool = True  # also re-steer the end-of-text token (use_pooler)
        steps: int = 35  # training steps
        lr: float = 2e-6  # AdamW learning rate
        weight_decay: float = 1e-2  # AdamW weight decay
        max_grad_norm: float = 1.0  # gradient clipping
        batch_size: int = 1  # images per step
        images: int = 32  # images of the train prompts encoded once
        prompts: Literal["all", "first"] = "all"  # captions: every train prompt, or the first (the concept's name)

    config_name = "fmn"
    version = "1"

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        cfg = self.config
        self.generator = torch.Generator().manual_seed(ctx.seed)
        texts = training_prompts(concept, cfg.prompts)
        self.data = encode_set(model, concept, ctx, texts, cfg.images, seed=ctx.seed)
        # the Encoded captions are sorted distinct texts: their concept positions, row for row
        distinct = sorted(set(texts))
        self.mask = self.concept_positions(model, concept, distinct).to(model.unet.device)
        self.maps, self.positions = [], []
        self.processors = model.unet.attn_processors  # the originals, put back by release()
        model.unet.set_attn_processor({name: ConceptMaps(p, self.maps, self.positions) if ".attn2." in name else p
                                       for name, p in self.processors.items()})
        self.unet = model.unet
        return trainable(model.unet, cfg.train)

    def concept_positions(self, model: Model, concept: Concept, texts: list[str]) -> torch.Tensor:
        """Bool [len(texts), L]: the keyword's tokens in each prompt, and its end-of-text token (``pooler``)."""
        tok = model.tokenizer
        keyword = self.config.keyword or concept.name.replace("_", " ").replace("-", " ")
        # the keyword's ids without encoding it as a text of its own (it is a part of the train prompts)
        kw = tok.convert_tokens_to_ids(tok.tokenize(keyword))
        ids = tokenize(model, texts)
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for row, seq in enumerate(ids.tolist()):
            for i in range(len(seq) - len(kw) + 1):
                if seq[i:i + len(kw)] == kw:
                    mask[row, i:i + len(kw)] = True
            if not mask[row].any():
                raise UserError(f"fmn: the keyword {keyword!r} is not in the train prompt {texts[row]!r}; "
                                f"name the concept's words with --set fmn.keyword=...")
            if self.config.pooler:
                mask[row, seq.index(tok.eos_token_id)] = True
        return mask

    def release(self) -> None:
        if getattr(self, "unet", None) is not None:
            self.unet.set_attn_processor(self.processors)
        self.unet = self.processors = self.data = self.mask = self.maps = self.positions = None

    def loss(self, model: Model, step: int) -> torch.Tensor:
        g = self.generator
        idx = torch.randperm(len(self.data), generator=g)[:self.config.batch_size].to(self.data.x0.device)
        x0, c = self.data.take(idx)
        x_t, t, _ = noised(model, x0, g)
        self.maps.clear()
        self.positions.append(self.mask[self.data.index[idx]])
        try:
            predict(model.unet, x_t, t, c)  # the maps are recorded on the way; the prediction is not used
        finally:
            self.positions.clear()
        if not self.maps:
            raise UserError("fmn: the UNet has no cross-attention layer (attn2) to re-steer")
        return torch.cat(self.maps).norm()
