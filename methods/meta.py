"""Meta-unlearning (Gao et al., ICCV 2025, arXiv 2410.12777) around any method, and its control.

    θ_FT   = θ − τ ∇L_DM(θ; D_FT)                      (M simulated finetuning steps on forget data)
    L_meta = − L_DM(θ_FT; D_FT) − ζ [ L_DM(θ_FT; D_r) − L_DM(θ; D_r) ]
    θ     ← θ − ω (γ1 ∇L_unlearn(θ) + γ2 ∇L_meta(θ))

``X+meta``: for a loss-based X (a ``LossMethod``: ESD, SalUn, a third party's) the gradient of X's
loss and the meta terms are summed at every step. Any other X (UCE) runs first and its edited
weights are the starting point of the meta objective alone (plus the retain terms), as the paper
does for closed-form methods.

``order=1`` (default) is the authors' procedure (sail-sg/Meta-Unlearning, src/esd_meta.py): at θ,
X's gradient plus the retain gradients γ_u ∇L(θ; D_unrelated) + γ_r ∇L(θ; D_related); then a copy
θ' of the UNet (one buffer, allocated once) is finetuned for M AdamW steps on forget-train images,
and the gradients at θ' of the held-out forget, related and unrelated losses, weighted γ'_f, γ'_r,
γ'_u, are *subtracted* from θ's gradient (the Jacobian dθ'/dθ taken as the identity); clip, step.
``order=2`` is the paper's objective (``methods/meta_order2.py``): θ_FT is M plain SGD steps of size τ kept
in the autograd graph (torch.func.functional_call), so the gradient flows through the inner updates. Each inner
gradient is scaled to norm ``max_grad_norm`` (differentiably: a clip when it is longer, as order 1
clips, and a stretch when it is shorter, since an Adam step's length does not depend on the gradient's
scale), and τ defaults to √2·inner_lr·√N / max_grad_norm for the N UNet weights. One Adam step of
inner_lr moves every weight by about inner_lr, inner_lr·√N in all; Adam's momentum carries each step's
direction into the next while plain SGD steps on fresh batches partly cancel, which the √2 offsets as
measured: θ_FT then lies about as far from θ at order 2 as at order 1 (within 1.5× on the toy model and
the tiny random one; ``benchmarks/meta_displacement.py`` prints both).

The weights γ come from a named ``preset`` (``meta.toml``'s ``[presets]``: what the authors' scripts pass,
what they meant, the paper's ζ form); a weight set in a preset table or by ``--set`` overrides the preset's.

Switches ablate the two mechanisms the paper credits: ``forget_term`` (−L(θ_FT; D_FT), which
shrinks the finetuning gradient on forget data), ``retain_diff`` (−L(θ_FT; D_r), which makes the
forget and retain gradients disagree) and ``retain`` (the L(θ; D_r) terms at θ). ``X+retain`` is
the control: X with the retain terms alone and no simulated finetune.

Data: the concept's ``train`` role only (docs/protocol.md). D_FT is images of its
``train_prompts``, D_r of ``train_related`` and ``train_unrelated``, all from its ``train_data``
source (the original model samples them before unlearning, as in the authors' code). The attack finetunes on
the attacker's own prompts and images, and nothing is scored on any of these.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import tomllib
from dataclasses import dataclass
from typing import Iterator, Literal, Optional

import torch
import torch.nn.functional as F

from relearnbench import seeds
from relearnbench.api import Concept, Context, LossMethod, Method, Model
from relearnbench.diffusion import Cond, denoising_loss, noised, predict
from relearnbench.config import preset_path
from relearnbench.errors import UserError
from relearnbench.methods import meta_order2 as order2
from relearnbench.methods.common import Encoded, encode_set


class Meta(LossMethod):
    """The meta-unlearning wrapper around a base method, or (suffix ``retain``) its control."""

    @dataclass(frozen=True)
    class Config:
        order: Literal[1, 2] = 1  # 1: the authors' first-order procedure; 2: through the inner SGD steps
        steps: int = 0  # outer steps (0 = the base method's steps)
        lr: float = 0.0  # ω, AdamW learning rate of the outer step (0 = the base method's lr)
        weight_decay: float = 1e-4  # of the outer and inner AdamW
        max_grad_norm: float = 1.0  # clip of the summed outer gradient and of each inner step's (order 2: its norm)
        inner_steps: int = 3  # M simulated finetuning steps per outer step
        inner_lr: float = 1e-5  # AdamW lr of the simulated finetune (order 1)
        tau: float = 0.0  # τ, the SGD step of the simulated finetune at order 2; 0 = √2·inner_lr·√(UNet weights)/clip
        inner_batch: int = 10  # forget-train images per inner step
        forget_images: int = 60  # forget images, halved into finetune-train and held-out
        retain_images: int = 30  # images of the related prompts, and as many of the unrelated ones
        batch_size: int = 10  # images per batch of a term
        term_batches: int = 1  # batches whose gradients are summed per term (authors: 3 batches of 10)
        forward_batch: int = 0  # most images per UNet call when the terms are evaluated together (0 = all)
        timesteps: tuple[int, ...] = ()  # fixed timesteps per term, summed (() = one random t per image)
        preset: str = "authors-intended"  # the γ below when not set: a name in meta.toml's [presets]
        forget_ft: Optional[float] = None  # γ'_f (authors' γ2_1): weight of −L(θ_FT; held-out forget)
        related_ft: Optional[float] = None  # γ'_r (γ2_2): weight of −L(θ_FT; related)
        unrelated_ft: Optional[float] = None  # γ'_u (γ2_3): weight of −L(θ_FT; unrelated)
        related: Optional[float] = None  # γ_r (γ1_2): weight of +L(θ; related)
        unrelated: Optional[float] = None  # γ_u (γ1_1): weight of +L(θ; unrelated)
        forget_term: bool = True  # switch: the −L(θ_FT; D_FT) term
        retain_diff: bool = True  # switch: the −L(θ_FT; D_r) terms
        retain: bool = True  # switch: the +L(θ; D_r) terms
        # which UNet weights the outer and inner steps train: the base method's own (ESD-u's), or every weight (the
        # authors' scripts/esd_meta.sh and sdd_meta.sh: --finetuning_method full; the +meta-full wrapper)
        train: Literal["base", "full"] = "base"
        # which weights the simulated finetune (θ') trains: every UNet weight, as the authors' attacker ("full"), or
        # only those the outer step trains ("base"; ours: a memory saving, the copy then shares the others' tensors
        # with θ and holds gradients and AdamW state for the trained ones alone). In the key only when set
        inner_train: Literal["full", "base"] = "full"

    config_name = "meta"
    # the base's keys we have our own of: a --set on the base's reaches ours unless ours is set (config.reaching)
    replaces = ("steps", "lr", "weight_decay", "max_grad_norm")
    borrows = ("steps", "lr")  # of those, the ones whose 0 means the base's value (schedule)
    version = "3"  # 3: order 2's τ and inner clipping; 2: the terms evaluated together, fused inner AdamW
    optimizer_state, device = "float32", "cpu"  # unlearn.optimizer_state and the run's device, from prepare's ctx

    def __init__(self, config=None, base: Method | None = None, suffix: str = "meta"):
        """``base``: the method wrapped (built by ``relearnbench.config.build`` for ``esd+meta``);
        ``suffix``: ``meta``, or ``retain`` for the control."""
        super().__init__(config)
        self.base, self.suffix = base, suffix

    def describe(self) -> dict:
        """What the artifact hash covers: our config and the base method's. The class is named as
        the per-base classes this wrapper used to make (``ESD_meta``), so cached artifacts stay valid."""
        config = dataclasses.asdict(self.config)
        if config["inner_train"] == "full":  # the keys of cells made before the setting existed
            del config["inner_train"]
        return {**super().describe(), "class": f"{__name__}.{type(self.base).__name__}_{self.suffix}",
                "config": {"meta": config, "suffix": self.suffix, "base": self.base.describe()}}

    def schedule(self) -> tuple[int, float]:
        """(outer steps, learning rate): ours, else the loss-based base method's."""
        c, base = self.config, self.base
        return (c.steps or (base.config.steps if self.loss_based() else 0),
                c.lr or (getattr(base.config, "lr", 0.0) if self.loss_based() else 0.0))

    def preflight(self, concept, judge) -> list[str]:
        return [self._no_schedule()] if self._no_schedule() else self.base.preflight(concept, judge)

    def _no_schedule(self) -> str:
        steps, lr = self.schedule()
        return "" if steps > 0 and lr > 0 else (f"{self.title()}: set meta.steps and meta.lr "
                                                f"({self.base.title()} has no steps or learning rate to borrow)")

    # -- one step of the shared loop (relearnbench.api.LossMethod.unlearn) ---------------------------
    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        """The base's setup (a closed-form base runs: its edit is the starting point, every UNet weight
        trains), then our data, encoded once, and θ' for order 1."""
        base = self.base
        if self.loss_based():
            named = base.prepared(model, concept, ctx)
            if self.config.train == "full":  # the base's loss and our terms move every weight
                named = list(model.unet.named_parameters())
        else:
            base.unlearn(model, concept, ctx)
            named = list(model.unet.named_parameters())
        self.model, self.named = model, named
        self.generator = torch.Generator().manual_seed(seeds.of(ctx.seed, "meta"))
        self.data = self._data(model, concept, ctx)
        self.optimizer_state, self.device = getattr(ctx, "optimizer_state", "float32"), ctx.device
        if self.config.order == 1 and self.meta_terms():
            self._allocate_copy(model, {n for n, _ in named})
        return named

    def loss(self, model: Model, step: int) -> torch.Tensor | None:
        """The base's loss (none for a closed-form base: the meta terms alone move the weights)."""
        return self.base.loss(model, step) if self.loss_based() else None

    def edit_grads(self, params: list) -> None:
        """Add the meta and retain gradients to the base's, then let the base edit the sum (SalUn's mask)."""
        if self.config.order == 1:
            self._first_order(self.model, self.named)
        else:
            J = self.objective(self.model, self.named)
            if J.requires_grad:
                J.backward()
        if self.loss_based():
            self.base.edit_grads(params)

    @property
    def steps(self) -> int:
        return self._checked_schedule()[0]

    def optimizer(self, params: list):
        """Meta's own AdamW at its schedule's rate, constant: a base method's ``lr_schedule`` (SPM's warm-up and
        cosine restarts, set over its own steps) is not carried over to meta's steps (ours: no published +meta recipe
        has one)."""
        return torch.optim.AdamW(params, lr=self._checked_schedule()[1], weight_decay=self.config.weight_decay)

    def _checked_schedule(self) -> tuple[int, float]:
        if self._no_schedule():
            raise UserError(self._no_schedule())
        return self.schedule()

    def loss_based(self) -> bool:
        return isinstance(self.base, LossMethod)

    def title(self) -> str:
        return f"{self.base.title()}+{self.suffix}"

    def finish(self, model: Model) -> None:
        if self.loss_based():
            self.base.finish(model)

    def release(self) -> None:
        """The harness reuses this instance for many cells: drop the model, the buffers and the data."""
        self.model = self.named = self.copy = self.copy_params = self.copy_trained = self.inner_opt = None
        self.copy_sources = None
        self.data = None
        if self.loss_based():
            self.base.release()

    def meta_terms(self) -> bool:
        return self.config.forget_term or self.config.retain_diff

    # -- data: encoded once ------------------------------------------------------------------------
    def _data(self, model: Model, concept: Concept, ctx: Context) -> dict[str, Encoded]:
        c, data = self.config, {}
        if self.meta_terms():
            forget = encode_set(model, concept, ctx, concept.train, c.forget_images,
                                seed=seeds.of(ctx.seed, "meta-forget-data"))
            data["forget_train"], data["forget_test"] = forget.halves()
        for which, prompts in (("related", concept.train_related), ("unrelated", concept.train_unrelated)):
            if prompts:
                data[which] = encode_set(model, concept, ctx, prompts, c.retain_images,
                                         seed=seeds.of(ctx.seed, f"meta-{which}-data"))
        return data

    def gammas(self) -> dict[str, float]:
        """The five weights: each one set in the config, else the preset's (its base method's row if it has one)."""
        c, presets = self.config, gamma_presets()
        if c.preset not in presets:
            raise UserError(f"meta.preset={c.preset!r}: known presets {', '.join(presets)}")
        rows = presets[c.preset]
        row = rows.get(getattr(self.base, "config_name", ""), rows["default"])
        return {k: getattr(c, k) if getattr(c, k) is not None else row[k] for k in row}

    def terms(self, at: str) -> list[tuple[float, Encoded]]:
        """(signed weight, data) of the terms at θ (``at="theta"``, added) or θ_FT (``"ft"``, subtracted)."""
        c, d, w = self.config, self.data, self.gammas()
        if at == "theta":
            pairs = [(w["unrelated"], "unrelated"), (w["related"], "related")] if c.retain else []
        else:
            pairs = ([(-w["forget_ft"], "forget_test")] if c.forget_term else []) + \
                    ([(-w["related_ft"], "related"), (-w["unrelated_ft"], "unrelated")] if c.retain_diff else [])
        return [(w, d[k]) for w, k in pairs if w and k in d]

    def losses(self, model: Model, unet, terms: list[tuple[float, Encoded]]) -> Iterator[torch.Tensor]:
        """Σ w·L_DM over the terms, each summed over ``term_batches`` batches at the fixed ``timesteps``
        or one random timestep per image. Their noised batches go through the UNet together, at most
        ``forward_batch`` images per call (one call costs less than one per term); yields each call's
        share of the sum."""
        c, g = self.config, self.generator
        parts = []  # (weight, condition, x_t, t, target)
        for w, data in terms:
            for x0, cond in data.batches(c.term_batches, c.batch_size, g):
                for t in c.timesteps or (None,):
                    tt = None if t is None else torch.full((x0.shape[0],), t, device=x0.device)
                    parts.append((w, cond, *noised(model, x0, g, tt)))
        for group in _groups(parts, c.forward_batch):
            w, cond, x_t, t, target = zip(*group)
            pred = predict(unet, torch.cat(x_t), torch.cat(t), Cond.cat(cond)).split([x.shape[0] for x in x_t])
            yield sum(wi * F.mse_loss(p, tg) for wi, p, tg in zip(w, pred, target))

    # -- order 1: the authors' procedure -----------------------------------------------------------
    def _allocate_copy(self, model: Model, trained: set[str]):
        """θ': a UNet copy made once (each step copies θ into it in place) and its AdamW, whose
        state is zeroed in place each step (the same as the fresh optimizer the authors make). With
        ``inner_train="base"`` the copy's untrained weights are θ's own tensors (frozen through the unlearning)."""
        from relearnbench.memory import optimizer_with_state

        if self.config.inner_train == "full":  # the attacker finetunes every weight
            self.copy = copy.deepcopy(model.unet).requires_grad_(True)
            self.copy_params = list(self.copy.parameters())
            self.copy_sources = list(model.unet.parameters())
        else:
            shared = {id(p): p for n, p in model.unet.named_parameters() if n not in trained}
            self.copy = copy.deepcopy(model.unet, shared)
            pairs = [(p, src) for (n, p), src in zip(self.copy.named_parameters(), model.unet.parameters())
                     if n in trained]
            self.copy_params, self.copy_sources = [p for p, _ in pairs], [src for _, src in pairs]
            for p in self.copy_params:
                p.requires_grad_(True)
        self.copy_trained = [p for n, p in self.copy.named_parameters() if n in trained]
        fused = self.copy_params[0].device.type in ("cpu", "cuda")  # one kernel: 5x faster on the toy CPU
        self.inner_opt = optimizer_with_state(
            torch.optim.AdamW(self.copy_params, lr=self.config.inner_lr, weight_decay=self.config.weight_decay,
                              fused=fused), self.optimizer_state, self.device, free_grads=True)

    def _first_order(self, model: Model, named: list) -> None:
        params = [p for _, p in named]
        for loss in self.losses(model, model.unet, self.terms("theta")):
            _accumulate(params, torch.autograd.grad(loss, params, allow_unused=True))
        if not self.meta_terms():
            return
        self._finetune_copy(model)
        for loss in self.losses(model, self.copy, self.terms("ft")):
            _accumulate(params, torch.autograd.grad(loss, self.copy_trained, allow_unused=True))

    def _finetune_copy(self, model: Model) -> None:
        """θ' ← θ, then M AdamW steps on forget-train images: the authors' simulated finetune."""
        c, g = self.config, self.generator
        with torch.no_grad():
            for dst, src in zip(self.copy_params, self.copy_sources):
                dst.copy_(src)
            for state in self.inner_opt.state.values():  # float32: zeroed in place (no allocation per step)
                for v in state.values():
                    v.zero_()
        # the simulated malicious finetune: an epoch over the forget-train images, as the authors
        for x0, cond in self.data["forget_train"].batches(c.inner_steps, c.inner_batch, g):
            loss = denoising_loss(model, x0, cond, unet=self.copy, generator=g)
            for p, grad in zip(self.copy_params, torch.autograd.grad(loss, self.copy_params, allow_unused=True)):
                p.grad = grad
            if c.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.copy_params, c.max_grad_norm)
            self.inner_opt.step()
            self.inner_opt.zero_grad(set_to_none=True)  # not held beside the gradients of the terms at θ'
        if self.optimizer_state != "float32":  # the savings: a fresh state next time (the same numbers as a zeroed
            self.inner_opt.state.clear()  # one), so none is held while the other terms run

    # -- order 2: the paper's objective (methods/meta_order2.py) -----------------------------------
    def objective(self, model: Model, named: list, second_order: bool = True) -> torch.Tensor:
        """J(θ) through the inner SGD steps (``meta_order2.objective``)."""
        return order2.objective(self, model, named, second_order)


@functools.cache
def gamma_presets() -> dict[str, dict[str, dict[str, float]]]:
    """The named γ presets of ``meta.toml``'s ``[presets]``: name -> base method's config name (or "default")
    -> the five weights."""
    with open(preset_path(Meta), "rb") as f:
        return tomllib.load(f)["presets"]


def _accumulate(params: list, grads) -> None:
    with torch.no_grad():
        for p, grad in zip(params, grads):
            if grad is None:
                continue
            if p.grad is None:
                p.grad = grad
            else:
                p.grad.add_(grad)


def _groups(parts: list, limit: int) -> Iterator[list]:
    """Consecutive runs of ``parts`` (weight, condition, x_t, t, target) of at most ``limit`` images each
    (a larger part alone; 0 = one run)."""
    group, size = [], 0
    for part in parts:
        n = part[2].shape[0]  # x_t's batch
        if group and limit and size + n > limit:
            yield group
            group, size = [], 0
        group.append(part)
        size += n
    if group:
        yield group

