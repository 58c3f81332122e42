"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024, arXiv 2308.14761), closed form.

Each cross-attention key and value projection W_old (out × in) is replaced by the minimiser of

    Σ_erase s_e ‖W c_i − v*_i‖² + Σ_preserve s_p ‖W c_j − W_old c_j‖² + λ ‖W − W_old‖²_F

    W = (s_e Σ v*_i c_iᵀ + s_p Σ W_old c_j c_jᵀ + λ W_old) (s_e Σ c_i c_iᵀ + s_p Σ c_j c_jᵀ + λ I)⁻¹

where c_i are text-embedding tokens of a train prompt, v*_i = W_old c_i* the same projection of the
matching tokens of its guide prompt (the concept's anchor, or a train_unrelated prompt), and c_j
the tokens of the concept's train benign prompts (never the evaluation prompts). Tokens (``tokens``): ``tail`` as the paper's code —
from the prompt's last word through the end-of-text and padding tokens (aligned with the guide's),
while preserved prompts contribute all their tokens; ``last`` as the authors' newer script — the
last word's token only. Nothing trains: the edited weights are the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from relearnbench.api import Concept, Context, Method, Model
from relearnbench.diffusion import encode_text_frozen, tokenize
from relearnbench.methods.common import training_prompts


class UCE(Method):
    """Unified Concept Editing (Gandikota et al. 2024): closed-form cross-attention edit."""

    @dataclass(frozen=True)
    class Config:
        erase_scale: float = 1.0  # s_e, weight of the erase terms
        preserve_scale: float = 0.1  # s_p, weight of the preserve terms; 0 = the paper script's max(0.1, 1/count)
        lamb: float = 0.1  # λ, pull towards the original weights
        tokens: Literal["tail", "last"] = "tail"  # which tokens of a prompt are edited (see the docstring)
        guide: Literal["anchor", "unrelated"] = "anchor"  # v*: the concept's anchor, or its unrelated prompts in turn
        preserve: Literal["benign", "related", "unrelated", "none"] = "benign"  # which benign prompts to preserve
        preserve_uncond: bool = False  # also preserve "", whose outputs guidance uses for every image (ours)
        edit_keys: bool = True  # edit to_k as well as to_v

    config_name = "uce"
    version = "1"

    def unlearn(self, model: Model, concept: Concept, ctx: Context) -> None:
        c = self.config
        forget = training_prompts(concept, "all")
        guides = self.guides(concept, forget)
        preserve = self.preserved(concept)
        erase_in, guide_in = [], []  # aligned token embeddings: c_i and the guide's c_i*
        for f, g in zip(forget, guides):
            ci, gi = self.erase_tokens(model, f, g)
            erase_in.append(ci)
            guide_in.append(gi)
        preserve_in = [self.preserve_tokens(model, p) for p in preserve]
        # train_erase.py: preserve_scale = max(0.1, 1/len(retain_texts)) unless given
        s_p = c.preserve_scale or (max(0.1, 1 / len(preserve)) if preserve else 0.0)
        C_e = torch.cat(erase_in).double()  # [n_e, in]
        C_g = torch.cat(guide_in).double()
        C_p = torch.cat(preserve_in).double() if preserve_in else C_e[:0]
        for proj in self.projections(model.unet):
            edit(proj, C_e, C_g, C_p, c.erase_scale, s_p, c.lamb)

    def guides(self, concept: Concept, forget: list[str]) -> list[str]:
        """The guide prompt of each erased text: the anchor, or the train_unrelated prompts in turn."""
        if self.config.guide == "anchor":
            return [concept.anchor] * len(forget)
        return [concept.train_unrelated[i % len(concept.train_unrelated)] for i in range(len(forget))]

    def preserved(self, concept: Concept) -> tuple[str, ...]:
        """The texts whose keys and values the edit keeps: the ``preserve`` set's train prompts, and ""."""
        c = self.config
        return {"benign": concept.train_benign, "related": concept.train_related,
                "unrelated": concept.train_unrelated, "none": ()}[c.preserve] + (("",) if c.preserve_uncond else ())

    def projections(self, unet) -> list:
        """The cross-attention value (and key) projections, in module order."""
        out = []
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                out += [module.to_v] + ([module.to_k] if self.config.edit_keys else [])
        return out

    def _tail_start(self, model: Model, text: str) -> int:
        """Index of the prompt's last word token (BOS is 0; "" gives 0)."""
        ids = tokenize(model, [text])[0].tolist()
        eos = model.tokenizer.eos_token_id
        return max(0, ids.index(eos) - 1) if eos in ids else len(ids) - 1

    def erase_tokens(self, model: Model, text: str, guide: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_i, c_i*): aligned token embeddings [n, in] of a forget prompt and its guide."""
        emb = encode_text_frozen(model, [text, guide]).hidden.to(model.unet.device)
        a, b = self._tail_start(model, text), self._tail_start(model, guide)
        if self.config.tokens == "last":
            return emb[0, a:a + 1], emb[1, b:b + 1]
        n = emb.shape[1] - max(a, b)  # the longer prompt sets how many tail tokens both keep
        return emb[0, a:a + n], emb[1, b:b + n]

    def preserve_tokens(self, model: Model, text: str) -> torch.Tensor:
        emb = encode_text_frozen(model, [text]).hidden.to(model.unet.device)[0]
        if self.config.tokens == "last":
            a = self._tail_start(model, text)
            return emb[a:a + 1]
        return emb


def edit(proj, C_e: torch.Tensor, C_g: torch.Tensor, C_p: torch.Tensor, s_e: float, s_p: float, lamb: float) -> None:
    """Replace ``proj.weight`` (W_old) by the closed form of the docstring: the erase rows ``C_e`` [n_e, in] map
    to W_old ``C_g`` (their guides), the preserve rows ``C_p`` keep W_old's outputs, λ pulls towards W_old."""
    W_old = proj.weight.detach().double()
    C_e, C_g, C_p = C_e.double(), C_g.double(), C_p.double()
    mat1 = lamb * W_old + s_e * (C_g @ W_old.T).T @ C_e + s_p * (C_p @ W_old.T).T @ C_p
    mat2 = lamb * torch.eye(W_old.shape[1], dtype=W_old.dtype, device=W_old.device) \
        + s_e * C_e.T @ C_e + s_p * C_p.T @ C_p
    # W = mat1 · mat2⁻¹, mat2 symmetric positive definite: solve rather than invert
    W = torch.linalg.solve(mat2, mat1.T).T
    with torch.no_grad():
        proj.weight.copy_(W.to(proj.weight.dtype))
