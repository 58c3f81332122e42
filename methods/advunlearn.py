"""AdvUnlearn (Zhang et al., NeurIPS 2024, arXiv 2405.15234; OPTML-Group/AdvUnlearn): adversarial training of
the TEXT ENCODER, the first method here that leaves the UNet as it is.

A bi-level problem. The inner attack (the attacker) finds k soft token embeddings δ, prepended to the concept
prompt c (``prefix_k``), with which the current model predicts what the original predicts under c:

    δ* = argmin_δ ‖ ε(x_t, t, τ_φ([δ; c])) − ε*(x_t, t, τ*(c)) ‖²           (attack_steps Adam steps on δ;
                                                                           ``fast_at``: on sign(∇δ))

The outer step (the defender) trains the text encoder τ_φ with ESD's loss on the adversarial prompt, plus the
utility-retain regulariser on retain prompts r (the published set is COCO object prompts; here the concept's
train-role benign prompts, ``train_related`` and ``train_unrelated``, never the evaluation prompts):

    L(φ) = ‖ ε(x_t, t, τ_φ([δ*; c])) − [ε*(x_t, t, ∅) − η (ε*(x_t, t, c) − ε*(x_t, t, ∅))] ‖²
           + w ‖ ε(x_t^r, t, τ_φ(r)) − ε*(x_t^r, t, τ*(r)) ‖²

ε is the UNet, never trained (ε = ε*); τ* the original text encoder, whose encodings are computed once. x_t and
x_t^r are sampled by DDIM from the original model under c and r at ``start_guidance``, stopped at one random step
(ESD's recipe, ``relearnbench.diffusion.ddim_xt``). For the first ``warmup`` steps the outer loss reads c itself;
after them a new δ* is found every ``attack_every`` steps, from random vocabulary tokens (``attack_init=random``)
or from the last δ* (``latest``). Trained: the text encoder's transformer layers (``component`` all / self-attention
/ MLP, ``layers``), its final layer norm with all of them; the token and position embeddings never (the code's
``param_choices``). On SDXL both text encoders train alike.

Not a ``LossMethod``: that loop and the meta wrapper are defined on UNet weights (meta's simulated finetune copies
and trains the UNet), and the trained weights here are the text encoder's. ``advunlearn+meta`` therefore runs as
around a closed-form method: AdvUnlearn first, then meta trains the UNet from its model. Differences from the
reference code, each ours: the attack's gradient is zeroed every step (the code accumulates it over the attack's
steps), and each step's retain prompts are a fresh random subset (the code draws without replacement until the set
is used up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from relearnbench.api import Concept, Context, Method, Model
from relearnbench.diffusion import (Cond, ddim_xt, encode_text, encode_text_frozen, encode_text_with_embeddings,
                                    guided, input_embeddings, predict, prefixed, text_encoders, tokenize)
from relearnbench.errors import UserError
from relearnbench.methods.common import training_prompts


def parameter_group(encoder, component: str = "all", layers: tuple[int, ...] = (),
                    norm_layer: bool = False) -> list[tuple[str, torch.nn.Parameter]]:
    """The code's ``param_choices`` for ``text_encoder_full`` / ``text_encoder_layer...``: the encoder layers (all,
    or ``layers``), their ``self_attn`` or ``mlp`` alone by ``component``; the final layer norm with every layer
    and every component, or with ``norm_layer``; never the embeddings."""
    if component not in ("all", "attn", "ffn"):
        raise UserError(f"advunlearn.component={component!r}: expected all, attn or ffn")
    part = {"all": "", "attn": ".self_attn.", "ffn": ".mlp."}[component]
    out = []
    for name, p in encoder.named_parameters():
        local = name.removeprefix("text_model.")
        if local.startswith("final_layer_norm."):
            keep = norm_layer or (component == "all" and not layers)
        elif local.startswith("encoder.layers."):
            keep = (not layers or int(local.split(".")[2]) in layers) and part in local
        else:
            keep = False
        if keep:
            out.append((name, p))
    if not out:
        raise UserError(f"advunlearn: component={component!r}, layers={list(layers)} select no text-encoder weight")
    return out


class AdvUnlearn(Method):
    """AdvUnlearn (Zhang et al. 2024): the text encoder adversarially trained against soft-prompt attacks"""

    @dataclass(frozen=True)
    class Config:
        steps: int = 1000  # outer iterations (text-encoder updates)
        lr: float = 1e-5  # Adam learning rate of the text encoder
        component: Literal["all", "attn", "ffn"] = "all"  # trained part of each layer: all, self-attention, MLP
        layers: tuple[int, ...] = ()  # trained encoder layers (() = every layer: text_encoder_full)
        norm_layer: bool = False  # train the final layer norm with a component or layers too
        eta: float = 1.0  # η, the negative guidance of ESD's target
        ddim_steps: int = 50  # DDIM schedule x_t is sampled on
        start_guidance: float = 3.0  # classifier-free guidance when sampling x_t
        prompts: Literal["all", "first"] = "first"  # c: the concept's name, or every train prompt
        retain_weight: float = 0.3  # w of the utility-retain term (0 = none)
        retain_batch: int = 5  # retain prompts per step
        warmup: int = 200  # outer steps on c itself before the first attack
        attack: Literal["pgd", "fast_at"] = "fast_at"  # the inner attack's step: Adam on ∇δ, or on sign(∇δ)
        attack_steps: int = 30  # the inner attack's steps
        attack_lr: float = 1e-3  # its Adam learning rate
        attack_tokens: int = 1  # k, the adversarial tokens prepended to c
        attack_init: Literal["random", "latest"] = "random"  # δ from random vocabulary tokens, or the last δ*
        attack_every: int = 1  # a new δ* (and c) every this many outer steps
        max_grad_norm: float = 0.0  # gradient clipping of the text encoder (0 = none, as the code)

    config_name = "advunlearn"
    version = "1"

    def unlearn(self, model: Model, concept: Concept, ctx: Context) -> None:
        cfg = self.config
        g = torch.Generator().manual_seed(ctx.seed)
        texts = training_prompts(concept, cfg.prompts)
        retain = list(concept.train_benign)
        if cfg.retain_weight and not retain:
            raise UserError(f"concept {concept.name} has no train_related / train_unrelated prompts for advunlearn's "
                            "retain term; add them to the concept file or --set advunlearn.retain_weight=0")
        # τ*'s encodings, before anything trains: the targets' c, ∅ and r
        c_star, uncond = encode_text_frozen(model, texts), encode_text_frozen(model, [""])
        r_star = encode_text_frozen(model, retain) if retain else None
        ids, mask = prefixed(tokenize(model, texts), cfg.attack_tokens)
        encoders = [encoder for _, encoder in text_encoders(model)]
        named = [(n, p) for e in encoders for n, p in
                 parameter_group(e.float(), cfg.component, tuple(cfg.layers), cfg.norm_layer)]  # trained: float32
        params = [p for _, p in named]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        delta, i = None, 0
        for step in ctx.track(range(cfg.steps), self.title(), total=cfg.steps):
            if step % cfg.attack_every == 0:  # the concept text of the next steps, and its δ* after the warm-up
                i = int(torch.randint(len(texts), (1,), generator=g))
                if step >= cfg.warmup:
                    init = delta if cfg.attack_init == "latest" else None
                    delta = self.attack(model, ids[i:i + 1], mask[i:i + 1], c_star[i:i + 1], uncond, init, g)
            rows = torch.randperm(len(retain), generator=g)[:cfg.retain_batch].tolist() if cfg.retain_weight else []
            c = c_star[i:i + 1]
            x_t, t = ddim_xt(model, Cond.cat([c] + ([r_star[rows]] if rows else [])), uncond, cfg.ddim_steps,
                             cfg.start_guidance, g)
            with torch.no_grad():
                target = guided(model.unet, x_t[:1], t[:1], uncond, c, -cfg.eta)  # ε*(∅) − η (ε*(c) − ε*(∅))
                retain_target = predict(model.unet, x_t[1:], t[1:], r_star[rows]) if rows else None
            cond = (encode_text_with_embeddings(model, ids[i:i + 1], mask[i:i + 1], delta) if delta is not None
                    else encode_text(model, texts[i:i + 1]))
            if rows:
                cond = Cond.cat([cond, encode_text(model, [retain[r] for r in rows])])
            pred = predict(model.unet, x_t, t, cond)
            loss = F.mse_loss(pred[:1], target)
            if rows:
                loss = loss + cfg.retain_weight * F.mse_loss(pred[1:], retain_target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"advunlearn loss is {loss.item()} at step {step}; lower its learning rate "
                                         "(--set advunlearn.lr=...)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
        opt.zero_grad(set_to_none=True)
        for e in encoders:
            e.requires_grad_(False)

    def attack(self, model: Model, ids: torch.Tensor, mask: torch.Tensor, c_star: Cond, uncond: Cond,
               init: list | None, g: torch.Generator) -> list[torch.Tensor]:
        """δ* for one concept prompt: ``attack_steps`` steps of Adam (on sign(∇δ) for ``fast_at``) so that the
        current model under [δ; c] predicts what the original does under c, on x_t the original samples from c.
        One [k, D] tensor per text encoder (``input_embeddings``' order)."""
        cfg = self.config
        tables = [table.detach().float() for table in input_embeddings(model)]
        if init is None:  # k random vocabulary tokens' embeddings (the code's init_adv)
            tokens = torch.randint(tables[0].shape[0], (cfg.attack_tokens,), generator=g).to(tables[0].device)
            init = [table[tokens] for table in tables]
        delta = [d.detach().clone().requires_grad_(True) for d in init]
        opt = torch.optim.Adam(delta, lr=cfg.attack_lr)
        for _ in range(cfg.attack_steps):
            x_t, t = ddim_xt(model, c_star, uncond, cfg.ddim_steps, cfg.start_guidance, g)
            with torch.no_grad():
                target = predict(model.unet, x_t, t, c_star)  # ε*(x_t, t, c)
            pred = predict(model.unet, x_t, t, encode_text_with_embeddings(model, ids, mask, delta))
            # the text encoder's weights get no gradient from the attacker
            grads = torch.autograd.grad(F.mse_loss(pred, target), delta)
            for d, grad in zip(delta, grads):
                d.grad = grad.sign() if cfg.attack == "fast_at" else grad
            opt.step()
        return [d.detach() for d in delta]
