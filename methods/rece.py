"""RECE: Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024, arXiv 2407.12383; CharlesGong12/RECE).

UCE's closed-form edit of the cross-attention keys and values (``methods/uce.py``), then ``rounds``
rounds that look for what the edited model can still render and erase it too. In a round, the
embedding c' whose keys and values on the edited weights W_l come closest to the original W⁰_l's of
the concept embedding c (all its tokens), with RECE's regulariser λ_r ‖c'‖² (``close_form_emb_regzero``),

    c' = argmin Σ_l ‖W_l c' − W⁰_l c‖² + λ_r ‖c'‖²  =  (λ_r I + Σ_l W_lᵀ W_l)⁻¹ Σ_l W_lᵀ W⁰_l c,

is erased in closed form: UCE's formula with c' as the erased rows, the guide's tokens as c*, the
preserved texts at ``round_preserve_scale`` and λ = ``round_lamb`` around the current weights. Each
round records the residual Σ_l ‖W_l c' − W⁰_l c‖² / Σ_l ‖W⁰_l c‖² of its c' before and after its edit:
how closely the edited model can still reproduce the concept's keys and values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from relearnbench.api import Concept, Context, Model
from relearnbench.diffusion import encode_text_frozen
from relearnbench.methods.common import training_prompts
from relearnbench.methods.uce import UCE, edit


class RECE(UCE):
    """Reliable and Efficient Concept Erasure (Gong et al. 2024): UCE, then rounds of closed-form adversarial erasure."""

    @dataclass(frozen=True)
    class Config(UCE.Config):
        rounds: int = 3  # rounds (RECE's epochs) of find-and-erase after UCE's edit
        reg: float = 0.1  # λ_r, the regulariser ‖c'‖² of the found embedding
        round_erase_scale: float = 1.0  # s_e of each round's edit
        round_preserve_scale: float = 0.1  # s_p of each round's edit
        round_lamb: float = 0.1  # λ of each round's edit, around the current weights

    config_name = "rece"
    version = "1"

    def unlearn(self, model: Model, concept: Concept, ctx: Context) -> None:
        c = self.config
        projections = self.projections(model.unet)
        originals = [p.weight.detach().double().clone() for p in projections]  # W⁰_l
        super().unlearn(model, concept, ctx)  # UCE's edit
        forget = training_prompts(concept, "all")
        concepts = encode_text_frozen(model, forget).hidden.to(model.unet.device).double()  # c: every token
        guides = encode_text_frozen(model, self.guides(concept, forget)).hidden.to(model.unet.device).double()
        preserve = self.preserved(concept)
        C_p = encode_text_frozen(model, list(preserve)).hidden.to(model.unet.device).flatten(0, 1) if preserve \
            else concepts[0, :0]
        history = []
        for _ in range(c.rounds):
            found = self.find(projections, originals, concepts)  # c' of each erased text
            before = self.residual(projections, originals, concepts, found)
            for proj in projections:
                edit(proj, found.flatten(0, 1), guides.flatten(0, 1), C_p, c.round_erase_scale,
                     c.round_preserve_scale, c.round_lamb)
            history.append({"before": before, "after": self.residual(projections, originals, concepts, found)})
        self.history = tuple(history)  # per round; a tuple of floats, nothing heavy kept

    def find(self, projections: list, originals: list, concepts: torch.Tensor) -> torch.Tensor:
        """c' [n, L, in] of each concept embedding [n, L, in]: the closed form of the docstring."""
        def W():  # each W_l in float64 as it is needed: one copy alive at a time, not all of them beside W⁰
            return (p.weight.detach().double() for p in projections)

        first = projections[0].weight
        eye = torch.eye(first.shape[1], dtype=torch.float64, device=first.device)
        A = self.config.reg * eye + sum(w.T @ w for w in W())  # λ_r I + Σ W_lᵀ W_l (symmetric)
        B = sum(w.T @ w0 for w, w0 in zip(W(), originals))  # Σ W_lᵀ W⁰_l
        return torch.linalg.solve(A, B @ concepts.flatten(0, 1).T).T.reshape(concepts.shape)

    @staticmethod
    def residual(projections: list, originals: list, concepts: torch.Tensor, found: torch.Tensor) -> float:
        """Σ_l ‖W_l c' − W⁰_l c‖² / Σ_l ‖W⁰_l c‖² over every token of every erased text."""
        c, f = concepts.flatten(0, 1), found.flatten(0, 1)
        num = sum(((f @ p.weight.detach().double().T - c @ w0.T) ** 2).sum() for p, w0 in zip(projections, originals))
        den = sum(((c @ w0.T) ** 2).sum() for w0 in originals)
        return float(num / den)
