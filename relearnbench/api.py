"""The small interfaces a plugin implements, and the objects the harness hands to it.

* ``Method.unlearn(model, concept, ctx)`` edits ``model`` in place (the harness gives it a copy of
  the base model and saves the UNet afterwards as the cached unlearned artifact, and beside it each text
  encoder the method changed: AdvUnlearn trains the text encoder).
* ``Attack.run(model, concept, ctx, evaluate)`` attacks a fresh copy of the unlearned model and
  calls ``evaluate(step, final=...)`` at each point of its relearning curve (``evaluate(None)`` for
  a single final evaluation; ``final=False`` at intermediate points, which then score only the
  curve metrics, ASR by default); prompt attacks pass ``forget_prompts=`` to evaluate their
  adversarial prompts; probes pass ``images=``, the forget images they made (prompt-major), to be
  scored instead of sampling.
* ``Metric.compute(ev)`` scores one evaluation stage; images are sampled once per stage by ``ev``
  and shared by every metric.
* ``Judge.flags(images, concept)`` says which images show the concept.

Each plugin class has a frozen dataclass ``Config`` (every field commented), a ``config_name``
(the ``--set`` namespace) and a ``version`` that enters the artifact hash: bump it when the
plugin's results change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from relearnbench.errors import UserError

if TYPE_CHECKING:  # keep `relearnbench ls` free of torch
    import torch


@dataclass(frozen=True)
class NoConfig:
    """This plugin has no settings."""


@dataclass(frozen=True)
class Prompt:
    text: str
    seed: Optional[int] = None  # per-prompt evaluation seed (UnlearnDiffAtk prompt files carry one)
    guidance: Optional[float] = None  # per-prompt guidance scale, else the sampler's


@dataclass(frozen=True)
class Concept:
    """What is erased and how it is judged; loaded from a TOML file (see relearnbench/concepts/).

    Three roles that share no prompt (docs/protocol.md): ``train`` is what the defender
    (a method, meta's simulated finetune, its retain terms) sees, ``attack`` what the attacker
    finetunes on, and the evaluation prompts (``forget``, ``related``, ``unrelated``) are seen only by
    metrics; UnlearnDiffAtk and concept inversion rewrite the ``forget`` prompts, as published."""

    name: str
    description: str
    forget: tuple[Prompt, ...]  # eval: prompts whose images should no longer show the concept
    related: tuple[str, ...]  # eval: benign prompts that share features with the concept
    unrelated: tuple[str, ...]  # eval: benign prompts that do not
    judge: str  # a JUDGES registry name
    judge_config: dict = field(default_factory=dict, hash=False)  # settings for the judge
    target: dict = field(default_factory=dict, hash=False)  # what the judge looks for (attribute/value, labels, ...)
    attack_data: str = "generate"  # the attacker's images: "world" (toy renderer), "generate" (original model), or a folder
    anchor: str = ""  # the replacement prompt a method maps the concept to ("" = unconditional)
    fid_reference: str = ""  # "world", an image folder, or a clean-fid statistics .npz
    source: str = ""  # the file it came from
    sha256: str = ""  # of that file, part of every artifact hash
    train: tuple[str, ...] = ()  # train: the concept texts a method erases (for nudity: "nudity")
    train_related: tuple[str, ...] = ()  # train: related benign prompts of the retain terms
    train_unrelated: tuple[str, ...] = ()  # train: unrelated benign prompts of the retain terms
    train_data: str = "generate"  # the defender's images: "generate" (the original model, before unlearning), "world", a folder
    attack: tuple[str, ...] = ()  # attack: the prompts of the attacker's concept images
    attack_related: tuple[str, ...] = ()  # attack: related benign prompts (ft_adaptive mixes them in)
    attack_unrelated: tuple[str, ...] = ()  # attack: unrelated benign prompts (ft_clean uses both benign sets)
    allow_overlap: bool = False  # the roles may share prompts (a published setting that overlaps); cells are marked

    @property
    def benign(self) -> tuple[str, ...]:
        return self.related + self.unrelated

    @property
    def forget_texts(self) -> list[str]:
        return [p.text for p in self.forget]

    @property
    def train_benign(self) -> tuple[str, ...]:
        return self.train_related + self.train_unrelated

    @property
    def attack_benign(self) -> tuple[str, ...]:
        return self.attack_related + self.attack_unrelated

    def roles(self) -> dict[str, tuple[str, ...]]:
        """Every prompt of each role: ``train``, ``attack`` and ``eval``."""
        return {"train": self.train + self.train_benign, "attack": self.attack + self.attack_benign,
                "eval": tuple(self.forget_texts) + self.benign}

    def role_hashes(self) -> dict[str, str]:
        """A hash of each role's prompts and data source (stored with every cell), and whether they may overlap."""
        import hashlib
        import json

        sources = {"train": self.train_data, "attack": self.attack_data, "eval": self.fid_reference}
        return {**{role: hashlib.sha256(json.dumps([sources[role], list(texts)]).encode()).hexdigest()[:16]
                   for role, texts in self.roles().items()}, "allow_overlap": self.allow_overlap}


@dataclass
class Model:
    """A text-to-image diffusion model as diffusers components."""

    name: str
    unet: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    scheduler: Any  # the training noise scheduler (DDPM); samplers are built from its config
    resolution: int  # image side in pixels
    preset: str  # "toy" or "sd14": which plugin presets apply
    fingerprint: str  # identifies the weights; part of every artifact hash
    device: Any = "cpu"
    dtype: Any = None  # dtype of the frozen parts; trainable weights stay float32
    text_encoder_2: Any = None  # SDXL's second text encoder (CLIPTextModelWithProjection); None for SD-1.x / 2.x
    tokenizer_2: Any = None  # its tokenizer

    def components(self) -> dict:
        second = dict(text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2) \
            if self.text_encoder_2 is not None else {}
        return dict(unet=self.unet, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                    vae=self.vae, scheduler=self.scheduler, **second)


@dataclass
class Score:
    metric: str  # "asr", or "gradients.cosine" for a metric with several outputs
    value: float
    lo: Optional[float] = None  # 95 % interval
    hi: Optional[float] = None
    n: int = 0  # how many samples (images, prompts) it averages
    info: dict = field(default_factory=dict)  # judge name and settings, sampler, ...


class Plugin:
    Config: type = NoConfig
    config_name: str = ""
    version: str = "1"
    needs_model: bool = True  # False only for the torch-free dummy plugins

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def preflight(self, concept: Concept, judge: Optional["Judge"]) -> list[str]:
        """What this plugin will need for ``concept`` (judged by ``judge``) and cannot find: one line per
        missing file, saying where to put it and how to get it. The run checks every plugin before any
        cell starts and stops on the first problem. Default: nothing is needed."""
        return []

    def title(self) -> str:
        """How progress bars and messages name this plugin."""
        return self.config_name or type(self).__name__

    def describe(self) -> dict:
        """What determines this plugin's output, hashed into the key of every artifact it makes."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", "version": self.version,
                "config": config_dict(self.config)}


class Method(Plugin):
    """An unlearning algorithm: edits ``model`` in place."""

    def unlearn(self, model: Model, concept: Concept, ctx: "Context") -> None:
        raise NotImplementedError


class Attack(Plugin):
    """What an adversary does to an unlearned model, with the concept's ``attack`` data only."""

    # True for a prompt attack that rewrites the evaluation prompts (UnlearnDiffAtk, as published):
    # it reads their text, and never trains on images of them; every other attack sees no eval prompt
    reads_eval_prompts: bool = False

    def run(self, model: Model, concept: Concept, ctx: "Context", evaluate: Callable[..., None]) -> None:
        raise NotImplementedError


class Metric(Plugin):
    """A score of one evaluation stage."""

    def compute(self, ev: Any) -> list[Score]:
        raise NotImplementedError


class Judge(Plugin):
    """Says which images show a concept."""

    def flags(self, images: "torch.Tensor", concept: Concept) -> "torch.Tensor":
        """Bool tensor [N]: image i shows the concept. ``images`` float [N,3,H,W] in [0, 1]."""
        raise NotImplementedError

    def correct(self, images: "torch.Tensor", prompts: list[str]) -> Optional["torch.Tensor"]:
        """Bool tensor [N]: image i renders what prompt i asks for; None if this judge cannot say."""
        return None

    def info(self) -> dict:
        """Name, version and settings, stored with every score this judge produced."""
        return {"judge": self.config_name, "version": self.version, **config_dict(self.config)}


@dataclass
class Context:
    """What the harness lends a plugin for one stage."""

    device: Any
    dtype: Any
    seed: int
    judge: Optional[Judge] = None
    base: Optional[Callable[[], Model]] = None  # a fresh copy of the original (pre-unlearning) model
    artifacts: Any = None  # relearnbench.artifacts.Artifacts: cached files keyed by content hash
    progress: Any = None  # relearnbench.progress.Progress
    # required: the evaluation's sampler (relearnbench.evaluate.SampleConfig, sample.*) and the sampler of the
    # training images the original model generates (relearnbench.data.GenerateConfig, generate.*)
    sample_config: Any = field(kw_only=True)
    generate_config: Any = field(kw_only=True)
    checkpointing: bool = False  # unlearn.checkpointing: the trained UNet recomputes its activations in backward
    optimizer_state: str = "float32"  # unlearn.optimizer_state: the dtype of AdamW's moments (relearnbench.memory)

    def track(self, iterable, description: str, total: Optional[int] = None):
        """Iterate with a progress bar (a no-op without one)."""
        if self.progress is None:
            return iterable
        return self.progress.track(iterable, description=description, total=total)


def config_dict(config) -> dict:
    """A config dataclass as a dict ({} for a plugin without one)."""
    import dataclasses

    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}


class LossMethod(Method):
    """A method whose update is a gradient step on a loss (ESD, SalUn, a third party's).

    A subclass implements ``prepare`` (encode fixed data once, freeze a teacher, say which UNet
    parameters train) and ``loss`` (the unlearning loss at the current weights for one step);
    ``unlearn`` below runs the loop, then ``release`` drops what ``prepare`` kept (the harness
    reuses one plugin instance for many cells). Exposing the per-step loss is all it takes to get ``X+meta``
    and ``X+retain``: the meta wrapper adds its own terms to this loss's gradient at every step.

    Config fields read here: ``steps`` and ``lr``; optional ``weight_decay`` and ``max_grad_norm``.
    """

    def prepare(self, model: Model, concept: Concept, ctx: Context) -> list:
        """Set up for ``model``; return the ``(name, parameter)`` pairs of ``model.unet`` that train."""
        raise NotImplementedError

    def prepared(self, model: Model, concept: Concept, ctx: Context) -> list:
        """``prepare``, its answer checked to be ``(name, parameter)`` pairs: a bare parameter would otherwise
        fail later as "too many values to unpack", naming nothing."""
        named = list(self.prepare(model, concept, ctx))
        bad = next((x for x in named if not (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str))), None)
        if bad is not None:
            raise UserError(f"{self.title()}: prepare must return the (name, parameter) pairs of the UNet parameters "
                            f"that train, e.g. [(n, p) for n, p in model.unet.named_parameters() if ...], not "
                            f"{type(bad).__name__} items")
        return named

    def loss(self, model: Model, step: int) -> Optional["torch.Tensor"]:
        """The unlearning loss at the current weights (a scalar with a graph to the parameters), or None
        when ``edit_grads`` alone makes the gradient (meta around a closed-form method)."""
        raise NotImplementedError

    def edit_grads(self, params: list) -> None:
        """Change the gradients before clipping and stepping (SalUn masks them here, meta adds its
        terms); default: nothing."""

    def finish(self, model: Model) -> None:
        """After the last step, before ``release``: put other weights than the trained ones in ``model`` (SDD
        hands back its EMA teacher); default: nothing."""

    def release(self) -> None:
        """Drop the per-run state ``prepare`` kept (a teacher UNet, encoded data); default: nothing."""

    @property
    def steps(self) -> int:
        return self.config.steps

    def optimizer(self, params: list):
        import torch

        return torch.optim.AdamW(params, lr=self.config.lr, weight_decay=getattr(self.config, "weight_decay", 0.0))

    def lr_schedule(self, optimizer):
        """A learning-rate scheduler of ``optimizer`` (a ``torch.optim.lr_scheduler``), stepped after each step;
        default: none, a constant rate. SPM's published recipe warms up and restarts a cosine."""
        return None

    def unlearn(self, model: Model, concept: Concept, ctx: "Context") -> None:
        import torch

        checkpointing = getattr(ctx, "checkpointing", False)  # unlearn.checkpointing
        if checkpointing:  # recompute the UNet's activations in backward (the copies prepare makes inherit it)
            model.unet.enable_gradient_checkpointing()
        named = self.prepared(model, concept, ctx)
        params = [p for _, p in named]
        model.unet.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        from relearnbench.memory import optimizer_with_state

        opt = optimizer_with_state(self.optimizer(params), getattr(ctx, "optimizer_state", "float32"), ctx.device)
        schedule = self.lr_schedule(opt)
        clip = getattr(self.config, "max_grad_norm", 0.0)
        for step in ctx.track(range(self.steps), self.title(), total=self.steps):
            loss = self.loss(model, step)
            if loss is not None and not torch.isfinite(loss):
                raise FloatingPointError(f"{self.title()} loss is {loss.item()} at step {step}; "
                                         f"lower its learning rate (--set {self.config_name}.lr=...)")
            opt.zero_grad(set_to_none=True)
            if loss is not None:
                loss.backward()
            self.edit_grads(params)
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if schedule is not None:
                schedule.step()
        opt.zero_grad(set_to_none=True)  # the gradients and (with ``opt``) AdamW's state go before evaluation
        del opt, schedule
        if checkpointing:
            model.unet.disable_gradient_checkpointing()
        self.finish(model)
        model.unet.requires_grad_(False)
        self.release()
