"""A tiny text-to-image model of the Stable Diffusion 1.x architecture, trained from scratch.

Same diffusers / transformers classes as SD-1.x, shrunk: an AutoencoderKL taking 32×32 RGB to
4×16×16 latents, a 1 M-parameter UNet2DConditionModel, and a 2-layer CLIPTextModel over SD's full
49,408-token vocabulary (so SD's tokenizer, prompts and adversarial-prompt attacks work unchanged).
The VAE is trained first; then UNet and text encoder are trained jointly on its latents with
ε-prediction, as SD was.

The UNet attends (self- and cross-attention) at 8×8 and in its mid block but not at 16×16:
there, self-attention cost 40 % of a CPU training step, and in a GPU sweep of recipes the model
without it learned prompts much faster (benign prompts rendered right after 2300 steps: 96 %
against 59 % with attention at both levels).
"""

from __future__ import annotations

import copy
import math

import torch
from torch.nn import functional as F

# SD-1.x's noise schedule, so that methods and attacks see the timesteps they expect
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                clip_sample=False, prediction_type="epsilon", steps_offset=1)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
           block_out_channels=(16, 32), norm_num_groups=8, mid_block_add_attention=False,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
UNET = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8)
TEXT = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, projection_dim=64, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407)


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET)


def make_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT))


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULE)


def _cosine_lr(opt, steps: int, warmup: int):
    def factor(i):
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup))) * 0.95 + 0.05

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_vae(images: torch.Tensor, *, steps: int, batch_size: int = 32, lr: float = 2e-3, kl_weight: float = 1e-5,
              seed: int = 0, progress=None):
    """Reconstruction (MSE + L1) with a small KL term keeping the latent space smooth enough to
    diffuse in; images are uint8 [N, 3, 32, 32]."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = _cosine_lr(opt, steps, warmup=max(1, steps // 20))
    vae.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        x = images[idx].float() / 127.5 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        kl = posterior.kl().mean() / x[0].numel()
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(loss=loss.item())
    return vae.eval()


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch_size: int = 256):
    """Posterior mean and std of every image, and the scaling factor that gives the scaled
    latents unit variance (SD's 0.18215, measured for this VAE)."""
    means, stds = [], []
    for k in range(0, len(images), batch_size):
        d = vae.encode(images[k:k + batch_size].float() / 127.5 - 1).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    mean, std = torch.cat(means), torch.cat(stds)
    spread = (mean.var() + std.pow(2).mean()).sqrt()
    return mean, std, float(1 / spread)


class EMA:
    """Exponential moving average of weights; samples from it are cleaner than from the last step."""

    def __init__(self, modules, decay: float):
        self.decay = decay
        self.live = list(modules)
        self.shadow = [copy.deepcopy(m).eval().requires_grad_(False) for m in self.live]

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))  # short memory while the weights move fast
        for live, shadow in zip(self.live, self.shadow):
            torch._foreach_lerp_(list(shadow.parameters()), list(live.parameters()), 1 - d)


def train_text_to_image(latent_mean, latent_std, scaling: float, captions, tokenizer, *, steps: int,
                        batch_size: int = 64, lr: float, uncond_p: float = 0.1, snr_gamma: float = 5.0,
                        ema_decay: float = 0.998, seed: int = 0, progress=None):
    """Train UNet and text encoder jointly on scaled latents sampled from the VAE posterior.

    ``captions(indices) -> list[str]`` gives one caption per latent; ``""`` replaces it
    ``uncond_p`` of the time so the model also learns the unconditional ε of classifier-free
    guidance. Loss: ε-MSE with min-SNR-γ weights (Hang et al. 2023), which converges several
    times faster on a small budget by not letting the easy low-noise steps dominate.
    Returns the EMA copies of (unet, text_encoder)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    unet, text_encoder, noise_sched = make_unet(), make_text_encoder(), make_scheduler()
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=snr_gamma) / snr  # min-SNR-γ for ε-prediction

    ids_cache: dict[str, torch.Tensor] = {}

    def token_ids(texts):
        missing = [t for t in dict.fromkeys(texts) if t not in ids_cache]
        if missing:
            ids = tokenizer(missing, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            ids_cache.update(zip(missing, ids))
        return torch.stack([ids_cache[t] for t in texts])

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = _cosine_lr(opt, steps, warmup=max(1, steps // 25))
    ema = EMA([unet, text_encoder], ema_decay)
    unet.train()
    text_encoder.train()
    for step in range(steps):
        idx = torch.randint(len(latent_mean), (batch_size,), generator=g)
        z0 = (latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=g)) * scaling
        texts = [("" if torch.rand((), generator=g) < uncond_p else c) for c in captions(idx)]
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(noise_sched.config.num_train_timesteps, (batch_size,), generator=g)
        zt = noise_sched.add_noise(z0, noise, t)
        c = text_encoder(token_ids(texts))[0]
        eps = unet(zt, t, c).sample
        loss = (weight[t] * (eps - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(step)
        if progress is not None:
            progress(loss=loss.item())
    return ema.shadow[0], ema.shadow[1]


def pipeline(vae, unet, text_encoder, tokenizer, scheduler=None):
    """The SD pipeline over these components; samples with DDIM built from the DDPM config."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = scheduler or make_scheduler()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler.from_config(scheduler.config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, prompts: list[str], n_per_prompt: int, *, steps: int, guidance: float, seed: int,
             batch_size: int = 64, progress=None) -> torch.Tensor:
    """Images [len(prompts) * n, 3, 32, 32] in [0, 1], prompt-major, seeded per batch."""
    texts = [p for p in prompts for _ in range(n_per_prompt)]
    out = []
    for k in range(0, len(texts), batch_size):
        g = torch.Generator().manual_seed(seed * 100003 + k)
        out.append(pipe(texts[k:k + batch_size], num_inference_steps=steps, guidance_scale=guidance,
                        generator=g, output_type="pt").images.float())
        if progress is not None:
            progress(len(out[-1]))
    return torch.cat(out)
