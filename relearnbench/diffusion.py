"""The shared diffusion math. Every method, attack and metric calls these; nothing re-implements them.

Notation: x0 clean latents, ε noise, t timestep, x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε (``scheduler.add_noise``),
c the text conditioning (``Cond``), ε_θ(x_t, t, c) the UNet. The denoising loss L_DM = ‖target − ε_θ(x_t, t, c)‖²
with the target set by ``prediction_type`` (ε, v or x0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F

from relearnbench import seeds
from relearnbench.api import Model, Prompt

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline


# -- text -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cond:
    """What the UNet is conditioned on, for a batch of B prompts: one type for every model, so a method that
    encodes, indexes, concatenates and predicts through it runs on SD-1.x, SD-2.x and SDXL alike.

    * SD-1.x / 2.x: ``hidden`` = the text encoder's last hidden state [B, 77, D].
    * SDXL: ``hidden`` = both text encoders' penultimate hidden states side by side [B, 77, D1 + D2], ``pooled`` =
      text_encoder_2's projected pooled embedding [B, P] and ``time_ids`` = (original size, crop top-left, target
      size) [B, 6], the UNet's ``added_cond_kwargs`` (diffusers' ``StableDiffusionXLPipeline.encode_prompt``)."""

    hidden: torch.Tensor  # [B, L, D] encoder_hidden_states (c in the equations)
    pooled: Optional[torch.Tensor] = None  # [B, P] SDXL's text_embeds; None for SD-1.x / 2.x
    time_ids: Optional[torch.Tensor] = None  # [B, 6] SDXL's time_ids; None for SD-1.x / 2.x

    def map(self, f) -> "Cond":
        """``f`` applied to each tensor (an op on the batch axis keeps the rows aligned)."""
        return Cond(*(None if x is None else f(x) for x in (self.hidden, self.pooled, self.time_ids)))

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def __getitem__(self, rows) -> "Cond":
        """Rows ``rows`` (an index tensor or a slice) of the batch."""
        return self.map(lambda x: x[rows])

    @property
    def device(self):
        return self.hidden.device

    def to(self, *args, **kwargs) -> "Cond":
        return self.map(lambda x: x.to(*args, **kwargs))

    def float(self) -> "Cond":
        return self.map(lambda x: x.float())

    def detach(self) -> "Cond":
        return self.map(lambda x: x.detach())

    def expand(self, n: int) -> "Cond":
        """A batch of ``n`` copies of a one-prompt condition (``uncond`` beside a batch), as views."""
        return self.map(lambda x: x.expand(n, *x.shape[1:]))

    def split(self, size: int) -> tuple["Cond", ...]:
        return tuple(self[i:i + size] for i in range(0, len(self), size))

    @staticmethod
    def cat(conds: Sequence["Cond"]) -> "Cond":
        """The batches one after the other (``torch.cat`` of each tensor)."""
        first = conds[0]
        return Cond(*(None if getattr(first, k) is None else torch.cat([getattr(c, k) for c in conds])
                      for k in ("hidden", "pooled", "time_ids")))

    def unet_kwargs(self, dtype) -> dict:
        """The UNet's conditioning keywords, in ``dtype``."""
        kwargs = {"encoder_hidden_states": self.hidden.to(dtype)}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled.to(dtype), "time_ids": self.time_ids.to(dtype)}
        return kwargs


def text_encoders(model: Model) -> list:
    """The model's (tokenizer, text encoder) pairs: one for SD-1.x / 2.x, two for SDXL."""
    pairs = [(model.tokenizer, model.text_encoder)]
    if getattr(model, "text_encoder_2", None) is not None:
        pairs.append((model.tokenizer_2, model.text_encoder_2))
    return pairs


def tokenize(model: Model, prompts: Sequence[str], tokenizer=None) -> torch.Tensor:
    tokenizer = tokenizer or model.tokenizer
    return tokenizer(list(prompts), padding="max_length", truncation=True,
                     max_length=tokenizer.model_max_length, return_tensors="pt").input_ids


def time_ids(model: Model, n: int) -> torch.Tensor:
    """SDXL's added time ids [n, 6]: original size (H, W), crop top-left (0, 0), target size (H, W), at the
    model's resolution (what ``StableDiffusionXLPipeline`` passes when none is given)."""
    r = float(model.resolution)
    return torch.tensor([[r, r, 0.0, 0.0, r, r]]).expand(n, 6)


def _encode(model: Model, ids: Sequence[torch.Tensor]) -> Cond:
    """Cond of token ids, one [B, L] tensor per text encoder (``text_encoders``)."""
    pairs = text_encoders(model)
    if len(pairs) == 1:  # SD-1.x / 2.x: the last hidden state (SD-2's encoder config already drops a layer)
        encoder = pairs[0][1]
        return Cond(encoder(ids[0].to(encoder.device))[0])
    hidden, pooled = [], None
    for (_, encoder), tokens in zip(pairs, ids):
        out = encoder(tokens.to(encoder.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])  # SDXL conditions on the penultimate layer of both
        pooled = out[0]  # text_encoder_2's projected pooled output (text_embeds); the last encoder's is kept
    hidden = torch.cat(hidden, dim=-1)
    return Cond(hidden, pooled, time_ids(model, hidden.shape[0]).to(hidden.device, hidden.dtype))


def encode_text(model: Model, prompts: Sequence[str]) -> Cond:
    """c = the prompts' conditioning (``Cond``), each encoder fed its own tokenizer's ids."""
    return _encode(model, [tokenize(model, prompts, tok) for tok, _ in text_encoders(model)])


@torch.no_grad()
def encode_text_frozen(model: Model, prompts: Sequence[str]) -> Cond:
    """Text embeddings that do not change during training: compute once, reuse every step."""
    return encode_text(model, prompts).float()


def input_embeddings(model: Model) -> list[torch.Tensor]:
    """Each text encoder's token-embedding table [|V|, D_k] (``text_encoders``' order)."""
    return [encoder.get_input_embeddings().weight for _, encoder in text_encoders(model)]


def encode_text_with_embeddings(model: Model, ids: torch.Tensor, mask: torch.Tensor,
                                embeds: Sequence[torch.Tensor]) -> Cond:
    """c for token ``ids`` [B, L] (of ``model.tokenizer``) whose input token embeddings at ``mask`` [B, L]
    are replaced by ``embeds``, one [mask.sum(), D_k] per text encoder (``input_embeddings``' order),
    differentiably in ``embeds``: soft prompts (UnlearnDiffAtk) and new words (textual inversion). A hook on
    each token-embedding table does the swap, because transformers' CLIPTextModel takes no ``inputs_embeds``.
    The other encoders read the same tokens with their own tokenizer's padding after the end of text."""
    handles, per_encoder = [], []
    eos = model.tokenizer.eos_token_id
    ended = (ids == eos).int().cumsum(1) - (ids == eos).int() > 0  # past the first end-of-text token
    for (tokenizer, encoder), embed in zip(text_encoders(model), embeds):
        table = encoder.get_input_embeddings()
        where = mask.to(table.weight.device)

        def swap(module, inputs, output, where=where, embed=embed):
            return output.masked_scatter(where[..., None], embed.to(output.dtype))

        handles.append(table.register_forward_hook(swap))
        per_encoder.append(ids.masked_fill(ended, tokenizer.pad_token_id) if tokenizer is not model.tokenizer else ids)
    try:
        return _encode(model, per_encoder)
    finally:
        for handle in handles:
            handle.remove()


def prefixed(ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of a ``k``-token soft prefix: [sot, k placeholders, prompt, eot, ...] cut back to the tokenizer's
    length L, the placeholders (sot ids, to be replaced through the mask by ``encode_text_with_embeddings``) at 1..k,
    as UnlearnDiffAtk's and AdvUnlearn's prefix_k attacks build it."""
    adv = torch.cat([ids[:, :1], ids[:, :1].expand(-1, k), ids[:, 1:ids.shape[1] - k]], dim=1)
    mask = torch.zeros_like(adv, dtype=torch.bool)
    mask[:, 1:1 + k] = True
    return adv, mask


# -- images <-> latents -----------------------------------------------------------------------
@torch.no_grad()
def encode_images(model: Model, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """x0 = vae.encode(2·image − 1).mean · scaling_factor for images in [0, 1]; float32 latents."""
    out = []
    vae = model.vae
    for chunk in images.split(batch_size):
        x = (chunk.to(vae.device, vae.dtype) * 2 - 1)
        out.append(vae.encode(x).latent_dist.mean.float() * vae.config.scaling_factor)
    return torch.cat(out)


@torch.no_grad()
def decode_latents(model: Model, latents: torch.Tensor) -> torch.Tensor:
    vae = model.vae
    x = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
    return ((x.float() + 1) / 2).clamp(0, 1)


# -- noising and the denoising loss -----------------------------------------------------------
def sample_timesteps(model: Model, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    T = model.scheduler.config.num_train_timesteps
    return torch.randint(0, T, (n,), generator=generator).to(model.unet.device)


def add_noise(model: Model, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return model.scheduler.add_noise(x0, noise, t)


def loss_target(model: Model, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    kind = model.scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return model.scheduler.get_velocity(x0, noise, t)
    if kind == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {kind!r}")


def predict(unet, x_t: torch.Tensor, t: torch.Tensor, c: Cond) -> torch.Tensor:
    """ε_θ(x_t, t, c) in float32 whatever the UNet's dtype."""
    dtype = weights_dtype(unet)
    return unet(x_t.to(dtype), t, **c.unet_kwargs(dtype)).sample.float()


def weights_dtype(unet) -> torch.dtype:
    """The UNet's dtype: its first parameter's, as diffusers' ``unet.dtype`` finds it after a walk over every
    module (2 ms a call on the toy UNet, 3 % of ESD's step). A UNet at other weights (``meta._At``) has no
    parameters of its own and names its dtype."""
    parameters = getattr(unet, "parameters", None)
    return next(parameters()).dtype if parameters is not None else unet.dtype


def denoising_loss(model: Model, x0: torch.Tensor, c: Cond, unet=None,
                   generator: Optional[torch.Generator] = None, t: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L_DM(θ; x0, c) = E_{t, ε} ‖target(x0, ε, t) − ε_θ(x_t, t, c)‖², one Monte-Carlo sample per item."""
    unet = unet or model.unet
    x_t, t, target = noised(model, x0.to(unet.device), generator, t)
    return F.mse_loss(predict(unet, x_t, t, c.to(x_t.device)), target)


def noised(model: Model, x0: torch.Tensor, generator: Optional[torch.Generator] = None,
           t: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, target) of the denoising loss: ε, then t (unless given) drawn from ``generator``."""
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    if t is None:
        t = sample_timesteps(model, x0.shape[0], generator)
    return add_noise(model, x0, noise, t), t, loss_target(model, x0, noise, t)


def guide(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ε̃ = ε(∅) + s (ε(c) − ε(∅)). ESD's negative guidance is s = −η."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def guided(unet, x_t: torch.Tensor, t: torch.Tensor, uncond: Cond, c: Cond, scale) -> torch.Tensor:
    """``guide`` of ε(x_t, t, ∅) and ε(x_t, t, c), both branches in one UNet call as diffusers' pipeline makes
    them (on the toy UNet at one thread a batch of 16 costs 58 ms, two of 8 76 ms). ``scale``: a number, or one
    per row [B, 1, 1, 1]."""
    both = Cond.cat([uncond.expand(len(c)), c])
    eps_uncond, eps_cond = predict(unet, torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)
    return guide(eps_uncond, eps_cond, scale)


# diffusers is imported where it is used: planning a run, and so rerunning a finished one, imports this module but
# needs none of diffusers, whose import was half of a finished grid's rerun (cProfile, runs/prof-rerun, issue 18)
def _ddim(model: Model, cls=None, **overrides) -> DDIMScheduler:
    """A DDIM sampler (or another scheduler class ``cls``, with ``overrides`` of its config) from the model's noise
    schedule (quietly: diffusers logs the whole config each time)."""
    from diffusers import DDIMScheduler
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return (cls or DDIMScheduler).from_config(model.scheduler.config, **overrides)
    finally:
        diffusers_logging.set_verbosity(level)


def ddim_scheduler(model: Model, steps: int) -> DDIMScheduler:
    s = _ddim(model)
    s.set_timesteps(steps, device=model.unet.device)
    return s


@torch.no_grad()
def ddim_to_step(model: Model, c: Cond, uncond: Cond, stop: int, steps: int,
                 guidance: float, generator: Optional[torch.Generator] = None, unet=None):
    """Sample x_t with DDIM from pure noise down to step index ``stop`` of ``steps`` (ESD's x_t).

    Returns (x_t, t): the latents after ``stop`` denoising steps and the timestep they sit at.
    """
    unet = unet or model.unet
    sched = ddim_scheduler(model, steps)
    b = len(c)
    shape = (b, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = torch.randn(shape, generator=generator).to(unet.device) * sched.init_noise_sigma
    x = denoise(model, x, c, uncond, guidance, sched, sched.timesteps[:stop], unet=unet)
    return x, sched.timesteps[stop].expand(b)


def ddim_xt(model: Model, c: Cond, uncond: Cond, steps: int, guidance: float,
            generator: torch.Generator, unet=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, t) for a distillation target (ESD's and SDD's recipe): x_t sampled by DDIM from pure noise on a
    ``steps``-step schedule, conditioned on c at ``guidance``, stopped at a random step; t uniform over the
    DDPM steps that DDIM step covers (the meta-unlearning authors' ``t_ddpm``)."""
    stop = int(torch.randint(steps, (1,), generator=generator))
    x_t, _ = ddim_to_step(model, c, uncond, stop, steps, guidance, generator=generator, unet=unet)
    T = model.scheduler.config.num_train_timesteps
    width = T // steps
    t = (T - width * (stop + 1)) + torch.randint(width, (len(c),), generator=generator)
    return x_t, t.to(x_t.device)


@torch.no_grad()
def denoise(model: Model, x: torch.Tensor, c: Cond, uncond: Cond, guidance,
            sched: DDIMScheduler, timesteps: torch.Tensor, on_step=None, unet=None) -> torch.Tensor:
    """DDIM with classifier-free guidance from latents ``x`` at ``timesteps[0]`` through ``timesteps`` (a
    tail or head of ``sched.timesteps``). ``guidance``: a scale, or one per row [B, 1, 1, 1].
    ``on_step(x, t, t_next)`` may change the latents after each step from ``t`` to ``t_next`` (None after
    the last): the probes inject noise or paste back a known region there."""
    unet = unet or model.unet
    for i, t in enumerate(timesteps):
        eps = guided(unet, x, t.expand(x.shape[0]), uncond, c, guidance)
        x = sched.step(eps, t, x).prev_sample
        if on_step is not None:
            x = on_step(x, int(t), int(timesteps[i + 1]) if i + 1 < len(timesteps) else None)
    return x


def posterior_std(model: Model, t: int, t_next: Optional[int]) -> float:
    """σ of the DDPM posterior q(x_t' | x_t, x0) for a sampler step t → t' (DDIM's σ at η = 1, Song et al.
    2021 eq. 16): √((1 − ᾱ_t') / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_t')), with ᾱ = 1 past the last step, as DDIM's
    ``set_alpha_to_one``. (diffusers computes it only inside its private ``_get_variance``.)"""
    a = model.scheduler.alphas_cumprod
    a_t, a_next = float(a[t]), 1.0 if t_next is None else float(a[t_next])
    return ((1 - a_next) / (1 - a_t) * (1 - a_t / a_next)) ** 0.5


# -- sampling images --------------------------------------------------------------------------
def image_jobs(prompts: Sequence[Prompt], n_per_prompt: int, seed: int, guidance: float,
               sampler: str = "ddim") -> list[tuple[str, float, int]]:
    """(text, guidance, generator seed) of every image, prompt-major, as ``sample`` seeds them: image j of
    prompt i uses base = ``prompt.seed`` (or ``seed`` · 100003 + i), seed base · 1000 + j for ``ddim`` and
    base + 100003 · j for ``unlearndiffatk`` (whose one image per prompt is its file seed itself)."""
    jobs = []
    for i, p in enumerate(prompts):
        base = p.seed if p.seed is not None else seeds.of(seed, "prompt", i)
        g = p.guidance if p.guidance is not None else guidance
        image_seeds = [base * 1000 + j if sampler == "ddim" else base + 100003 * j for j in range(n_per_prompt)]
        jobs += [(p.text, g, s) for s in image_seeds]
    return jobs


def initial_noise(model: Model, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """x_T ~ N(0, I) [N, C, h, w] on the CPU, one image per generator (its first draw)."""
    c, h = model.unet.config.in_channels, model.unet.config.sample_size
    return torch.stack([torch.randn((c, h, h), generator=g) for g in generators])


def frozen_dtype(model: Model):
    """Autocast to the frozen parts' dtype (``--dtype bf16``): the pipeline hands the text encoder's
    bf16 embeddings to a float32 UNet and its float32 latents to a bf16 VAE, which only autocast
    reconciles. A no-op at float32. Read from the VAE, which no method trains (a text encoder may train,
    in float32: advunlearn)."""
    dtype = model.vae.dtype
    return torch.autocast(model.unet.device.type, dtype=dtype, enabled=dtype != torch.float32)


def pipeline(model: Model, scheduler: str = "ddim") -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """A pipeline of the model's components (the number of steps is each call's); ``scheduler`` ``ddim`` or
    ``pndm`` (Stable Diffusion's own default) on the model's noise schedule, or ``lms``: UnlearnDiffAtk's
    sampler as its code builds it (Diffusion-MU-Attack src/tasks/classifier_.py:
    ``LMSDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")``, SD-1.x's schedule)."""
    from diffusers import LMSDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if scheduler == "ddim":
        sched = _ddim(model)
    elif scheduler == "pndm":  # as SD-1.x ships it (its scheduler_config.json: skip_prk_steps, PLMS steps only)
        sched = _ddim(model, PNDMScheduler, skip_prk_steps=True)
    elif scheduler == "lms":
        sched = LMSDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                     num_train_timesteps=1000)
    else:
        raise ValueError(f"scheduler {scheduler!r}: expected ddim, pndm or lms")
    if getattr(model, "text_encoder_2", None) is not None:
        # the unconditional branch encodes "" as ``encode_text`` does (and ESD's SDXL script), not the zeros
        # the pipeline's default force_zeros_for_empty_prompt puts there: sample and generate stay one sampler
        pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder,
                                         text_encoder_2=model.text_encoder_2, tokenizer=model.tokenizer,
                                         tokenizer_2=model.tokenizer_2, unet=model.unet, scheduler=sched,
                                         force_zeros_for_empty_prompt=False, add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                       unet=model.unet, scheduler=sched, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample(model: Model, prompts: Sequence[Prompt], n_per_prompt: int, *, steps: int, guidance: float,
           seed: int, batch_size: int = 32, progress=None, sampler: str = "ddim", scheduler: str = "",
           negative_prompt: str = "") -> torch.Tensor:
    """Images [len(prompts)·n, 3, H, W] in [0, 1], prompt-major. ``scheduler`` (``pipeline``'s) replaces the
    sampler's own, at its seeds; ``negative_prompt`` conditions the unguided branch instead of "".

    ``sampler="ddim"``: image j of prompt i starts from the latents of seed ``prompt.seed`` (or
    ``seed·100003 + i``) · 1000 + j, so any subset re-samples identically. ``sampler="unlearndiffatk"``:
    UnlearnDiffAtk's evaluation (OPTML-Group/Diffusion-MU-Attack, src/tasks/classifier_.py ``sampling``):
    LMS, latents ``torch.randn`` from ``torch.manual_seed(evaluation_seed)`` at the model's resolution, the
    file's guidance; its one image per prompt is j = 0, further images (ours) use seed + 100003·j."""
    if sampler not in ("ddim", "unlearndiffatk"):
        raise ValueError(f"sampler {sampler!r}: expected ddim or unlearndiffatk")
    pipe = pipeline(model, scheduler or ("ddim" if sampler == "ddim" else "lms"))
    # (index, text, guidance, generator seed)
    jobs = [(k, *job) for k, job in enumerate(image_jobs(prompts, n_per_prompt, seed, guidance, sampler))]
    images = torch.empty((len(jobs), 3, model.resolution, model.resolution))
    chunks = [jobs[k:k + batch_size] for k in range(0, len(jobs), batch_size)]
    for chunk in (progress.track(chunks, description="sampling") if progress is not None else chunks):
        for g in sorted({j[2] for j in chunk}):  # the pipeline takes one guidance scale per call
            part = [j for j in chunk if j[2] == g]
            # torch.manual_seed(s) then randn draws what a fresh generator seeded s draws
            latents = initial_noise(model, [torch.Generator().manual_seed(s) for *_, s in part])
            with frozen_dtype(model):
                imgs = pipe([j[1] for j in part], num_inference_steps=steps, guidance_scale=g,
                            negative_prompt=[negative_prompt] * len(part) if negative_prompt else None,
                            latents=latents.to(model.unet.device, model.unet.dtype), output_type="pt",
                            height=model.resolution, width=model.resolution).images
            images[[j[0] for j in part]] = imgs.float().cpu()
    return images


@torch.no_grad()
def generate(model: Model, jobs: Sequence[tuple[str, float, int]], noise: torch.Tensor, *, steps: int,
             strength: float = 1.0, x0: Optional[torch.Tensor] = None, on_step=None, batch_size: int = 32,
             progress=None) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1]: the sampler of ``sample`` (DDIM, classifier-free guidance) with a start
    point and a per-step hook, which the probes need and the diffusers pipeline does not take. Image k is
    conditioned on ``jobs[k]`` (text, guidance, seed; see ``image_jobs``) from the noise ε = ``noise[k]``.

    * Without ``x0``, it starts from pure noise ε, as ``sample`` does (strength must be 1).
    * With ``x0`` [N, C, h, w] (latents), diffusers' img2img convention: only the last round(strength · steps)
      DDIM steps run, from x_{t_start} = add_noise(x0, ε, t_start) at the first of them; strength 0 is x0 itself.
    * ``on_step(x, t, t_next, rows)`` runs after every step (see ``denoise``); ``rows`` lists the images of
      ``jobs`` that ``x`` holds.
    """
    if not 0 <= strength <= 1 or (x0 is None and strength != 1):
        raise ValueError(f"strength must lie in [0, 1], and be 1 without x0; got {strength}")
    # the evaluation pipeline's own DDIM (StableDiffusionPipeline moves an old config to steps_offset = 1), so that
    # from pure noise with no hook these are the images ``sample`` makes
    sched = pipeline(model).scheduler
    sched.set_timesteps(steps, device=model.unet.device)
    timesteps = sched.timesteps[steps - round(strength * steps):]
    device = model.unet.device
    uncond = encode_text_frozen(model, [""])
    images = []
    batches = range(0, len(jobs), batch_size)
    for start in (progress.track(batches, description="sampling") if progress is not None else batches):
        rows = list(range(start, min(start + batch_size, len(jobs))))
        eps = noise[rows].to(device)
        if x0 is None:
            x = eps * sched.init_noise_sigma
        elif len(timesteps) == 0:
            x = x0[rows].to(device)
        else:
            x = add_noise(model, x0[rows].to(device), eps, timesteps[0].expand(len(rows)))
        c = encode_text_frozen(model, [jobs[k][0] for k in rows])
        scale = torch.tensor([float(jobs[k][1]) for k in rows], device=device).view(-1, 1, 1, 1)
        hook = None if on_step is None else (lambda x, t, t_next, rows=rows: on_step(x, t, t_next, rows))
        images.append(decode_latents(model, denoise(model, x, c, uncond, scale, sched, timesteps, hook)).cpu())
    return torch.cat(images)
