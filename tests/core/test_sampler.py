"""The evaluation sampler: UnlearnDiffAtk's convention reproduced step by step, and when it applies."""

import torch
from diffusers import LMSDiscreteScheduler

from relearnbench.api import Prompt
from relearnbench.config import make_config, preset_file_layer
from relearnbench.diffusion import decode_latents, encode_text_frozen, guide, predict, sample
from relearnbench.evaluate import SampleConfig
from relearnbench.testing import tiny_model


@torch.no_grad()
def _unlearndiffatk(model, text, seed, guidance, steps):
    """Diffusion-MU-Attack src/tasks/classifier_.py ``sampling``, written out: its own LMS scheduler,
    torch.manual_seed(seed) latents scaled by init_noise_sigma, uncond "" and cond through the UNet, CFG,
    decode by 1/scaling_factor, (x/2 + 0.5).clamp(0, 1)."""
    sched = LMSDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 num_train_timesteps=1000)
    c, h = model.unet.config.in_channels, model.unet.config.sample_size
    latents = torch.randn((1, c, h, h), generator=torch.manual_seed(seed))
    sched.set_timesteps(steps)
    latents = latents * sched.init_noise_sigma
    uncond, cond = encode_text_frozen(model, [""]), encode_text_frozen(model, [text])
    for t in sched.timesteps:
        x = sched.scale_model_input(latents, timestep=t)
        eps = guide(predict(model.unet, x, t.expand(1), uncond), predict(model.unet, x, t.expand(1), cond), guidance)
        latents = sched.step(eps, t, latents).prev_sample
    return decode_latents(model, latents)


def test_unlearndiffatk_sampler_reproduces_their_loop():
    model = tiny_model()
    prompts = [Prompt("a photo of a cat", seed=1234, guidance=6.0), Prompt("a dog", seed=7, guidance=None)]
    images = sample(model, prompts, 1, steps=6, guidance=7.5, seed=0, sampler="unlearndiffatk")
    for image, p, g in zip(images, prompts, (6.0, 7.5)):
        ref = _unlearndiffatk(model, p.text, p.seed, g, 6)[0]
        assert (image - ref).abs().max() < 1e-5
    # the DDIM sampler at our seeds draws other images
    ddim = sample(model, prompts, 1, steps=6, guidance=7.5, seed=0)
    assert (ddim - images).abs().max() > 0.01


def test_auto_picks_unlearndiffatk_for_a_prompt_csv_only():
    sd = make_config(SampleConfig, "sample", preset_file_layer(SampleConfig, "sd14"))
    assert (sd.sampler, sd.steps, sd.guidance, sd.images_per_prompt) == ("auto", 50, 7.5, 1)
    assert sd.sampler_for([Prompt("a", seed=1), Prompt("b", seed=2, guidance=7.0)]) == "unlearndiffatk"
    assert sd.sampler_for([Prompt("a", seed=1), Prompt("b")]) == "ddim"
    assert sd.sampler_for([Prompt("a lovely dog")]) == "ddim"
    toy = make_config(SampleConfig, "sample", preset_file_layer(SampleConfig, "toy"))
    assert toy.sampler_for([Prompt("a", seed=1)]) == "ddim"
